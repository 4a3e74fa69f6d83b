"""The label-side sentence encoder, loaded through its real code from a tiny random BERT."""

import numpy as np
import pytest

from vlsr_core.model.encoder import ModelLoadError
from vlsr_core.model.sentence_encoder import SentenceEncoder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz")
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
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
