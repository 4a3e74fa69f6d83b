"""Where a box's crop is cut from its image: the box with some context around it, widened to a
square so that CLIP's centre crop keeps the whole object, or None for a box too small to see
(that box is then scored on the whole image).

A box covering the whole image is cut as the whole image, so its crop embeds exactly as the image.
"""

import math

from ..engine.defaults import DEFAULT_CROP_MIN_SIZE, DEFAULT_CROP_PADDING


def crop_region(box, width, height, padding=DEFAULT_CROP_PADDING, min_size=DEFAULT_CROP_MIN_SIZE):
    """The pixel region ``(left, top, right, bottom)`` to cut for ``box``, or None.

    Args:
        box: FiftyOne's ``[x, y, w, h]`` relative to the image (0..1), or None.
        width, height: the image's size in pixels, as displayed.
        padding: context added on each side, as a fraction of the box's width and height.
        min_size: a box whose shorter side (inside the image) is below this many pixels gives
            None, as does a missing, non-finite or empty box.

    Returns:
        a tuple of 4 ints for ``PIL.Image.crop``, inside the image, or None.
    """
    try:
        x, y, w, h = (float(v) for v in box)
    except (TypeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        return None
    left, right = max(x, 0.0) * width, min(x + w, 1.0) * width
    top, bottom = max(y, 0.0) * height, min(y + h, 1.0) * height
    if min(right - left, bottom - top) < max(min_size, 1):
        return None
    pad_x, pad_y = padding * (right - left), padding * (bottom - top)
    side = max(right - left + 2 * pad_x, bottom - top + 2 * pad_y)
    left, right = _pixels(*_widened(left - pad_x, right + pad_x, side, width))
    top, bottom = _pixels(*_widened(top - pad_y, bottom + pad_y, side, height))
    return left, top, right, bottom


def _pixels(lo, hi):
    """``[lo, hi]`` rounded to whole pixels, at least one (a 1-pixel box at 3.5 rounded to
    4..4, halves going to the even number, and the crop of no width failed its whole image)."""
    lo = round(lo)  # (a pixel or more from the far edge: the region is that wide, inside)
    return lo, max(round(hi), lo + 1)


def _widened(lo, hi, side, limit):
    """``[lo, hi]`` widened about its centre to ``side`` (at most ``limit``) and moved inside
    ``[0, limit]``."""
    side = min(side, limit)
    lo = min(max((lo + hi) / 2 - side / 2, 0.0), limit - side)
    return lo, lo + side
