"""What a tokenizer knows of a label's words (vlsr_core.model.tokens), the evidence that names a
cluster when nothing in the vocabulary decides."""

import numpy as np
import pytest

from vlsr_core.model.tokens import unknown_words

from fake_clip import wordpiece


def test_the_share_of_a_labels_words_the_tokenizer_splits():
    tokenizer = wordpiece(["balloon", "hot", "air"])
    labels = ["balloon", "baloon", "Hot-air BALLOON", "hot air baloon", "ballon d'or", "🙂", ""]
    assert unknown_words(tokenizer, labels).tolist() == pytest.approx(
        [0.0, 1.0, 0.0, 1 / 3, 1.0, 0.0, 0.0])  # case and punctuation as the lexical rules read them
    assert unknown_words(tokenizer, []).shape == (0,)
    # a word it cannot spell at all is one unknown token, not a word it knows
    assert unknown_words(tokenizer, ["balloon\u0c80", "hot air"]).tolist() == [1.0, 0.0]


def test_clips_tokenizer_is_read_the_same_way(tiny_clip):
    from vlsr_core.model.encoder import CLIPEncoder

    # the tiny CLIP's vocabulary holds single symbols only: a word of two letters is two pieces
    words = unknown_words(CLIPEncoder(tiny_clip, device="cpu").tokenizer, ["a", "ab", "a ab"])
    assert words.dtype == np.float32 and words.tolist() == [0.0, 1.0, 0.5]
