"""Decode any image file into an RGB PIL image, or say precisely why it cannot be used.

Label cleaning runs over whole datasets scraped from anywhere, so a file may be missing, empty,
an HTML error page, cut short, a decompression bomb, 16-bit, CMYK, transparent, animated or
rotated by EXIF. ``load_image`` turns every usable file into the same thing (8-bit RGB, as
displayed) and every unusable one into a ``BadImageError`` whose ``reason`` can go in a report;
no raw Pillow exception escapes.

Truncated data is detected by Pillow's default ``ImageFile.LOAD_TRUNCATED_IMAGES = False``,
which this module never changes.
"""

import os
import re
import stat
import threading
import warnings
from contextlib import contextmanager

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # Pillow's default limit (89,478,485), read at import

# EXIF orientation -> the transpose that shows the image right way up, as ImageOps.exif_transpose.
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_WHITE = (255, 255, 255, 255)
_PILLOW_GUARD_LOCK = threading.Lock()


class BadImageError(Exception):
    """An image file that cannot be used; `reason` is a short human-readable cause."""

    def __init__(self, path, reason):
        # Both in args, so the error survives pickling between worker processes.
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self):
        return f"{self.path}: {self.reason}"


def load_image(path, max_pixels=DEFAULT_MAX_PIXELS, draft=None):
    """The image at `path` fully decoded as 8-bit RGB, turned as EXIF says; else BadImageError.

    Images with more than `max_pixels` pixels (None: no limit) are refused from their header,
    before any pixel is decoded. Transparent areas become white; 16/32-bit and float images are
    stretched from their own min..max to 0..255 (a constant one becomes black; NaN becomes 0); a
    transparency key on a 16/32-bit image is ignored. Multi-frame files give their first frame.

    `draft` (pixels, e.g. 224) decodes a JPEG at the smallest scale of 1/2, 1/4 or 1/8 whose
    sides are still at least that long (Pillow's draft mode, scaled in the JPEG decoder): much
    less to decode and resize when the image is only needed small. Formats other than JPEG (and
    MPO, a JPEG with more frames) ignore it.
    """
    return _past_pillow_guard(lambda: _load(path, max_pixels, draft))


def oriented_size(path):
    """(width, height) as displayed, i.e. swapped by EXIF orientations 5-8, from the header alone.

    Raises BadImageError like load_image for missing, empty or unidentifiable files; it applies no
    pixel limit (nothing is decoded) and so cannot notice truncated pixel data either.
    """
    return _past_pillow_guard(lambda: _displayed_size(path))


def _load(path, max_pixels, draft=None):
    """load_image, except that Pillow's own DecompressionBombError passes through."""
    with _opened(path) as im:
        width, height = im.size
        if max_pixels is not None and width * height > max_pixels:
            raise BadImageError(
                path,
                f"refused: {width} x {height} = {width * height:,} pixels exceeds the limit of "
                f"{max_pixels:,} (a guard against decompression bombs: raise max_pixels, vlsr run "
                "--max-pixels or the embed form's Largest image, to read it)",
            )
        if draft:
            im.draft(None, (draft, draft))  # a no-op for formats other than JPEG
        try:
            im.load()
        except (Image.DecompressionBombError, MemoryError):
            raise
        except Exception as e:
            raise BadImageError(path, f"truncated or corrupt image ({_message(e)})") from e
        # Read after load: Pillow 13 turns a TIFF's pixels by its orientation tag on load and then
        # drops the tag, so reading it before would turn them twice.
        orientation = _orientation(im)
    rgb = _to_rgb(im)
    if orientation in _TRANSPOSES:
        rgb = rgb.transpose(_TRANSPOSES[orientation])
    # The file's metadata (EXIF orientation, ICC profile of the original mode) no longer
    # describes these pixels; keeping it would let a later exif_transpose rotate them twice.
    rgb.info = {}
    return rgb


def _displayed_size(path):
    """oriented_size, except that Pillow's own DecompressionBombError passes through."""
    with _opened(path) as im:
        # Pillow 13 already gives a TIFF's size turned by its orientation tag (older Pillow does
        # not); the TIFF's own tags give the stored size either way.
        width, height = (im.tag_v2[256], im.tag_v2[257]) if im.format == "TIFF" else im.size
        return (height, width) if _orientation(im) >= 5 else (width, height)


