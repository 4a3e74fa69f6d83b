"""CLIP image and text embeddings with Hugging Face transformers (spec step 1).

Images are decoded and preprocessed in worker processes while the model runs on the previous
batch, so memory holds only a few batches however many images there are. Outputs are
L2-normalised float32, so cosine similarity is a dot product.
"""

import collections
import logging
import os
import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..engine.defaults import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_CROP_MIN_SIZE,
    DEFAULT_CROP_PADDING,
    DEFAULT_MODEL,
)
from ..engine.params import ParamError
from ..interrupts import uninterrupted
from ..wording import count
from .crops import crop_region
from .devices import device_problem
from .images import DEFAULT_MAX_PIXELS, BadImageError, load_image
from .model_source import (  # ModelLoadError: raised here, importable from here
    ModelLoadError,
    as_recorded,
    hub_unreachable,
    is_local,
    load_advice,
    local_problem,
    model_fingerprint,
)
from .precision import autocast, native_bf16, precision_problem, quantized
from .tokens import text_list

logger = logging.getLogger(__name__)



class ImageFailure(NamedTuple):
    """An image that was skipped: its position in the input, its path and why."""

    index: int
    path: str
    reason: str


class ImageBatch(NamedTuple):
    """One batch of :meth:`CLIPEncoder.iter_image_batches`: embedded rows and skipped ones."""

    indices: np.ndarray  # positions in the input of the embedded images, shape (b,)
    embeddings: np.ndarray  # float32, shape (b, dim)
    failures: list  # of ImageFailure
    # with boxes: per embedded image, float32 (its boxes, dim), NaN rows for boxes left uncut
    crops: list | None = None
    # how much of the images still being cut is done, in images: an image of many boxes is
    # embedded over many batches, and progress moves with them
    partly: float = 0.0


class _Weights(NamedTuple):
    """What :meth:`CLIPEncoder.load` loads."""

    model: object
    processor: object
    image_dtype: object


