"""The run parameters: declared once, checked with clear messages, and offered identically by the
CLI and the App forms."""

import argparse
import math
import subprocess
import sys

import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionContext
from fiftyone.operators.registry import OperatorRegistry

from vlsr_core.cli import _parser, _path
from vlsr_core.engine.params import PARAM_CLASSES, EmbedParams, MergeParams, ParamError, ScoreParams
from vlsr_core.fo.runs import VLSRRunConfig

FORMS = {"compute_embeddings": EmbedParams, "score_labels": ScoreParams,
         "cluster_and_merge": MergeParams}


@pytest.mark.parametrize("cls, values, words", [
    (MergeParams, dict(eps=0), "eps must be > 0"),
    (MergeParams, dict(eps=-0.1), "eps must be > 0"),
    (MergeParams, dict(eps=math.nan), "eps must be a finite number"),
    (MergeParams, dict(eps=3.0), "eps must be <= 2"),
    (MergeParams, dict(min_samples=0), "min_samples must be >= 1"),
    (MergeParams, dict(min_samples=1.5), "min_samples must be int"),
    (MergeParams, dict(max_merge_distance=-0.5), "max_merge_distance must be >= 0"),
    (MergeParams, dict(size_by="images"), "size_by must be one of samples, labels"),
    (MergeParams, dict(linkage="single"), "linkage must be one of centroid, representative"),
    (ScoreParams, dict(top_k=0), "top_k must be >= 1"),
    (ScoreParams, dict(top_k=2 ** 63), "top_k must be <= 9223372036854775807 .the largest "
                                       "integer MongoDB stores., got 9223372036854775808"),
    (EmbedParams, dict(batch_size=10 ** 20), "batch_size must be <= 9223372036854775807"),
    (ScoreParams, dict(replace_margin=math.nan), "replace_margin must be a finite number"),
    (ScoreParams, dict(replace_margin=None), "replace_margin must be given"),
    (ScoreParams, dict(replace_margin=5), "replace_margin must be < 2, got 5.0"),
    (ScoreParams, dict(low_quantile=1.0), "low_quantile must be < 1"),
    (EmbedParams, dict(batch_size=0), "batch_size must be >= 1"),
    (EmbedParams, dict(num_workers=-1), "num_workers must be >= 0"),
    (EmbedParams, dict(num_workers=100000), "num_workers must be <= 64"),  # (audit: 1,200
    # processes of 425 MB forked before any image was read)
    (EmbedParams, dict(prompt="a photo of a"), "exactly one {}"),
    (EmbedParams, dict(prompt="a photo of a {x}"), "exactly one {}"),
    (EmbedParams, dict(prompt="{} and {}"), "exactly one {}"),
    (EmbedParams, dict(model="  "), "model must name"),
    (EmbedParams, dict(device="bogus"), "not a torch device name"),
    (EmbedParams, dict(jpeg_draft="yes"), "jpeg_draft must be bool"),
])
def test_bad_values_are_refused_with_the_parameter_named(cls, values, words):
    with pytest.raises(ParamError, match=words) as e:
        cls(**values)
    assert e.value.name == next(iter(values))


def test_a_device_this_machine_lacks_is_a_parameter_and_refused_where_the_model_loads(
        tiny_clip):
    """Audit: the parameters refused a GPU the App's machine lacks, so no delegated job could
    ask for the GPU of the worker that runs it."""
    import torch

    from vlsr_core.model.encoder import CLIPEncoder

    missing = f"cuda:{torch.cuda.device_count()}" if torch.cuda.is_available() else "cuda"
    assert EmbedParams(device=missing).device == missing
    with pytest.raises(ParamError, match="CUDA GPU") as e:
        CLIPEncoder(tiny_clip, device=missing, load=False)
    assert e.value.name == "device"
    with pytest.raises(ParamError, match="vlsr runs on cpu, cuda or mps"):
        EmbedParams(device="meta")


def test_good_values_numpy_numbers_and_dict_round_trip():
    p = MergeParams(eps=np.float32(0.25), min_samples=np.int64(3), max_merge_distance=1)
    assert (type(p.eps), type(p.min_samples), type(p.max_merge_distance)) == (float, int, float)
    assert MergeParams.from_dict(p.to_dict()) == p
    assert EmbedParams(prompt="a photo of a {}").prompt == "a photo of a {}"
    assert "device" not in EmbedParams().to_dict()  # an execution detail, not recorded
    with pytest.raises(ParamError, match="unknown parameter"):
        MergeParams.resolve(None, epsilon=0.1)


def test_the_run_config_stores_and_returns_every_recorded_parameter():
    config = VLSRRunConfig(label_field="gt")
    for cls in PARAM_CLASSES:
        assert config.params(cls) == cls()
    config.record(MergeParams(eps=0.2, size_by="labels"))
    again = VLSRRunConfig.from_dict(config.serialize())
    assert again.params(MergeParams) == MergeParams(eps=0.2, size_by="labels")
    # a config of an earlier version: replace_margin None meant 0, low_quantile absent
    old = VLSRRunConfig.from_dict({**config.serialize(), "replace_margin": None})
    del old.low_quantile
    assert old.params(ScoreParams) == ScoreParams()


