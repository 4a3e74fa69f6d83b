"""vlsr_core.model.encoder: CLIP plumbing on a random tiny checkpoint loaded through the real code path.

The weights are random, so the scores mean nothing: these tests check shapes, dtypes,
normalisation, alignment with the input, batching/worker invariance, failure reporting and the
errors raised when a checkpoint cannot be loaded -- never semantic quality.
"""

import io
import json
import math
import os
import pathlib
import random
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

from vlsr_core.model import encoder as encoder_module
from vlsr_core.model import model_source
from vlsr_core.model.crops import crop_region
from vlsr_core.model.encoder import CLIPEncoder, ImageBatch, ImageFailure, ModelLoadError
from vlsr_core.model.images import load_image
from vlsr_core.model.random_clip import save_random_clip

ATOL = 1e-5


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random tiny CLIP checkpoint saved once for the whole module."""
    return save_random_clip(tmp_path_factory.mktemp("tiny-clip"), size="tiny")


@pytest.fixture(scope="module")
def enc(model_dir):
    """The tiny checkpoint loaded through the real path; tests change settings via monkeypatch."""
    return CLIPEncoder(str(model_dir), device="cpu", batch_size=4, num_workers=0)


def _noise(mode, size, seed):
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
    if mode == "P":
        return _noise("RGB", size, seed).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    raise ValueError(mode)


# (name, mode, size): various formats, modes and aspect ratios, each with distinct content.
GOOD_SPECS = [
    ("rgb.jpg", "RGB", (40, 30)),
    ("rgba.png", "RGBA", (20, 50)),
    ("grey.png", "L", (64, 64)),
    ("palette.png", "P", (33, 17)),
    ("grey.jpg", "L", (50, 70)),
    ("wide.png", "RGB", (120, 24)),
]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    for seed, (name, mode, size) in enumerate(GOOD_SPECS):
        im = _noise(mode, size, seed)
        im.save(d / name)
        with Image.open(d / name) as check:  # premise: the file really has that mode
            assert check.mode == mode
    # Broken files
    (d / "empty.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("<!DOCTYPE html><html>404 not found</html>")
    buf = io.BytesIO()
    _noise("RGB", (96, 96), 99).save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return d


@pytest.fixture(scope="module")
def good_paths(image_dir):
    return [str(image_dir / name) for name, _, _ in GOOD_SPECS]


@pytest.fixture(scope="module")
def bad_files(image_dir):
    """name -> (path, expected reason substring)."""
    return {
        "missing": (str(image_dir / "does-not-exist.png"), "file not found"),
        "empty": (str(image_dir / "empty.jpg"), "empty file"),
        "text": (str(image_dir / "text.jpg"), "not an image"),
        "truncated": (str(image_dir / "truncated.jpg"), "truncated"),
    }


@pytest.fixture(scope="module")
def reference_images(enc, good_paths):
    """Embeddings of the good images, one at a time, in this process."""
    out, failures = enc.embed_images(good_paths)
    assert failures == []
    return out


def _assert_normalised(rows):
    assert np.all(np.isfinite(rows))
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=ATOL)


def _assert_distinct(rows):
    """Premise of alignment tests: no two rows are the same, so a swap would be noticed."""
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            assert not np.allclose(rows[i], rows[j], atol=1e-3), (i, j)


class _ModelSpy:
    """Wraps enc.model.get_text_features, recording how many rows each call embeds."""

    def __init__(self, enc, monkeypatch):
        self.rows = []
        real = enc.model.get_text_features

        def spy(*args, **kwargs):
            self.rows.append(int(kwargs["input_ids"].shape[0]))
            return real(*args, **kwargs)

        monkeypatch.setattr(enc.model, "get_text_features", spy)


class _TokenizerSpy:
    """Stands in for enc.processor.tokenizer, recording the strings it is given."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def __call__(self, texts, **kwargs):
        self.calls.append(list(texts))
        return self.tokenizer(texts, **kwargs)

    def __getattr__(self, name):  # pad, ...
        return getattr(self.tokenizer, name)

    @property
    def seen(self):
        return [t for call in self.calls for t in call]


# ----------------------------------------------------------------------------- loading