@contextmanager
def _opened(path):
    """The file at `path` open with its image header parsed; BadImageError if that fails."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise BadImageError(path, "not a file")
        if st.st_size == 0:
            raise BadImageError(path, "empty file (0 bytes)")
        f = open(path, "rb")
    except (FileNotFoundError, NotADirectoryError):
        if re.match(r"[a-z][a-z0-9+.-]*://", str(path), re.IGNORECASE):  # (http://, s3://)
            raise BadImageError(path, "a web or cloud address, not a local file: download the "
                                      "images first") from None
        relative = "" if os.path.isabs(path) else (
            f" (a relative path, read from the current folder {os.getcwd()}: give the samples "
            "absolute paths)")
        raise BadImageError(path, f"file not found{relative}") from None
    except OSError as e:
        raise BadImageError(path, f"cannot read file ({e.strerror or e})") from e
    with f:
        yield _identify(path, f)


# The formats a file's first bytes announce: a file that starts so and that Pillow cannot
# identify is a damaged one of them, not something else named .jpg
SIGNATURES = [
    ("JPEG", lambda h: h.startswith(b"\xff\xd8\xff")),
    ("PNG", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    ("GIF", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    ("WebP", lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP"),
    ("TIFF", lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
    # (and the size of one of its header kinds: text may start with "BM")
    ("BMP", lambda h: h[:2] == b"BM" and int.from_bytes(h[14:18], "little") in (
        12, 40, 52, 56, 64, 108, 124)),
]


def _identify(path, f):
    """Pillow's lazily-decoded image of open file `f`, or BadImageError saying why there is none."""
    try:
        return Image.open(f)
    except Image.DecompressionBombError:
        raise
    except UnidentifiedImageError:
        f.seek(0)
        head = f.read(32)  # shows what the file is instead, e.g. '<!DOCTYPE html>'
        kind = next((name for name, test in SIGNATURES if test(head)), None)
        if kind:  # (a header damaged past what Pillow recognises)
            raise BadImageError(path, f"corrupt {kind} (it starts as one, but its header "
                                      "cannot be read)") from None
        raise BadImageError(path, f"not an image (unknown format; starts with "
                                  f"{_head(head[:16])})") from None
    except Exception as e:
        # Recognised, but Pillow rejects the header (unsupported variant or damaged).
        raise BadImageError(path, f"unsupported or corrupt image ({_message(e)})") from e


def _head(data):
    """The first bytes of a file as a curator reads them: text as text (a web page saved as
    ``.jpg``), anything else as hex bytes."""
    if data and all(32 <= b < 127 or b in b"\t\n\r" for b in data):
        return repr(data.decode("ascii"))
    return f"the bytes {data[:8].hex(' ')}"


def _past_pillow_guard(read):
    """read(), with Pillow's process-wide decompression-bomb guard kept out of the way.

    Our own max_pixels check replaces that guard, whose limit is the global
    Image.MAX_IMAGE_PIXELS: above it Pillow warns (silenced here), above twice it Pillow refuses
    before we learn the size. On refusal read() runs again with the global off; the lock makes
    concurrent calls restore it correctly. (warnings.catch_warnings is not thread-safe either,
    at worst leaving DecompressionBombWarning silenced.)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return read()
        except Image.DecompressionBombError:
            pass
        with _PILLOW_GUARD_LOCK:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                return read()
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _orientation(im):
    """The EXIF orientation 1-8 in what Pillow has read of `im`; 1 if absent, invalid or unreadable.

    Read by hand rather than with ImageOps.exif_transpose, which also re-encodes the whole EXIF
    and so fails on damage in unrelated tags; damaged EXIF is metadata damage, not a bad image.
    Calls Image.Image.getexif, not the subclass's: PngImageFile.getexif decodes the whole image
    when the header has no eXIf chunk.
    """
    try:
        value = Image.Image.getexif(im).get(ExifTags.Base.Orientation, 1)
        return value if value in _TRANSPOSES else 1
    except Exception:
        return 1


def _to_rgb(im):
    """`im` as 8-bit RGB: deep images stretched to their own range, transparency over white."""
    if im.mode in ("I", "F") or im.mode.startswith("I;"):
        return _stretched_to_grey(im).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        if im.mode == "La":
            im = im.convert("LA")  # Pillow has no La -> RGBA conversion
        background = Image.new("RGBA", im.size, _WHITE)
        return Image.alpha_composite(background, im.convert("RGBA")).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def _stretched_to_grey(im):
    """An "L" image of 16/32-bit or float `im`, its finite min..max mapped to 0..255.

    Clipping at 255 instead would turn almost every 16-bit photo white. A constant image has no
    range and becomes 0; NaN becomes 0, +inf 255 and -inf 0.
    """
    values = np.asarray(im).astype(np.float32)
    finite = values[np.isfinite(values)]
    if finite.size == 0 or finite.min() == finite.max():
        return Image.new("L", im.size, 0)
    low, high = finite.min(), finite.max()
    scaled = (values - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _message(e):
    """Pillow's message for `e`, or its type when it has none."""
    return str(e) or type(e).__name__