def test_every_cli_flag_is_a_parameter_and_every_parameter_a_flag():
    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    run = sub.choices["run"]
    actions = {a.dest: a for a in run._actions}
    offered = set(actions) - {"help", "dataset", "view", "label_field", "key", "recompute", "func"}
    assert offered == {s.name for cls in PARAM_CLASSES for s in cls.specs()}
    for cls in PARAM_CLASSES:
        for spec in cls.specs():
            action = actions[spec.name]
            # left out, a flag is not set: the run's last value applies (a new run: the default,
            # which the help names)
            assert action.default is argparse.SUPPRESS
            assert (tuple(action.choices) if action.choices else None) == spec.choices
            assert spec.help in action.help
            if spec.type is bool:  # on and off: a value the run last used can be turned off
                assert action.option_strings == [spec.flag, "--no-" + spec.flag[2:]]
                continue
            assert action.option_strings == [spec.flag]
            if spec.default is not None:
                assert f"(default: {spec.default})" in action.help
            kind = _path if spec.path else spec.type
            if spec.optional:  # '' unsets it; a value is read as the parameter's type
                assert action.type("") is None and action.type("7") == kind("7")
            else:  # a path's '~' expanded
                assert action.type is kind


def test_a_bad_parameter_on_the_cli_is_one_line_and_exit_2_before_any_work(dataset):
    dataset.persistent = True
    for flags, words in ((["--eps", "0"], "eps must be > 0"),
                         (["--prompt", "a photo"], "exactly one {}"),
                         (["--device", "bogus"], "not a torch device"),
                         (["--device", "cuda:7"], "--device 'cuda:7': this machine has "),
                         (["--eps", "nan"], "finite"),
                         (["--top-k", "100000000000000000000"], "top-k must be <= ")):
        done = subprocess.run([sys.executable, "-m", "vlsr_core.cli", "run", "--dataset", dataset.name,
                               "--label-field", "gt", *flags], capture_output=True, text=True,
                              timeout=300)
        lines = [l for l in done.stderr.splitlines() if l.strip()]
        assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr
    assert dataset.list_runs() == []


@pytest.fixture
def labelled(dataset, tmp_path):
    import fiftyone as fo

    dataset.add_sample(fo.Sample(filepath=str(tmp_path / "a.png"), gt=fo.Classifications(
        classifications=[fo.Classification(label="bolt")]), boxes=fo.Detections(
        detections=[fo.Detection(label="bolt", bounding_box=[0.1, 0.1, 0.5, 0.5])])))
    return dataset


def form(name, dataset, **params):
    ctx = ExecutionContext(request_params=dict(dataset_name=dataset.name, params=params))
    return OperatorRegistry().get_operator("@vlsr/vlsr/" + name).resolve_input(ctx).to_json()


def _register_run(dataset):
    """A run of embedded images (the scoring and clustering forms refuse one without)."""
    import fiftyone as fo

    config = VLSRRunConfig(label_field="gt", created_fields=["vlsr_embedding"], created_views=[])
    dataset.register_run("vlsr", config)
    dataset.add_sample_field("vlsr_embedding", fo.VectorField)
    dataset.set_values("vlsr_embedding", [[1.0, 0.0]] * len(dataset))


@pytest.mark.parametrize("name", sorted(FORMS))
def test_every_form_offers_exactly_its_parameters_with_their_defaults_and_choices(labelled, name):
    cls = FORMS[name]
    if name != "compute_embeddings":
        _register_run(labelled)
        props = form(name, labelled)["type"]["properties"]
    else:  # the crop settings are offered for a Detections field, once crops are chosen
        props = form(name, labelled, label_field="boxes", crops=True)["type"]["properties"]
    params = {p: v for p, v in props.items() if p not in (
        "view_target", "label_field", "key", "recompute", "num_shards")}
    assert set(params) == set(cls.names())
    for spec in cls.specs():
        prop = params[spec.name]
        assert prop["default"] == spec.default, spec.name
        assert prop["view"]["description"] == spec.help
        if spec.choices:
            assert tuple(prop["type"]["values"]) == spec.choices
        if spec.low is not None:
            assert prop["type"]["min"] == spec.low


def test_a_form_marks_a_bad_value_with_the_engines_message(labelled):
    _register_run(labelled)
    props = form("cluster_and_merge", labelled, eps=0, min_samples=2)["type"]["properties"]
    assert props["eps"]["invalid"] and props["eps"]["error_message"] == (
        "DBSCAN radius (eps) must be > 0, got 0.0")
    assert not props["min_samples"]["invalid"]
    props = form("compute_embeddings", labelled, prompt="a photo")["type"]["properties"]
    assert props["prompt"]["error_message"].startswith("Prompt template must hold exactly one {}")
    props = form("score_labels", labelled, top_k=0)["type"]["properties"]
    assert props["top_k"]["error_message"] == "Suggestions per sample must be >= 1, got 0"


def test_forms_default_to_the_values_the_run_last_used(labelled):
    _register_run(labelled)
    config = labelled.get_run_info("vlsr").config
    config.record(MergeParams(eps=0.12, linkage="representative"))
    config.record(ScoreParams(top_k=7))
    config.record(EmbedParams(model="/models/clip", batch_size=8))
    labelled.update_run_config("vlsr", config)
    merge = form("cluster_and_merge", labelled)["type"]["properties"]
    assert (merge["eps"]["default"], merge["linkage"]["default"]) == (0.12, "representative")
    assert form("score_labels", labelled)["type"]["properties"]["top_k"]["default"] == 7
    embed = form("compute_embeddings", labelled, key="vlsr", label_field="gt")["type"]["properties"]
    assert (embed["model"]["default"], embed["batch_size"]["default"]) == ("/models/clip", 8)