def test_loads_local_directory(enc, model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["projection_dim"] == 16
    assert enc.dim == config["projection_dim"]
    assert enc.model_name == str(model_dir)
    assert enc.device == torch.device("cpu")
    assert enc.dtype == torch.float32
    params = list(enc.model.parameters())
    assert {p.device.type for p in params} == {"cpu"}
    assert {p.dtype for p in params} == {torch.float32}
    assert not enc.model.training
    assert enc.max_text_tokens == 77


def test_package_exposes_encoder_lazily():
    import vlsr_core
    import vlsr_core.model.encoder

    assert vlsr_core.CLIPEncoder is vlsr_core.model.encoder.CLIPEncoder
    assert "CLIPEncoder" in vlsr_core.__all__
    with pytest.raises(AttributeError):
        vlsr_core.NoSuchThing  # noqa: B018

    # Lazy: importing the package alone loads neither the encoder module nor torch.
    code = textwrap.dedent(
        """
        import sys
        import vlsr_core
        assert "vlsr_core.model.encoder" not in sys.modules
        assert "torch" not in sys.modules
        cls = vlsr_core.CLIPEncoder
        import vlsr_core.model.encoder
        assert cls is vlsr_core.model.encoder.CLIPEncoder
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ----------------------------------------------------------------------------- embed_texts


def test_texts_shape_dtype_normalised(enc):
    labels = ["helmet", "safety vest", "forklift", "pallet", "x", "gloves"]
    out = enc.embed_texts(labels)
    assert out.shape == (len(labels), enc.dim)
    assert out.dtype == np.float32
    _assert_normalised(out)
    _assert_distinct(out)


def test_texts_duplicates_embedded_once_and_aligned(enc, monkeypatch):
    labels = ["bolt", "nut", "bolt", "washer", "nut", "bolt", "screw"]
    singles = {t: enc.embed_texts([t])[0] for t in set(labels)}

    spy = _ModelSpy(enc, monkeypatch)
    tok = _TokenizerSpy(enc.processor.tokenizer)
    monkeypatch.setattr(enc.processor, "tokenizer", tok)
    out = enc.embed_texts(labels)

    assert sum(spy.rows) == 4  # each distinct string sent to the model once
    assert sorted(tok.seen) == sorted(set(labels))
    assert out.shape == (len(labels), enc.dim)
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[5])
    np.testing.assert_array_equal(out[1], out[4])
    for row, label in zip(out, labels):  # rows follow the input order
        np.testing.assert_allclose(row, singles[label], atol=ATOL)
    _assert_distinct(np.stack([singles[t] for t in ["bolt", "nut", "washer", "screw"]]))


def test_a_string_alone_or_texts_that_are_not_strings_are_refused(enc, image_dir):
    """Audit (the encoder as a library): embed_texts("helmet") gave a row per character,
    None and NaN were embedded as "None" and "nan", and embed_images("a.png") tried five
    files 'a', '.', 'p', ..."""
    from vlsr_core.model.tokens import unknown_words

    with pytest.raises(TypeError, match=r"not one string \(give \['helmet'\]\)"):
        enc.embed_texts("helmet")
    with pytest.raises(TypeError, match="texts must be strings: item 1 is None"):
        enc.embed_texts(["a", None])
    with pytest.raises(TypeError, match="labels must be a list of strings"):
        unknown_words(enc.tokenizer, "balloon")
    with pytest.raises(TypeError, match="paths must be a list of paths, not one"):
        enc.embed_images(str(image_dir / "a.png"))


def test_texts_empty_list(enc, monkeypatch):
    spy = _ModelSpy(enc, monkeypatch)
    calls = []
    out = enc.embed_texts([], progress=calls.append)  # no division by zero
    assert out.shape == (0, enc.dim)
    assert out.dtype == np.float32
    assert spy.rows == []
    assert all(c == 1.0 for c in calls)


def test_texts_passed_to_tokenizer_as_written_and_those_it_reads_alike_embedded_once(
        enc, monkeypatch):
    """The encoder itself folds nothing: every spelling reaches the tokenizer verbatim. Those
    CLIP's tokenizer reads alike (it lowercases and trims) are one token sequence, embedded
    once: bitwise one vector, which padding in a batch would otherwise move in the last bits."""
    labels = ["Helmet", "helmet", "HELMET", " helmet", "helmet ", "vest"]
    spy = _ModelSpy(enc, monkeypatch)
    tok = _TokenizerSpy(enc.processor.tokenizer)
    monkeypatch.setattr(enc.processor, "tokenizer", tok)
    out = enc.embed_texts(labels)
    assert tok.seen == labels
    assert sum(spy.rows) == 2
    assert out.shape == (len(labels), enc.dim)
    for row in out[1:5]:
        np.testing.assert_array_equal(row, out[0])
    assert enc.text_keys(labels)[:5] == [enc.text_keys(["helmet"])[0]] * 5


def test_casing_matters_with_a_case_sensitive_tokenizer(model_dir):
    """"Helmet" and "helmet" get different rows unless the tokenizer itself folds case.

    CLIP's own tokenizer lowercases (real checkpoints and save_random_clip alike; transformers
    rebuilds that normaliser whatever tokenizer.json says), so with it both rows are identical;
    with the lowercasing removed they must differ, showing the encoder adds no folding.
    """
    from tokenizers import Regex, normalizers

    enc = CLIPEncoder(str(model_dir), device="cpu", batch_size=4, num_workers=0)
    folded = enc.embed_texts(["Helmet", "helmet"])
    np.testing.assert_allclose(folded[0], folded[1], atol=ATOL)  # CLIP's tokenizer lowercases

    enc.processor.tokenizer.backend_tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " ")]
    )
    out = enc.embed_texts(["Helmet", "helmet"])
    _assert_normalised(out)
    assert not np.allclose(out[0], out[1], atol=1e-3)
    np.testing.assert_allclose(out[1], folded[1], atol=ATOL)  # lowercase one unchanged


def test_prompt_template_is_applied(enc, monkeypatch):
    plain = enc.embed_texts(["helmet", "a photo of a helmet"])
    monkeypatch.setattr(enc, "prompt", "a photo of a {}")
    tok = _TokenizerSpy(enc.processor.tokenizer)
    monkeypatch.setattr(enc.processor, "tokenizer", tok)
    prompted = enc.embed_texts(["helmet", "helmet"])
    assert tok.seen == ["a photo of a helmet"]
    assert prompted.shape == (2, enc.dim)
    _assert_normalised(prompted)
    assert not np.allclose(prompted[0], plain[0], atol=1e-3)  # prompt changes the embedding
    np.testing.assert_allclose(prompted[0], plain[1], atol=ATOL)  # ... into the filled template


def test_long_label_truncated_with_warning(enc, monkeypatch, caplog):
    # The tiny tokenizer is character level: a one-word label of n characters is n + 2 tokens.
    long_a = "x" * 100  # 102 tokens
    long_b = "x" * 90 + "y" * 10  # same first 75 characters -> same 77 tokens once truncated
    labels = ["helmet", long_a, "vest", long_b]
    short_alone = enc.embed_texts(["helmet", "vest"])

    monkeypatch.setattr(enc, "batch_size", 8)  # long and short labels in one batch
    caplog.clear()
    with caplog.at_level("WARNING", logger="vlsr_core.model.encoder"):
        out = enc.embed_texts(labels)
    assert out.shape == (4, enc.dim)
    _assert_normalised(out)
    np.testing.assert_allclose(out[1], out[3], atol=ATOL)  # differ only after token 77
    np.testing.assert_allclose(out[[0, 2]], short_alone, atol=ATOL)  # neighbours unaffected
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "truncated" in message and "77" in message and message.startswith("2 ")


def test_truncation_boundary_at_77_tokens(enc, caplog):
    with caplog.at_level("WARNING", logger="vlsr_core.model.encoder"):
        caplog.clear()
        exact = enc.embed_texts(["z" * 75])  # 77 tokens: fits
        assert not [r for r in caplog.records if "truncated" in r.getMessage()]
        over = enc.embed_texts(["z" * 76])  # 78 tokens: truncated
        assert [r for r in caplog.records if "truncated" in r.getMessage()]
    _assert_normalised(np.concatenate([exact, over]))


def test_text_batch_size_does_not_change_results(enc, monkeypatch):
    labels = ["a", "helmet", "high visibility safety vest", "forklift truck", "b", "pallet",
              "steel toe boots", "c", "hard hat", "ear protection", "x" * 40]
    results = {}
    for bs in (1, 7, 64):
        monkeypatch.setattr(enc, "batch_size", bs)
        results[bs] = enc.embed_texts(labels)
    np.testing.assert_allclose(results[1], results[7], atol=ATOL)
    np.testing.assert_allclose(results[1], results[64], atol=ATOL)
    _assert_distinct(results[1])


def test_texts_progress(enc, monkeypatch):
    monkeypatch.setattr(enc, "batch_size", 2)
    calls = []
    enc.embed_texts(["a", "b", "c", "a", "d", "e"], progress=calls.append)  # 5 distinct
    assert calls == pytest.approx([0.4, 0.8, 1.0])
    assert calls[-1] == 1.0
    assert all(b > a for a, b in zip(calls, calls[1:]))


# ----------------------------------------------------------------------------- embed_images


def test_images_shape_dtype_normalised(enc, reference_images, good_paths):
    assert reference_images.shape == (len(good_paths), enc.dim)
    assert reference_images.dtype == np.float32
    _assert_normalised(reference_images)
    _assert_distinct(reference_images)


def test_images_same_with_workers_and_batch_sizes(enc, monkeypatch, good_paths, reference_images):
    for batch_size, workers in [(1, 0), (3, 0), (3, 2), (1, 2)]:
        monkeypatch.setattr(enc, "batch_size", batch_size)
        monkeypatch.setattr(enc, "num_workers", workers)
        out, failures = enc.embed_images(good_paths)
        assert failures == []
        assert out.shape == reference_images.shape
        np.testing.assert_allclose(out, reference_images, atol=ATOL, err_msg=f"{batch_size=} {workers=}")


def test_no_more_decoding_processes_than_images_and_no_torch_warning(enc, monkeypatch,
                                                                     good_paths):
    """Audit: --num-workers 40 on one image forked 40 processes, and torch printed its
    warning (with its file path) for more workers than CPUs."""
    import warnings

    made, real = [], encoder_module.DataLoader
    monkeypatch.setattr(encoder_module, "DataLoader", lambda *a, **kw: made.append(
        kw["num_workers"]) or real(*a, **kw))
    monkeypatch.setattr(enc, "num_workers", (os.cpu_count() or 1) + 2)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        out, failures = enc.embed_images(good_paths[:1])
        enc.embed_images(good_paths)
    assert failures == [] and out.shape[0] == 1
    assert made == [1, min(len(good_paths), enc.num_workers)]
    assert not [w for w in seen if "DataLoader" in str(w.message)], [str(w.message) for w in seen]


def test_jpeg_draft_decodes_jpegs_small_and_leaves_other_files_alone(
    enc, monkeypatch, tmp_path, good_paths, reference_images
):
    """The tiny model takes 32-pixel images: a 400 x 300 JPEG is then decoded at 1/8 scale."""
    _noise("RGB", (400, 300), 7).save(tmp_path / "big.jpg", quality=95)
    big = str(tmp_path / "big.jpg")
    full, _ = enc.embed_images([big])
    decoded, real_load = [], encoder_module.load_image

    def recording_load(path, **kwargs):
        image = real_load(path, **kwargs)
        decoded.append(image.size)
        return image

    monkeypatch.setattr(encoder_module, "load_image", recording_load)
    monkeypatch.setattr(enc, "jpeg_draft", True)
    out, failures = enc.embed_images([big, *good_paths])
    assert failures == [] and decoded[0] == (50, 38)
    _assert_normalised(out)
    assert not np.allclose(out[0], full[0], atol=ATOL)  # other pixels, other embedding
    pngs = [i for i, p in enumerate(good_paths) if p.endswith(".png")]
    np.testing.assert_allclose(out[1:][pngs], reference_images[pngs], atol=ATOL)


def test_images_order_preserved(enc, monkeypatch, good_paths, reference_images):
    perm = list(range(len(good_paths)))
    random.Random(3).shuffle(perm)
    assert perm != sorted(perm)
    shuffled = [good_paths[i] for i in perm]
    monkeypatch.setattr(enc, "batch_size", 4)
    monkeypatch.setattr(enc, "num_workers", 2)
    out, failures = enc.embed_images(shuffled)
    assert failures == []
    np.testing.assert_allclose(out, reference_images[perm], atol=ATOL)


def test_images_accept_pathlib_and_iterables(enc, image_dir, good_paths, reference_images):
    from pathlib import Path

    out, failures = enc.embed_images(Path(p) for p in good_paths[:3])
    assert failures == []
    np.testing.assert_allclose(out, reference_images[:3], atol=ATOL)


@pytest.mark.parametrize("workers", [0, 2])
def test_image_failures_reported_and_rows_nan(
    enc, monkeypatch, good_paths, bad_files, reference_images, workers
):
    monkeypatch.setattr(enc, "batch_size", 3)
    monkeypatch.setattr(enc, "num_workers", workers)
    # interleave: good0, missing, good1, empty, good2, text, truncated, good3
    layout = [("good", 0), ("bad", "missing"), ("good", 1), ("bad", "empty"), ("good", 2),
              ("bad", "text"), ("bad", "truncated"), ("good", 3)]
    paths = [good_paths[k] if kind == "good" else bad_files[k][0] for kind, k in layout]

    out, failures = enc.embed_images(paths)

    assert out.shape == (len(paths), enc.dim)
    assert out.dtype == np.float32
    assert all(isinstance(f, ImageFailure) for f in failures)
    failures = sorted(failures)
    assert [f.index for f in failures] == [1, 3, 5, 6]
    for f in failures:
        kind, key = layout[f.index]
        assert kind == "bad"
        expected_path, reason = bad_files[key]
        assert f.path == expected_path
        assert reason in f.reason, (key, f.reason)
        assert np.all(np.isnan(out[f.index]))
    good_rows = [i for i, (kind, _) in enumerate(layout) if kind == "good"]
    _assert_normalised(out[good_rows])
    np.testing.assert_allclose(out[good_rows], reference_images[[0, 1, 2, 3]], atol=ATOL)


def test_all_bad_images_give_all_nan(enc, monkeypatch, bad_files):
    monkeypatch.setattr(enc, "batch_size", 2)
    paths = [p for p, _ in bad_files.values()]
    out, failures = enc.embed_images(paths)
    assert out.shape == (len(paths), enc.dim)
    assert np.all(np.isnan(out))
    assert sorted(f.index for f in failures) == list(range(len(paths)))


@pytest.mark.parametrize("workers", [0, 2])
def test_images_empty_list(enc, monkeypatch, workers):
    monkeypatch.setattr(enc, "num_workers", workers)
    calls = []
    out, failures = enc.embed_images([], progress=calls.append)  # no division by zero
    assert out.shape == (0, enc.dim)
    assert out.dtype == np.float32
    assert failures == []
    assert all(c == 1.0 for c in calls)


def test_max_pixels_refuses_large_images(enc, monkeypatch, good_paths):
    # 40x30 = 1200, 20x50 = 1000, 64x64 = 4096 pixels
    monkeypatch.setattr(enc, "max_pixels", 1500)
    out, failures = enc.embed_images(good_paths[:3])
    assert [f.index for f in failures] == [2]
    assert "refused" in failures[0].reason
    assert np.all(np.isnan(out[2]))
    _assert_normalised(out[:2])


def test_images_progress(enc, monkeypatch, good_paths, bad_files):
    monkeypatch.setattr(enc, "batch_size", 4)
    paths = good_paths + [p for p, _ in bad_files.values()][:3]  # 9 paths, 3 bad
    calls = []
    enc.embed_images(paths, progress=calls.append)
    assert calls == pytest.approx([4 / 9, 8 / 9, 1.0])
    assert calls[-1] == 1.0
    assert all(b > a for a, b in zip(calls, calls[1:]))


@pytest.mark.parametrize("workers", [0, 2])
def test_iter_image_batches_cover_every_input_once(
    enc, monkeypatch, good_paths, bad_files, reference_images, workers
):
    monkeypatch.setattr(enc, "batch_size", 3)
    monkeypatch.setattr(enc, "num_workers", workers)
    bad = [p for p, _ in bad_files.values()]
    paths = [good_paths[0], bad[0], good_paths[1], good_paths[2], bad[1], bad[2],
             good_paths[3], good_paths[4], bad[3], good_paths[5]]
    good_of = {i: good_paths.index(p) for i, p in enumerate(paths) if p in good_paths}

    batches = list(enc.iter_image_batches(paths))
    assert len(batches) == math.ceil(len(paths) / 3)
    seen = []
    for batch in batches:
        assert isinstance(batch, ImageBatch)
        assert batch.indices.dtype == np.int64
        assert batch.embeddings.dtype == np.float32
        assert batch.embeddings.shape == (len(batch.indices), enc.dim)
        assert len(batch.indices) + len(batch.failures) <= 3
        for i, row in zip(batch.indices, batch.embeddings):
            np.testing.assert_allclose(row, reference_images[good_of[int(i)]], atol=ATOL)
        for f in batch.failures:
            assert isinstance(f, ImageFailure)
            assert f.path == paths[f.index]
            assert f.index not in good_of
        seen += [int(i) for i in batch.indices] + [f.index for f in batch.failures]
    assert sorted(seen) == list(range(len(paths)))  # every input exactly once
    assert len(seen) == len(set(seen))


# ----------------------------------------------------------------------------- ModelLoadError


@pytest.mark.parametrize("relative", [False, True])
def test_missing_local_directory(tmp_path, monkeypatch, relative):
    monkeypatch.chdir(tmp_path)
    path = "./no-such-clip-dir" if relative else str(tmp_path / "no-such-clip-dir")
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        CLIPEncoder(path, device="cpu", num_workers=0)
    assert path in str(info.value)


def _damaged(model_dir, tmp_path, change):
    """A copy of the CLIP folder with ``change(folder)`` made to it."""
    d = tmp_path / "damaged-clip"
    shutil.copytree(model_dir, d)
    change(d)
    return str(d)


def _drop_text_tower(d):
    from safetensors.torch import load_file, save_file

    state = load_file(str(d / "model.safetensors"))
    save_file({k: v for k, v in state.items() if not k.startswith("text_model.")},
              str(d / "model.safetensors"))


def _as_vit(d):
    config = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**config, "model_type": "vit"}))


@pytest.mark.parametrize("change, message", [
    # transformers built an empty tokenizer: every label read as its length alone
    (lambda d: (d / "tokenizer.json").unlink(), "holds no tokenizer files"),
    (lambda d: (d / "preprocessor_config.json").unlink(), "holds no preprocessor_config.json "
                                                          "or processor_config.json"),
    # another model's checkpoint, or one lacking tensors, loaded as a CLIP of random weights
    (_as_vit, "holds a vit model, not a CLIP model"),
    (_drop_text_tower, "its weights lack .* of CLIP's tensors .*which would be random"),
])
def test_a_folder_transformers_would_load_with_random_parts_is_refused(model_dir, tmp_path,
                                                                        change, message):
    """Each loaded without a word, and a run then wrote meaningless scores and clusters."""
    path = _damaged(model_dir, tmp_path, change)
    with pytest.raises(ModelLoadError, match=message):
        CLIPEncoder(path, device="cpu", num_workers=0)
    if "weights lack" not in message:  # (found by looking at the files: the forms say it)
        assert re.search(message, model_source.model_problem(path))


def test_a_folder_given_by_a_relative_path_is_recorded_by_its_full_path(model_dir, tmp_path,
                                                                          monkeypatch):
    """Recorded as typed, the next run from another folder (or the App's server) read 'm/clip'
    as a hub id, and failed to reach the hub."""
    shutil.copytree(model_dir, tmp_path / "m" / "clip")
    monkeypatch.chdir(tmp_path)
    assert CLIPEncoder("m/clip", device="cpu", num_workers=0).model_name == str(
        tmp_path / "m" / "clip")
    assert model_source.as_recorded("openai/clip-vit-large-patch14") == (
        "openai/clip-vit-large-patch14")  # (no such folder here: a hub id)


def test_a_clip_saved_with_its_processor_by_transformers_5_loads(model_dir, tmp_path):
    """transformers 5 saves a CLIPProcessor as processor_config.json (the image processor's
    settings inside), with no preprocessor_config.json: such a fine-tuned CLIP was refused."""
    from transformers import CLIPModel, CLIPProcessor

    d = tmp_path / "fine-tuned"
    CLIPModel.from_pretrained(model_dir).save_pretrained(d)
    CLIPProcessor.from_pretrained(model_dir).save_pretrained(d)
    assert not (d / "preprocessor_config.json").exists()
    assert model_source.model_problem(str(d)) is None
    assert CLIPEncoder(str(d), device="cpu", num_workers=0).dim > 0


def test_pickled_bin_weights_refused(model_dir, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import CLIPModel

    d = tmp_path / "bin-clip"
    shutil.copytree(model_dir, d)
    state = load_file(str(d / "model.safetensors"))
    torch.save(state, d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    assert not any(name.endswith(".safetensors") for name in os.listdir(d))

    loads = []
    real_load = torch.load

    def spy_load(*args, **kwargs):
        loads.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy_load)
    with pytest.raises(ModelLoadError) as info:
        CLIPEncoder(str(d), device="cpu", num_workers=0)
    message = str(info.value)
    assert "safetensors" in message
    assert str(d) in message
    assert "pickled .bin weights are refused" in message  # refused for that reason, not another
    assert loads == []  # nothing was unpickled

    # Premise: the directory is otherwise a valid checkpoint that pickle loading would accept.
    CLIPModel.from_pretrained(str(d), use_safetensors=False)
    assert loads


def test_hub_id_offline_fails_fast_with_advice(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    connections = []

    def no_network(*args, **kwargs):
        connections.append(args)
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket, "create_connection", no_network)

    start = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        CLIPEncoder("vlsr-test/no-such-model", device="cpu", num_workers=0)
    elapsed = time.monotonic() - start

    assert elapsed < 30
    message = str(info.value)
    assert "vlsr-test/no-such-model" in message
    assert "give its full path as the model" in message and "local" in message
    # the App's form shows the message as it is: a command in it, not Markdown
    assert "(hf download vlsr-test/no-such-model --local-dir " in message and "`" not in message
    assert "HF_HUB_OFFLINE" in message
    assert connections == []  # the offline flag is honoured without probing the network


def test_hub_unreachable_reports_offline_flag(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert model_source.hub_unreachable() == (
        "offline mode is set: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def refused(*args, **kwargs):
        raise ConnectionRefusedError("refused by test")

    monkeypatch.setattr(socket, "create_connection", refused)
    reason = model_source.hub_unreachable(timeout=1)
    assert reason is not None and "refused by test" in reason


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_changes_only_the_image_tower(model_dir, enc, good_paths, precision):
    reduced = CLIPEncoder(str(model_dir), device="cpu", batch_size=4, num_workers=0,
                          precision=precision)
    labels = ["helmet", "safety vest", "forklift"]
    assert np.array_equal(reduced.embed_texts(labels), enc.embed_texts(labels))  # labels: float32
    full, _ = enc.embed_images(good_paths)
    approx, failures = reduced.embed_images(good_paths)
    assert not failures and approx.shape == full.shape and approx.dtype == np.float32
    assert np.allclose(np.linalg.norm(approx, axis=1), 1, atol=1e-5)
    assert not np.array_equal(approx, full)  # the reduced arithmetic did run
    assert (approx * full).sum(1).min() > 0.9


def test_int8_on_a_gpu_is_refused_before_anything_loads(model_dir):
    from vlsr_core.engine.params import ParamError

    with pytest.raises(ParamError, match="int8 runs on the CPU only"):
        CLIPEncoder(str(model_dir), device="cuda", precision="int8")


def test_boxes_are_cut_from_the_decoded_image_and_embedded_with_it(
        enc, monkeypatch, tmp_path, good_paths, bad_files, reference_images):
    paths = [good_paths[0], bad_files["empty"][0], good_paths[5]]
    boxes = [[[0, 0, 1, 1], [0.25, 0.2, 0.5, 0.6], [0.5, 0.5, 0.01, 0.01]], [[0, 0, 1, 1]],
             [[0.0, 0.0, 0.5, 1.0]]]
    crop = (0.1, 4)

    def cut_by_hand(path, box):  # the crop saved losslessly and embedded as an image of its own
        image = load_image(path)
        out = tmp_path / f"crop-{len(list(tmp_path.iterdir()))}.png"
        image.crop(crop_region(box, *image.size, *crop)).save(out)
        return enc.embed_images([str(out)])[0][0]

    expected = {0: [reference_images[0], cut_by_hand(paths[0], boxes[0][1]), None],
                2: [cut_by_hand(paths[2], boxes[2][0])]}
    for batch_size, workers in [(2, 0), (4, 2)]:
        monkeypatch.setattr(enc, "batch_size", batch_size)
        monkeypatch.setattr(enc, "num_workers", workers)
        got, failed = {}, []
        for batch in enc.iter_image_batches(paths, boxes, crop):
            got.update(zip(batch.indices.tolist(), batch.crops))
            failed += [f.index for f in batch.failures]
        assert failed == [1] and sorted(got) == [0, 2]
        for i, rows in expected.items():
            assert got[i].shape == (len(rows), enc.dim) and got[i].dtype == np.float32
            for row, want in zip(got[i], rows):
                if want is None:  # too small to cut
                    assert np.isnan(row).all()
                else:
                    np.testing.assert_allclose(row, want, atol=ATOL, err_msg=f"{batch_size=}")


def test_an_image_of_many_boxes_is_cut_a_batch_at_a_time(
        enc, monkeypatch, tmp_path, good_paths, bad_files, reference_images):
    """An image's boxes were all cut and preprocessed at once: some 0.6 MB a box, 3 GB for an
    image of 2,000 boxes. Now no more than batch_size crops are preprocessed at once, and the
    image and each crop embed as before, its parts spread over batches."""
    from vlsr_core.model import encoder as encoder_module

    rng = np.random.default_rng(0)
    many = [[float(x), float(y), 0.3, 0.3] for x, y in rng.uniform(0, 0.7, (11, 2))]
    paths = [good_paths[0], bad_files["truncated"][0], good_paths[5], good_paths[1]]
    boxes = [many, many, [], many[:3]]
    crop = (0.1, 4)

    def one_by_one(path, box_list):
        image = load_image(path)
        out = []
        for box in box_list:
            f = tmp_path / f"crop-{len(list(tmp_path.iterdir()))}.png"
            image.crop(crop_region(box, *image.size, *crop)).save(f)
            out.append(enc.embed_images([str(f)])[0][0])
        return np.array(out)

    expected = {0: one_by_one(paths[0], many), 2: np.empty((0, enc.dim)),
                3: one_by_one(paths[3], many[:3])}
    at_once = []
    preprocess = encoder_module._ImageFiles._pixels
    monkeypatch.setattr(encoder_module._ImageFiles, "_pixels",
                        lambda self, images: at_once.append(len(images)) or preprocess(self, images))
    for batch_size in (1, 2, 4):
        monkeypatch.setattr(enc, "batch_size", batch_size)
        at_once.clear()
        got, embeddings, failed = {}, {}, []
        for batch in enc.iter_image_batches(paths, boxes, crop):
            got.update(zip(batch.indices.tolist(), batch.crops))
            embeddings.update(zip(batch.indices.tolist(), batch.embeddings))
            failed += [f.index for f in batch.failures]
        assert max(at_once) <= batch_size
        assert failed == [1] and sorted(got) == [0, 2, 3]  # the bad image is reported once
        for i, want in expected.items():
            assert got[i].shape == want.shape
            np.testing.assert_allclose(got[i], want, atol=ATOL, err_msg=f"{batch_size=}")
        np.testing.assert_allclose(embeddings[0], reference_images[0], atol=ATOL)


def test_the_batches_of_an_image_of_many_boxes_say_how_much_of_it_is_done(
        enc, monkeypatch, good_paths):
    """Progress counted images: it stood still while one image of thousands of boxes was cut."""
    many = [[0.1, 0.1, 0.5, 0.5]] * 9
    monkeypatch.setattr(enc, "batch_size", 2)  # parts of 1, 2, 2, 2, 2 boxes; then one image
    batches = list(enc.iter_image_batches([good_paths[0], good_paths[1]], [many, many[:1]]))
    partly = [b.partly for b in batches]
    assert [b.indices.tolist() for b in batches] == [[], [], [], [], [0], [1]]
    assert partly == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.0, 0.0])


def test_an_image_failing_in_a_later_part_is_reported_once_and_its_crops_go_nowhere(
        enc, monkeypatch, good_paths):
    """Each part decodes its image again: a file replaced or cut between two decodes fails a
    later part. Its crops were then taken by the next image of the batch."""
    from vlsr_core.model import encoder as encoder_module
    from vlsr_core.model.images import BadImageError

    rng = np.random.default_rng(1)
    many = [[float(x), float(y), 0.3, 0.3] for x, y in rng.uniform(0, 0.7, (8, 2))]
    paths, boxes = [good_paths[0], good_paths[5], good_paths[1]], [many, many[:2], many[:3]]
    monkeypatch.setattr(enc, "batch_size", 4)  # parts of 3, 4 and 1 boxes: the last one in a
    # batch with the next image
    alone = {i: c for b in enc.iter_image_batches(paths[1:], boxes[1:]) for i, c in
             zip(b.indices.tolist(), b.crops)}
    decodes = []
    load = encoder_module.load_image

    def changing(path, **kwargs):  # the first image's file is cut after its first decode
        decodes.append(path)
        if path == paths[0] and decodes.count(path) == 2:
            raise BadImageError(path, "truncated file")
        return load(path, **kwargs)

    monkeypatch.setattr(encoder_module, "load_image", changing)
    got, failed = {}, []
    for batch in enc.iter_image_batches(paths, boxes):
        got.update(zip(batch.indices.tolist(), batch.crops))
        failed += [(f.index, f.reason) for f in batch.failures]
    assert failed == [(0, "truncated file")] and sorted(got) == [1, 2]
    for i in (1, 2):
        np.testing.assert_allclose(got[i], alone[i - 1], atol=ATOL)


def test_the_forms_model_check_expands_home_and_looks_at_the_hub_once_a_minute(
        model_dir, tmp_path, monkeypatch):
    """A path typed as ~/... was taken for a hub id (an error naming the hub), and each change
    of the form waited 5 s on the network again."""
    model_dir = pathlib.Path(model_dir)
    monkeypatch.setenv("HOME", str(model_dir.parent))
    assert model_source.model_problem(f"~/{model_dir.name}") is None
    assert "directory '" in model_source.model_problem("~/no-such-folder")  # a path, not a hub id

    looks = []
    monkeypatch.setattr(model_source, "_last_hub_check", (float("-inf"), None))
    monkeypatch.setattr(model_source, "hub_unreachable", lambda: looks.append(1) or "no network")
    for _ in range(3):
        assert "cannot be reached (no network)" in model_source.model_problem("vlsr-test/absent")
    assert len(looks) == 1
    # a relative folder that is not there reads as a hub id: the advice says how to give a path;
    # one that cannot be a hub id is said so (the hub client raised from deep inside)
    assert model_source.label_model_problem("models/minilm/v2").startswith(
        "'models/minilm/v2' is neither a folder here nor a Hugging Face hub id")
    assert "give its full path, or start it with ./" in model_source.model_problem("relative/clip")
    assert model_source.model_problem("label/model", "label model").startswith(
        "Could not load the label model 'label/model': the Hugging Face Hub cannot be reached")
    monkeypatch.setattr(model_source.time, "monotonic", lambda: float("inf"))
    model_source.model_problem("vlsr-test/absent")
    assert len(looks) == 2


def test_a_decoding_worker_keeps_quiet_about_the_transfer_ctrl_c_cut(tmp_path):
    """After Ctrl-C the CLI says it was interrupted; a worker's file-descriptor server then
    printed 'ConnectionResetError: Connection reset by peer' as a traceback after it."""
    import subprocess
    import sys

    code = ("import sys; from vlsr_core.model.encoder import _quiet_when_left\n"
            "_quiet_when_left(0)\n"
            "for error in (ConnectionResetError(104, 'Connection reset by peer'), "
            "ValueError('a real failure')):\n"
            "    try:\n        raise error\n"
            "    except Exception:\n        sys.excepthook(*sys.exc_info())  # as the server does\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert "ConnectionResetError" not in done.stderr
    assert "ValueError: a real failure" in done.stderr


def test_decoding_workers_start_with_ctrl_c_held(enc, monkeypatch, good_paths, tmp_path):
    """Left alone before: a Ctrl-C that reached a worker as it started (the terminal sends it
    to every process) printed a KeyboardInterrupt traceback after the CLI's one-line message.
    A worker starts with it held; the main process stops the workers."""
    import signal

    from vlsr_core.model import encoder

    quiet = encoder._quiet_when_left

    def started(worker_id):  # (in the worker: what a Ctrl-C would do there)
        handler = signal.getsignal(signal.SIGINT)
        (tmp_path / f"worker{worker_id}").write_text(
            "raises" if handler is signal.default_int_handler else "held")
        quiet(worker_id)

    monkeypatch.setattr(encoder, "_quiet_when_left", started)
    monkeypatch.setattr(enc, "num_workers", 2)
    out, failures = enc.embed_images(good_paths[:4])
    assert failures == [] and len(out) == 4
    assert [(tmp_path / f"worker{i}").read_text() for i in range(2)] == ["held", "held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (as it was here)


def test_the_fingerprint_reads_every_byte_and_knows_the_sampled_one_of_earlier_runs(tmp_path):
    """A copy with a fine-tuned projection head (one tensor changed) had the fingerprint of the
    original, read from 16 blocks of 64 KiB: a run mixed the embeddings of the two models."""
    from types import SimpleNamespace

    from vlsr_core.fo.embed import _same_model

    folders = []
    for name in ("clip", "tuned"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text('{"model_type": "clip"}')
        data = bytearray(np.random.default_rng(0).bytes(8 << 20))
        data[:8] = (16).to_bytes(8, "little")  # (its header's length, as safetensors writes)
        if name == "tuned":
            data[(8 << 20) // 16 + (1 << 17)] ^= 1  # a byte between two sampled blocks
        (d / "model.safetensors").write_bytes(bytes(data))
        folders.append(str(d))
    fingerprint = model_source.model_fingerprint
    assert fingerprint(folders[0]) != fingerprint(folders[1])
    assert fingerprint(folders[0], sampled=True) == fingerprint(folders[1], sampled=True)
    # a run recorded with the sampled one keeps its embeddings with the same weights
    encoder = SimpleNamespace(model_name=folders[0], fingerprint=fingerprint(folders[0]))
    earlier = SimpleNamespace(model_fingerprint=fingerprint(folders[0], sampled=True),
                              model=folders[0])
    assert _same_model(earlier, encoder)
    assert not _same_model(SimpleNamespace(model_fingerprint=fingerprint(folders[1]),
                                           model=folders[1]), encoder)


@pytest.mark.parametrize("kwargs, message", [
    (dict(device="bogus"), "device"), (dict(device="mps"), "device"),
    (dict(batch_size=0), "batch_size must be a whole number >= 1, got 0"),
    (dict(batch_size="32"), "batch_size must be a whole number >= 1, got '32'"),
])
def test_the_public_encoder_names_a_bad_device_or_batch_size(model_dir, kwargs, message):
    """The stages check them; CLIPEncoder itself raised torch's AssertionError after loading the
    weights (device="cuda" here), or took batch_size=0 and looped on nothing."""
    from vlsr_core.engine.params import ParamError

    with pytest.raises(ParamError, match=message):
        CLIPEncoder(model_dir, num_workers=0, **kwargs)