class CLIPEncoder:
    """Embeds images and label strings into CLIP's joint space.

    Args:
        model: a Hugging Face hub id (default ``openai/clip-vit-large-patch14``) or a local
            directory saved with ``save_pretrained``. Weights load from safetensors only and no
            remote code runs.
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available). Half precision on CUDA.
        batch_size: images or texts per forward pass.
        num_workers: processes decoding images (default: CPU count minus one, at least one;
            0 decodes in this process).
        prompt: optional template applied to every label, e.g. ``"a photo of a {}"``; labels
            are otherwise embedded exactly as written.
        max_pixels: images with more pixels are refused as decompression bombs (None: no limit).
        jpeg_draft: decode JPEGs at the smallest 1/2, 1/4 or 1/8 scale that still covers the
            model's input size (see :func:`load_image`): about a third of the decoding and
            preprocessing time for photos, with pixels that differ slightly from the reference
            preprocessing. Worth it where decoding, not the model, sets the pace (a GPU, or
            ``num_workers=0`` on a CPU).
        precision: the image tower's arithmetic (:mod:`~vlsr_core.model.precision`): ``"full"``
            (float32; float16 on CUDA), ``"bf16"`` (bfloat16: autocast on a CPU, the weights on
            CUDA) or ``"int8"`` (dynamic quantisation of the linear layers; CPU only). Labels are
            embedded as at full precision whatever it is.
        load: False leaves the weights to load on first use (:meth:`load`): a stage with
            nothing to embed then never loads them.

    Example:
        >>> enc = CLIPEncoder("/models/clip-vit-large-patch14")
        >>> texts = enc.embed_texts(["helmet", "Helmets"])       # (2, 768)
        >>> images, failures = enc.embed_images(["a.jpg", "b.png"])
    """

    def __init__(
        self,
        model=DEFAULT_MODEL,
        device=None,
        batch_size=DEFAULT_BATCH_SIZE,
        num_workers=None,
        prompt=None,
        max_pixels=DEFAULT_MAX_PIXELS,
        jpeg_draft=False,
        precision="full",
        load=True,
    ):
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ParamError("batch_size", f"batch_size must be a whole number >= 1, got "
                                           f"{batch_size!r}")
        self.model_name = as_recorded(model)
        self.fingerprint = model_fingerprint(self.model_name)  # the same weights at another path
        try:
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        except RuntimeError:  # (not a device name: "bogus")
            raise ParamError("device", device_problem(device)) from None
        self.batch_size = int(batch_size)
        self.num_workers = max(1, (os.cpu_count() or 2) - 1) if num_workers is None else num_workers
        self.prompt = prompt
        self.max_pixels = max_pixels
        self.jpeg_draft = bool(jpeg_draft)
        self.precision = precision
        problem = precision_problem(precision, self.device)
        if problem:
            raise ParamError("precision", problem)
        problem = device and device_problem(device)  # (before the weights load)
        if problem:
            raise ParamError("device", problem)
        if precision == "bf16" and self.device.type == "cpu" and native_bf16() is False:
            logger.warning("this CPU has no bfloat16 instructions (AVX512-BF16 or AMX): bf16 is "
                           "emulated and likely slower than full precision")
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self._weights = None
        if load:
            self.load()

    def load(self):
        """Load the weights if they are not yet (:class:`ModelLoadError` if they cannot be);
        returns the encoder."""
        if self._weights is not None:
            return self
        model, processor = _load(self.model_name)
        model.to(self.device, dtype=self.dtype).eval()
        # the image tower only: labels keep their embeddings whatever the image precision
        image_dtype = self.dtype
        if self.precision == "bf16" and self.device.type == "cuda":
            image_dtype = torch.bfloat16
            model.vision_model.to(dtype=torch.bfloat16)
            model.visual_projection.to(dtype=torch.bfloat16)
        if self.precision == "int8":
            model.vision_model = quantized(model.vision_model)
            model.visual_projection = quantized(model.visual_projection)
        self._weights = _Weights(model, processor, image_dtype)
        return self

    @property
    def model(self):
        """The ``CLIPModel``."""
        return self.load()._weights.model

    @property
    def processor(self):
        """The ``CLIPProcessor``: tokenizer and image processor."""
        return self.load()._weights.processor

    @property
    def image_dtype(self):
        """The image tower's dtype (``precision`` on CUDA)."""
        return self.load()._weights.image_dtype

    @property
    def dim(self):
        """The embeddings' length."""
        return int(self.model.config.projection_dim)

    @property
    def max_text_tokens(self):
        """The longest label the text tower reads, in tokens."""
        return int(self.model.config.text_config.max_position_embeddings)

    @property
    def tokenizer(self):
        """The text tokenizer (what :func:`~vlsr_core.model.tokens.unknown_words` reads)."""
        return self.processor.tokenizer

    def embed_texts(self, texts, progress=None):
        """Embed label strings, each distinct token sequence once: labels the tokenizer reads
        alike (``Drill`` / ``drill``: CLIP's lowercases) get one vector, bitwise, so that they
        score exactly alike (a batch's padding would otherwise move the last bits).

        Args:
            texts: n strings (any iterable).
            progress: optional callable taking the fraction done.

        Returns:
            float32 ndarray of shape (n, dim), rows aligned with ``texts``.
        """
        texts = text_list(texts)
        keys, n_cut = self._token_ids(texts)
        if n_cut:
            logger.warning("%s longer than %d tokens, truncated", count(n_cut, "label"),
                           self.max_text_tokens)
        distinct = list(dict.fromkeys(keys))
        out = np.empty((len(distinct), self.dim), dtype=np.float32)
        for start in range(0, len(distinct), self.batch_size):
            batch = [list(ids) for ids in distinct[start : start + self.batch_size]]
            enc = self.tokenizer.pad({"input_ids": batch}, padding=True, return_tensors="pt")
            with torch.inference_mode():
                feats = self.model.get_text_features(**enc.to(self.device))
            out[start : start + len(batch)] = _normalized(feats)
            if progress is not None:
                progress(min(start + self.batch_size, len(distinct)) / len(distinct))
        if not distinct and progress is not None:
            progress(1.0)
        row = {k: i for i, k in enumerate(distinct)}
        return out[[row[k] for k in keys]]

    def text_keys(self, texts):
        """The token ids each label is embedded from (the prompt applied, cut to the model's
        length): labels with equal keys get one vector, also when embedded in different calls
        (:func:`~vlsr_core.fo.stages.compute_embeddings` reuses the vector).

        Returns:
            list of tuples of ints, aligned with ``texts``.
        """
        return self._token_ids([str(t) for t in texts])[0]

    def _token_ids(self, texts):
        """:meth:`text_keys` of ``texts``, and how many distinct ones were cut."""
        distinct = list(dict.fromkeys(texts))
        prompts = [self.prompt.format(t) if self.prompt else t for t in distinct]
        ids = self.tokenizer(prompts)["input_ids"] if prompts else []
        long = [i for i, x in enumerate(ids) if len(x) > self.max_text_tokens]
        if long:
            cut = self.tokenizer([prompts[i] for i in long], truncation=True,
                                 max_length=self.max_text_tokens)["input_ids"]
            for i, x in zip(long, cut):
                ids[i] = x
        key = {t: tuple(x) for t, x in zip(distinct, ids)}
        return [key[t] for t in texts], len(long)

    def iter_image_batches(self, paths, boxes=None, crop=(DEFAULT_CROP_PADDING, DEFAULT_CROP_MIN_SIZE)):
        """Yield :class:`ImageBatch` es over ``paths``, decoding ahead in worker processes.

        Unreadable files (missing, empty, truncated, not an image, decompression bomb) are
        reported in ``failures`` and skipped; the run goes on.

        Args:
            paths: image files.
            boxes: optional, per image, its boxes (FiftyOne ``[x, y, w, h]``, relative): each is
                cut from the decoded image (:func:`~vlsr_core.model.crops.crop_region`) and
                embedded too. An image is decoded once for every ``batch_size`` of its boxes,
                and no more than ``batch_size`` images and crops are preprocessed at once, so
                that memory stays bounded however many boxes an image has. An image is yielded
                with the batch that embeds its last crop; the batches before say how much of
                it is done (:attr:`ImageBatch.partly`).
            crop: ``(padding, min_size)`` of the crops.
        """
        ip = self.processor.image_processor
        draft = _input_side(ip) if self.jpeg_draft and boxes is None else None
        parts = _parts([0] * len(paths) if boxes is None else [len(b) for b in boxes],
                       self.batch_size)
        workers = min(self.num_workers, len(paths))  # (no idle processes: one per image at most)
        n_parts = collections.Counter(i for i, *_ in parts)
        held, failed = {}, None  # the image whose parts are still coming: its rows so far
        # the workers fork here, with Ctrl-C held: a Ctrl-C that reached one as it started
        # printed its traceback after the CLI's one-line message (the main process stops them);
        # more workers than CPUs is the caller's choice (I/O-bound reads), not torch's warning
        with uninterrupted(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", "This DataLoader will create")
            batches = iter(DataLoader(
                _ImageFiles(list(paths), ip, self.max_pixels, draft, boxes, crop, parts),
                batch_sampler=_batches(parts, self.batch_size),
                num_workers=workers,
                collate_fn=_collate,
                prefetch_factor=2 if workers else None,
                worker_init_fn=_quiet_when_left,
            ))
        for parts, pixels in batches:
            # a part that fails fails its whole image (once), and its image's other parts
            # are left, wherever they are
            bad = {failed, *(d.index for d in parts if d.failure is not None)}
            failures = []
            for d in parts:
                if d.failure is not None and d.index != failed:
                    failures.append(d.failure)
                    failed = d.index
            rows = iter(self.embed_pixels(pixels) if pixels is not None else ())
            cut = iter(self._embed_crops([d.crops for d in parts if d.index not in bad])
                       if boxes is not None else ())
            indices, embeddings, crops = [], [], []
            for d in parts:
                row = next(rows) if d.first and d.failure is None else None  # (stacked)
                if d.index in bad:
                    held.pop(d.index, None)
                    continue
                if d.first:
                    held[d.index] = (row, [])
                if boxes is not None:
                    held[d.index][1].append(next(cut))
                if d.last:
                    embedding, crop_rows = held.pop(d.index)
                    indices.append(d.index)
                    embeddings.append(embedding)
                    crops.append(np.concatenate(crop_rows) if boxes is not None else None)
            yield ImageBatch(np.asarray(indices, dtype=np.int64),
                             np.stack(embeddings) if embeddings else
                             np.empty((0, self.dim), dtype=np.float32),
                             failures, None if boxes is None else crops,
                             sum(len(done) / n_parts[i] for i, (_, done) in held.items()))

    def _embed_crops(self, crops):
        """Per part, float32 (boxes, dim): its crops' embeddings, NaN for boxes left uncut."""
        cut = [pixels for pixels, _ in crops if pixels is not None]
        rows = (np.concatenate([self.embed_pixels(p) for p in torch.cat(cut).split(self.batch_size)])
                if cut else np.empty((0, self.dim), np.float32))
        out, start = [], 0
        for _, was_cut in crops:
            emb = np.full((len(was_cut), self.dim), np.nan, dtype=np.float32)
            emb[was_cut] = rows[start : start + int(was_cut.sum())]
            start += int(was_cut.sum())
            out.append(emb)
        return out

    def embed_pixels(self, pixels):
        """float32 ndarray (b, dim) of unit rows: the image tower, at the encoder's precision, on
        a batch of preprocessed images (a tensor (b, 3, side, side) from its image processor)."""
        with torch.inference_mode(), autocast(self.precision, self.device):
            feats = self.model.get_image_features(
                pixel_values=pixels.to(self.device, dtype=self.image_dtype))
        return _normalized(feats)

    def embed_images(self, paths, progress=None):
        """Embed image files.

        Args:
            paths: list of n file paths.
            progress: optional callable taking the fraction done.

        Returns:
            (embeddings, failures): float32 ndarray of shape (n, dim) whose rows for skipped
            images are NaN, and the list of :class:`ImageFailure`.
        """
        if isinstance(paths, (str, os.PathLike)):
            raise TypeError(f"paths must be a list of paths, not one (give [{str(paths)!r}])")
        paths = list(paths)
        out = np.full((len(paths), self.dim), np.nan, dtype=np.float32)
        failures, done = [], 0
        for batch in self.iter_image_batches(paths):
            out[batch.indices] = batch.embeddings
            failures.extend(batch.failures)
            done += len(batch.indices) + len(batch.failures)
            if progress is not None:
                progress(done / len(paths))
        return out, failures


def _load(model):
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    local = is_local(model)
    problem = local_problem(model) if local else None
    if problem:
        raise ModelLoadError(problem)

    def load(**kwargs):
        # the PIL image processor, whether torchvision is installed or not: the same pixels
        # everywhere (transformers picks torchvision's when it can, and warns when it cannot)
        processor = CLIPProcessor(
            image_processor=CLIPImageProcessorPil.from_pretrained(model, **kwargs),
            tokenizer=AutoTokenizer.from_pretrained(model, **kwargs))
        clip, info = CLIPModel.from_pretrained(model, use_safetensors=True,
                                               output_loading_info=True, **kwargs)
        # weights the file lacks are random ones: another model's checkpoint loaded as a CLIP
        random = [k for k in info.get("missing_keys", ()) if k in dict(clip.named_parameters())]
        if random:
            raise ModelLoadError(load_advice(model, (
                f"its weights lack {len(random)} of CLIP's tensors (e.g. {random[0]}), which "
                "would be random: not a CLIP checkpoint, or a damaged one")))
        return clip, processor

    try:
        if local:
            return load()
        try:
            return load(local_files_only=True)  # already in the Hugging Face cache
        except OSError:
            pass
        unreachable = hub_unreachable()
        if unreachable:
            raise OSError(f"the Hugging Face Hub cannot be reached ({unreachable})")
        return load()
    except ModelLoadError:
        raise
    except Exception as e:  # transformers raises OSError, ValueError, HTTP errors...
        raise ModelLoadError(load_advice(model, e)) from e


def _normalized(features):
    if not torch.is_tensor(features):  # transformers 5 returns a model output
        features = features.pooler_output
    return torch.nn.functional.normalize(features.float(), dim=-1).cpu().numpy()


class _Part(NamedTuple):
    """What a worker hands over for one part of one image: the image itself with its first
    boxes, or more of its boxes."""

    index: int  # the image's position in the input
    first: bool  # the part that embeds the image (pixels)
    last: bool  # the image's last part
    pixels: object  # the image preprocessed (first part), else None
    crops: tuple | None  # with boxes: (preprocessed crops or None, bool ndarray: which were cut)
    failure: ImageFailure | None


class _ImageFiles:
    """Decodes and preprocesses one part of one image per item (:func:`_parts`): the image and
    its first boxes' crops, or more of its crops; failures turn into a reason."""

    def __init__(self, paths, image_processor, max_pixels, draft, boxes, crop, parts):
        self.paths = paths
        self.image_processor = image_processor
        self.max_pixels = max_pixels
        self.draft = draft
        self.boxes = boxes
        self.crop = crop
        self.parts = parts

    def __len__(self):
        return len(self.parts)

    def __getitem__(self, j):
        i, lo, hi, first = self.parts[j]
        last = hi == (0 if self.boxes is None else len(self.boxes[i]))
        path = str(self.paths[i])
        try:
            image = load_image(path, max_pixels=self.max_pixels, draft=self.draft)
            pixels = self._pixels([image])[0] if first else None
            crops = None if self.boxes is None else self._crops(image, self.boxes[i][lo:hi])
        except BadImageError as e:
            return _Part(i, first, last, None, None, ImageFailure(i, path, e.reason))
        except Exception as e:  # a preprocessing failure skips this image, not the run
            return _Part(i, first, last, None, None, ImageFailure(
                i, path, f"preprocessing failed ({type(e).__name__}: {e})"))
        return _Part(i, first, last, pixels, crops, None)

    def _pixels(self, images):
        return self.image_processor(images=images, return_tensors="pt")["pixel_values"]

    def _crops(self, image, boxes):
        """(preprocessed crops or None, bool ndarray: which boxes were cut)."""
        regions = [crop_region(box, *image.size, *self.crop) for box in boxes]
        was_cut = np.array([r is not None for r in regions], dtype=bool)
        # one crop at a time, each preprocessed alone as in a list: the same pixels, and one
        # full-resolution crop in memory (31 large boxes of an 8000 x 6000 photo took 2 GB)
        cut = [self._pixels([image.crop(r)]) for r in regions if r is not None]
        return (torch.cat(cut) if cut else None), was_cut


def _quiet_when_left(worker_id=None):
    """In a decoding worker: no traceback when the main process stops reading mid-transfer
    (Ctrl-C). A worker hands each batch over through a thread that serves its file
    descriptors, and that thread prints the connection the main process dropped (``Connection
    reset by peer``) after the run has said it was interrupted. Other errors print as ever."""
    import sys

    default = sys.excepthook

    def hook(kind, error, trace):
        if not issubclass(kind, (ConnectionResetError, BrokenPipeError, EOFError)):
            default(kind, error, trace)

    sys.excepthook = hook


def _parts(n_boxes, batch_size):
    """``(image, first box, end box, is the image's first part)`` per part: an image with its
    first ``batch_size - 1`` boxes, then ``batch_size`` of its boxes a part, so that no part
    preprocesses more than ``batch_size`` images and crops (an image of 2,000 boxes took some
    3 GB at once)."""
    parts = []
    for i, n in enumerate(n_boxes):
        ends = [min(n, batch_size - 1)]
        while ends[-1] < n:
            ends.append(min(n, ends[-1] + batch_size))
        parts += [(i, lo, hi, k == 0)
                  for k, (lo, hi) in enumerate(zip([0] + ends[:-1], ends))]
    return parts


def _batches(parts, batch_size):
    """Index lists of consecutive parts holding at most ``batch_size`` images and crops."""
    batches, batch, size = [], [], 0
    for j, (_, lo, hi, first) in enumerate(parts):
        n = first + hi - lo
        if batch and size + n > batch_size:
            batches.append(batch)
            batch, size = [], 0
        batch.append(j)
        size += n
    return batches + [batch] if batch else batches


def _input_side(image_processor):
    """The longest side the image processor resizes or crops to (CLIP: 224 or 336)."""
    size, crop = image_processor.size or {}, image_processor.crop_size or {}
    sides = [size.get("shortest_edge"), size.get("height"), size.get("width"),
             crop.get("height"), crop.get("width")]
    return max(side or 0 for side in sides)


def _collate(parts):
    """The parts without their pixels, and those pixels stacked (None if no part has them): a
    worker hands each image over once."""
    pixels = [p.pixels for p in parts if p.pixels is not None]
    return [p._replace(pixels=None) for p in parts], torch.stack(pixels) if pixels else None
