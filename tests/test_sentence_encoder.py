"""The label-side sentence encoder, loaded through its real code from a tiny random BERT."""

import os
import re

import numpy as np
import pytest

from vlsr_core.model.encoder import ModelLoadError
from vlsr_core.model.sentence_encoder import SentenceEncoder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(path)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    return path


def test_embeds_each_string_once_as_unit_rows_aligned_with_the_input(tiny_bert):
    encoder = SentenceEncoder(str(tiny_bert), device="cpu", batch_size=2)
    texts = ["helmet", "bolt", "helmet", "a much longer label " * 10, "x"]
    emb = encoder.embed_texts(texts)
    assert emb.shape == (5, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert np.array_equal(emb[0], emb[2])
    # padding does not change a string's embedding: the same alone as in a batch
    np.testing.assert_allclose(encoder.embed_texts(["x"])[0], emb[4], atol=1e-5)
    assert encoder.fingerprint


def test_a_missing_model_directory_says_so(tmp_path):
    with pytest.raises(ModelLoadError):
        SentenceEncoder(str(tmp_path / "nowhere"))


def test_a_clip_folder_or_an_unreachable_hub_id_is_refused_in_one_line(tiny_clip, monkeypatch):
    with pytest.raises(ModelLoadError, match="is a clip model, not a text encoder .*leave the "
                                             "label model empty"):
        SentenceEncoder(tiny_clip)
    from vlsr_core.model import model_source

    monkeypatch.setattr(model_source, "_last_hub_check", (float("-inf"), None))
    monkeypatch.setattr(model_source, "hub_unreachable", lambda: "no network")
    with pytest.raises(ModelLoadError, match="Could not load the label model 'nosuch/model': the "
                                             "Hugging Face Hub cannot be reached"):
        SentenceEncoder("nosuch/model")


def test_its_tokenizer_loads_without_the_weights(tiny_bert, tmp_path):
    from vlsr_core.model.sentence_encoder import load_tokenizer

    assert load_tokenizer(str(tiny_bert))(["a", "ab"], add_special_tokens=False)["input_ids"] == [
        [5], [1]]  # "ab": unknown (no "##b")
    assert load_tokenizer(str(tmp_path / "nowhere")) is None


def test_a_run_recorded_before_the_word_counts_gets_them_from_the_tokenizer_alone(
        main, tiny_bert, monkeypatch):
    from fake_clip import FakeEncoder
    from vlsr_core.fo.stages import compute_embeddings
    from vlsr_core.model import sentence_encoder

    dataset, images = main
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), label_model=str(tiny_bert),
                       images=False)
    results = dataset.load_run_results("vlsr", cache=False)
    counted = results.unknown_words.tolist()
    assert len(counted) == len(results.labels) and set(counted) == {1.0}  # letters only: split
    results.unknown_words = np.zeros(0, np.float32)
    dataset.save_run_results("vlsr", results, overwrite=True)

    def no_weights(*args, **kwargs):
        raise AssertionError("the model was loaded to count words")

    monkeypatch.setattr(sentence_encoder, "SentenceEncoder", no_weights)
    compute_embeddings(dataset, "gt", encoder=FakeEncoder(images), label_model=str(tiny_bert),
                       images=False)
    assert dataset.load_run_results("vlsr", cache=False).unknown_words.tolist() == counted


def test_an_image_model_with_a_tokenizer_beside_it_is_refused_when_loaded(tiny_bert, tmp_path):
    """It loaded, and the run failed after embedding every image with AttributeError."""
    import shutil

    from transformers import ViTConfig, ViTModel

    path = tmp_path / "vit"
    ViTModel(ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, image_size=32, patch_size=16)).save_pretrained(path)
    for name in os.listdir(tiny_bert):
        if name.startswith(("tokenizer", "vocab", "special")):
            shutil.copy(os.path.join(tiny_bert, name), path)
    with pytest.raises(ModelLoadError, match="is a vit model that does not embed text"):
        SentenceEncoder(str(path))


def test_a_label_model_folder_given_by_a_relative_path_is_recorded_by_its_full_path(
        tiny_bert, monkeypatch):
    monkeypatch.chdir(os.path.dirname(tiny_bert))
    encoder = SentenceEncoder(os.path.basename(tiny_bert))
    assert encoder.model_name == str(tiny_bert)


def test_a_folder_named_minilm_in_another_case_is_a_folder(tiny_bert, tmp_path, monkeypatch):
    """'MiniLM' is refused with "did you mean minilm" only when no such folder is here."""
    import shutil

    from vlsr_core.model.model_source import label_model_problem

    monkeypatch.chdir(tmp_path)
    assert "did you mean minilm" in label_model_problem("MiniLM")
    shutil.copytree(tiny_bert, tmp_path / "MiniLM")
    assert label_model_problem("MiniLM") is None


@pytest.mark.parametrize("name", ["minilmm", "mini-lm", "all-MiniLM-L6-v2", "MINILM "])
def test_a_misspelt_minilm_is_asked_about_not_sent_to_the_hub(name):
    """Audit: ``label_model="minilmm"`` (from Python too) was advised to be downloaded from the
    Hugging Face Hub under that name."""
    with pytest.raises(ModelLoadError, match=re.escape(f"{name!r} is not a label model here: "
                                                       "did you mean minilm")):
        SentenceEncoder(name)
