"""Save a randomly initialised CLIP checkpoint, loadable like a real one by :class:`CLIPEncoder`.

For tests, benchmarks and offline demos on machines that cannot download weights: the files,
shapes and compute cost are those of a real checkpoint of the chosen size, the scores are
meaningless. The tokenizer is character level (every byte symbol, alone and word-final).
"""

# Vision and text towers of the published ViT-B/32 and ViT-L/14 CLIP models; "tiny" for tests.
SIZES = {
    "tiny": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                    num_attention_heads=2, image_size=32, patch_size=8),
        text=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=2),
        projection_dim=16,
    ),
    "vit-b-32": dict(
        vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                    num_attention_heads=12, image_size=224, patch_size=32),
        text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                  num_attention_heads=8),
        projection_dim=512,
    ),
    "vit-l-14": dict(
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                    num_attention_heads=16, image_size=224, patch_size=14),
        text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                  num_attention_heads=12),
        projection_dim=768,
    ),
}


def save_random_clip(directory, size="tiny", seed=0):
    """Write config, safetensors weights, tokenizer and image processor to ``directory``.

    Args:
        directory: folder to create or fill.
        size: one of ``"tiny"``, ``"vit-b-32"``, ``"vit-l-14"``.
        seed: torch seed of the random weights.

    Returns:
        the directory, as given.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    spec = SIZES[size]
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    bos, eos = len(vocab), len(vocab) + 1
    vocab.update({"<|startoftext|>": bos, "<|endoftext|>": eos})
    config = CLIPConfig(
        text_config=dict(
            spec["text"], vocab_size=len(vocab), max_position_embeddings=77,
            bos_token_id=bos, eos_token_id=eos, pad_token_id=eos,
        ),
        vision_config=spec["vision"],
        projection_dim=spec["projection_dim"],
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(directory)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(directory)
    side = spec["vision"]["image_size"]
    CLIPImageProcessorPil(
        size={"shortest_edge": side}, crop_size={"height": side, "width": side}
    ).save_pretrained(directory)
    return directory
