"""vlsr_core.model.images: every usable file comes out as 8-bit RGB as displayed, every other one as a
BadImageError with a precise reason. All inputs are written by the tests themselves."""

import io
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from vlsr_core.model import images
from vlsr_core.model.images import DEFAULT_MAX_PIXELS, BadImageError, load_image, oriented_size

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def save(tmp_path, im, name, **params):
    """Write `im` to tmp_path/name (format from the extension) and return the path."""
    path = tmp_path / name
    im.save(path, **params)
    return path


def write(tmp_path, name, data):
    """Write raw bytes to tmp_path/name and return the path."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


def opened(path, attribute):
    """An attribute of the image file as Pillow opens it, to check a test's premise."""
    with Image.open(path) as im:
        return getattr(im, attribute)


def pixels(im):
    """The image as an array, to compare pixel values."""
    return np.asarray(im).astype(int)


def close(actual, expected, tolerance):
    """Whether two colours differ by at most `tolerance` in every channel."""
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


def halves(mode, size, left, right):
    """An image whose left half is `left` and right half is `right`."""
    im = Image.new(mode, size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def exif_bytes(orientation):
    """EXIF data holding only the given orientation value."""
    exif = Image.Exif()
    exif[274] = orientation
    return exif.tobytes()


def png_claiming(tmp_path, width, height):
    """A valid PNG header claiming width x height over a 1x1 image's data: a cheap bomb."""
    buf = io.BytesIO()
    Image.new("1", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    # signature (8) | IHDR length (4) | b"IHDR" (4) | width, height, ... (13) | CRC of type+data
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return write(tmp_path, f"bomb-{width}x{height}.png", bytes(data))


def premultiplied_tiff(tmp_path, im, name):
    """A TIFF of LA/RGBA `im` whose alpha is marked associated (premultiplied), which Pillow
    cannot write itself: ExtraSamples (tag 338) 2 -> 1."""
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    unassociated = struct.pack("<HHIH", 338, 3, 1, 2)
    data = buf.getvalue()
    assert data.count(unassociated) == 1
    return write(tmp_path, name, data.replace(unassociated, struct.pack("<HHIH", 338, 3, 1, 1)))


@pytest.fixture
def load_calls(monkeypatch):
    """A list that records every ImageFile.load call (the pixel decode of PNG and JPEG)."""
    calls = []
    real_load = ImageFile.ImageFile.load

    def spy(self):
        calls.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    return calls


def reason_of(path, **kwargs):
    """The reason load_image gives for refusing `path`."""
    with pytest.raises(BadImageError) as info:
        load_image(path, **kwargs)
    assert info.value.path == path
    assert str(info.value) == f"{path}: {info.value.reason}"
    return info.value.reason


# --- BadImageError -----------------------------------------------------------------------------


def test_bad_image_error_has_path_reason_and_survives_pickling():
    e = BadImageError("/data/x.jpg", "file not found")
    assert (e.path, e.reason) == ("/data/x.jpg", "file not found")
    assert str(e) == "/data/x.jpg: file not found"
    copy = pickle.loads(pickle.dumps(e))
    assert (copy.path, copy.reason, str(copy)) == (e.path, e.reason, str(e))


# --- modes -------------------------------------------------------------------------------------


def test_rgb_comes_back_unchanged_and_fully_loaded(tmp_path):
    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = save(tmp_path, Image.fromarray(original), "rgb.png")
    im = load_image(path)
    os.remove(path)  # the pixels must not depend on the file any more
    assert (im.mode, im.size) == ("RGB", (30, 20))
    assert np.array_equal(np.asarray(im), original)


def test_grey_and_bilevel_become_grey_rgb(tmp_path):
    grey = load_image(save(tmp_path, Image.new("L", (4, 3), 77), "grey.png"))
    assert (grey.mode, grey.size, grey.getpixel((0, 0))) == ("RGB", (4, 3), (77, 77, 77))
    bilevel = halves("1", (4, 3), 0, 1)
    im = load_image(save(tmp_path, bilevel, "bilevel.png"))
    assert im.mode == "RGB"
    assert (im.getpixel((0, 0)), im.getpixel((3, 0))) == ((0, 0, 0), WHITE)


def palette_image():
    """A 4x2 "P" image: index 1 (colour (10, 200, 30)) on the left, index 2 on the right."""
    im = halves("P", (4, 2), 1, 2)
    im.putpalette([0, 0, 0, 10, 200, 30, 90, 60, 250] + [0] * (3 * 253))
    return im


def test_palette_without_transparency_keeps_its_colours(tmp_path):
    im = load_image(save(tmp_path, palette_image(), "palette.png"))
    assert im.mode == "RGB"
    assert (im.getpixel((0, 0)), im.getpixel((3, 1))) == ((10, 200, 30), (90, 60, 250))


def test_palette_transparency_becomes_white(tmp_path):
    im = load_image(save(tmp_path, palette_image(), "palette-trns.png", transparency=2))
    assert im.mode == "RGB"
    assert (im.getpixel((0, 0)), im.getpixel((3, 1))) == ((10, 200, 30), WHITE)


def test_transparency_key_on_rgb_becomes_white(tmp_path):
    im = load_image(save(tmp_path, halves("RGB", (4, 2), RED, BLUE), "keyed.png", transparency=BLUE))
    assert (im.mode, im.getpixel((0, 0)), im.getpixel((3, 0))) == ("RGB", RED, WHITE)


# Pixels (opaque, fully transparent, half transparent) and what each must become. Half: 50%
# alpha over white, e.g. 100 -> 100 * 128/255 + 255 * 127/255 = 177. Transparent is white, not black.
@pytest.mark.parametrize(
    "mode, name, pixels_in, pixels_out",
    [
        (
            "RGBA",
            "rgba.png",
            [(200, 20, 60, 255), (0, 0, 0, 0), (100, 0, 0, 128)],
            [(200, 20, 60), WHITE, (177, 127, 127)],
        ),
        ("LA", "la.png", [(60, 255), (0, 0), (100, 128)], [(60, 60, 60), WHITE, (177, 177, 177)]),
        ("PA", "pa.tiff", [(1, 255), (1, 0), (1, 128)], [(10, 200, 30), WHITE, (132, 227, 142)]),
    ],
)
def test_alpha_is_composited_over_white(tmp_path, mode, name, pixels_in, pixels_out):
    im = Image.new(mode, (3, 1))
    if mode == "PA":
        im.putpalette(palette_image().getpalette())
    for x, value in enumerate(pixels_in):
        im.putpixel((x, 0), value)
    out = load_image(save(tmp_path, im, name))
    assert out.mode == "RGB"
    for x, expected in enumerate(pixels_out):
        assert close(out.getpixel((x, 0)), expected, 1)


def test_premultiplied_grey_alpha_la_is_composited_over_white(tmp_path):
    path = premultiplied_tiff(tmp_path, Image.new("LA", (2, 2), (100, 128)), "la-premultiplied.tiff")
    assert opened(path, "mode") == "La"  # the premise: Pillow reads it as "La"
    im = load_image(path)
    # premultiplied 100 at alpha 128 is 199; over white: 199 * 128/255 + 255 * 127/255 = 227
    assert im.mode == "RGB" and close(im.getpixel((0, 0)), (227, 227, 227), 1)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = halves("CMYK", (16, 8), (0, 255, 255, 0), (255, 255, 0, 0))  # red | blue
    im = load_image(save(tmp_path, cmyk, "cmyk.jpg"))
    assert im.mode == "RGB"
    assert close(im.getpixel((0, 0)), RED, 10) and close(im.getpixel((15, 0)), BLUE, 10)


@pytest.mark.parametrize(
    "mode, value, expected",
    [("LAB", (255, 128, 128), WHITE), ("LAB", (0, 128, 128), (0, 0, 0)), ("YCbCr", (76, 85, 255), RED)],
)
def test_lab_and_ycbcr_tiff_become_rgb(tmp_path, mode, value, expected):
    im = load_image(save(tmp_path, Image.new(mode, (2, 2), value), f"{mode}.tiff"))
    assert im.mode == "RGB" and close(im.getpixel((0, 0)), expected, 2)


def gradient_16bit():
    """A 1 x 256 row of uint16 from 0 to 65535."""
    return np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(1, 256)


@pytest.mark.parametrize(
    "name, make",
    [
        ("i16.png", lambda: Image.fromarray(gradient_16bit())),
        ("i16b.tiff", lambda: Image.fromarray(gradient_16bit()).convert("I").convert("I;16B")),
    ],
)
def test_16bit_is_stretched_from_its_range_not_clipped(tmp_path, name, make):
    source = make()
    path = save(tmp_path, source, name)
    assert opened(path, "mode") == source.mode  # the premise: the file really is 16-bit
    out = load_image(path)
    row = pixels(out)[0]
    assert out.mode == "RGB" and out.size == (256, 1)
    assert (row[:, 0] == row[:, 1]).all() and (row[:, 0] == row[:, 2]).all()  # grey
    assert row[0, 0] == 0 and row[-1, 0] == 255
    assert abs(row[128, 0] - 128) <= 1  # proportional, not all white above 255
    assert (np.diff(row[:, 0]) >= 0).all()


def test_32bit_integer_is_stretched_from_its_range(tmp_path):
    values = np.array([[-1000, 1000, 3000]], dtype=np.int32)
    path = save(tmp_path, Image.fromarray(values), "i32.tiff")
    assert opened(path, "mode") == "I"
    row = pixels(load_image(path))[0, :, 0]
    assert list(row) == [0, 128, 255]


def test_float_is_stretched_from_its_finite_range(tmp_path):
    values = np.array([[-0.5, 0.0, 1.5, np.nan, np.inf, -np.inf]], dtype=np.float32)
    path = save(tmp_path, Image.fromarray(values), "float.tiff")
    assert opened(path, "mode") == "F"
    row = pixels(load_image(path))[0, :, 0]
    assert list(row) == [0, 64, 255, 0, 255, 0]


def test_constant_16bit_image_becomes_black(tmp_path):
    im = load_image(save(tmp_path, Image.new("I;16", (3, 2), 40000), "flat16.png"))
    assert im.mode == "RGB" and pixels(im).max() == 0


@pytest.mark.parametrize(
    "mode",
    ["1", "L", "P", "RGB", "RGBX", "RGBA", "RGBa", "LA", "La", "PA", "CMYK", "YCbCr", "LAB", "HSV"]
    + ["I", "F", "I;16", "I;16B", "I;16L", "I;16N"],
)
def test_every_pillow_mode_converts_to_rgb(mode):
    out = images._to_rgb(Image.new(mode, (3, 2)))
    assert (out.mode, out.size) == ("RGB", (3, 2))


def test_hsv_and_premultiplied_rgba_convert_correctly():
    # Modes no Pillow file format yields, so only the conversion itself can be tested.
    assert images._to_rgb(Image.new("HSV", (1, 1), (0, 255, 255))).getpixel((0, 0)) == RED
    assert images._to_rgb(Image.new("RGBa", (1, 1), (0, 0, 0, 0))).getpixel((0, 0)) == WHITE


# --- multi-frame -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["two.gif", "two.mpo", "two.tiff"])
def test_multi_frame_files_give_the_first_frame(tmp_path, name):
    first, second = Image.new("RGB", (8, 6), RED), Image.new("RGB", (8, 6), BLUE)
    path = save(tmp_path, first, name, save_all=True, append_images=[second])
    assert opened(path, "n_frames") == 2
    im = load_image(path)
    assert (im.mode, im.size) == ("RGB", (8, 6))
    assert close(im.getpixel((4, 3)), RED, 3)


# --- EXIF orientation --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rotated.jpg", "rotated.png", "rotated.tiff"])
def test_exif_orientation_6_is_applied_and_oriented_size_agrees(tmp_path, name):
    # Orientation 6: the stored image is to be turned 90 degrees clockwise, left going to the top.
    path = save(tmp_path, halves("RGB", (40, 20), RED, BLUE), name, exif=exif_bytes(6))
    im = load_image(path)
    assert (im.mode, im.size) == ("RGB", (20, 40))
    assert close(im.getpixel((10, 5)), RED, 10) and close(im.getpixel((10, 34)), BLUE, 10)
    assert oriented_size(path) == (20, 40)
    assert im.getexif().get(274) is None  # a later exif_transpose cannot turn it again


@pytest.mark.parametrize("orientation", [0, 9, 1000])
def test_invalid_exif_orientation_is_ignored(tmp_path, orientation):
    path = save(tmp_path, halves("RGB", (40, 20), RED, BLUE), "odd.jpg", exif=exif_bytes(orientation))
    im = load_image(path)
    assert im.size == (40, 20) and close(im.getpixel((5, 10)), RED, 10)
    assert oriented_size(path) == (40, 20)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_garbage_exif_is_ignored(tmp_path):
    garbage = b"Exif\x00\x00II*\x00\xff\xff\xff\x00"  # first IFD offset far past the end
    path = save(tmp_path, Image.new("RGB", (40, 20), RED), "garbage.jpg", exif=garbage)
    assert load_image(path).size == (40, 20)
    assert oriented_size(path) == (40, 20)


def test_orientation_is_applied_despite_an_unrelated_broken_exif_tag(tmp_path):
    # Orientation 6 plus an ImageDescription (0x010E) stored as FLOAT instead of ASCII.
    entries = [(0x010E, 11, 1, struct.pack("<f", 1.0)), (0x0112, 3, 1, struct.pack("<HH", 6, 0))]
    ifd = b"II*\x00" + struct.pack("<IH", 8, len(entries))
    ifd += b"".join(struct.pack("<HHI", *entry[:3]) + entry[3] for entry in entries) + bytes(4)
    path = save(tmp_path, Image.new("RGB", (40, 20), RED), "broken-tag.jpg", exif=b"Exif\x00\x00" + ifd)
    with Image.open(path) as im, pytest.raises(AttributeError):
        ImageOps.exif_transpose(im)  # the premise: Pillow's own exif_transpose fails on this file
    assert load_image(path).size == (20, 40)
    assert oriented_size(path) == (20, 40)


def test_oriented_size_reads_only_the_header(tmp_path, load_calls):
    path = save(tmp_path, Image.new("RGB", (40, 20)), "header.png", exif=exif_bytes(8))
    assert oriented_size(path) == (20, 40)
    assert load_calls == []


# --- failures ----------------------------------------------------------------------------------


def noise(size=(64, 64)):
    """Random RGB pixels, so that compressed data is spread through the whole file."""
    return Image.fromarray(np.random.default_rng(1).integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def test_a_web_address_is_told_as_one(tmp_path):
    """Audit: a sample whose filepath is an https address was reported as 'file not found'."""
    for address in ("https://example.com/img/cat.jpg", "s3://bucket/cat.jpg"):
        assert reason_of(address) == ("a web or cloud address, not a local file: download the "
                                      "images first")


def test_missing_file(tmp_path, monkeypatch):
    path = tmp_path / "nope.jpg"
    assert reason_of(path) == "file not found"
    with pytest.raises(BadImageError, match="file not found"):
        oriented_size(path)
    # a relative path (set by hand on a sample) is read from wherever the run started
    monkeypatch.chdir(tmp_path)
    assert reason_of("imgs/nope.jpg") == (
        f"file not found (a relative path, read from the current folder {tmp_path}: give the "
        "samples absolute paths)")


def test_directory(tmp_path):
    assert reason_of(tmp_path) == "not a file"
    with pytest.raises(BadImageError, match="not a file"):
        oriented_size(tmp_path)


def test_empty_file(tmp_path):
    path = write(tmp_path, "empty.jpg", b"")
    assert reason_of(path) == "empty file (0 bytes)"
    with pytest.raises(BadImageError, match=r"empty file \(0 bytes\)"):
        oriented_size(path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = save(tmp_path, Image.new("RGB", (2, 2)), "locked.png")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Module-level `open` shadows the builtin in vlsr_core.model.images only (chmod does not stop root).
    monkeypatch.setattr(images, "open", denied, raising=False)
    assert reason_of(path) == "cannot read file (Permission denied)"


@pytest.mark.parametrize("kind, name", [("JPEG", "a.jpg"), ("PNG", "a.png"), ("GIF", "a.gif"),
                                        ("WEBP", "a.webp")])
def test_an_image_whose_header_is_damaged_is_said_to_be_a_corrupt_one_of_its_kind(
        tmp_path, kind, name):
    """Audit: a JPEG with bytes 300-800 overwritten was "not an image (unknown format; starts
    with the bytes ff d8 ff e0 ...)", as a web page named .jpg is."""
    path = save(tmp_path, Image.new("RGB", (64, 48), (200, 30, 30)), name)
    data = bytearray(open(path, "rb").read())
    data[12:] = bytes(len(data) - 12)  # the signature alone is left
    write(tmp_path, name, bytes(data))
    shown = {"WEBP": "WebP"}.get(kind, kind)
    assert reason_of(path) == f"corrupt {shown} (it starts as one, but its header cannot be read)"


@pytest.mark.parametrize(
    "data, shown",
    [
        (b"<!DOCTYPE html>\n<html>404</html>", "'<!DOCTYPE html>\\n'"),  # a web page
        (bytes(range(256)) * 4, "the bytes 00 01 02 03 04 05 06 07)"),  # not b'\x00...'
        (b"\xb7\x10\xec\x08" * 8, "the bytes b7 10 ec 08 b7 10 ec 08)"),
        (b"BMW,X5,2019\n", "'BMW,X5,2019\\n'"),  # (a CSV: not a corrupt BMP)
    ],
)
def test_not_an_image(tmp_path, data, shown):
    path = write(tmp_path, "fake.jpg", data)
    reason = reason_of(path)
    assert reason.startswith("not an image (unknown format; starts with ") and shown in reason
    with pytest.raises(BadImageError, match="not an image"):
        oriented_size(path)


@pytest.mark.parametrize("name", ["cut.jpg", "cut.png", "cut.gif", "cut.tiff"])
def test_file_cut_in_half_is_truncated(tmp_path, name):
    path = save(tmp_path, noise(), name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert reason_of(path).startswith("truncated or corrupt image (")
    assert not ImageFile.LOAD_TRUNCATED_IMAGES


def test_corrupt_png_data(tmp_path):
    path = save(tmp_path, noise(), "corrupt.png")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert reason_of(path) == "truncated or corrupt image (broken data stream when reading image file)"


def test_header_pillow_rejects(tmp_path):
    path = save(tmp_path, noise((8, 8)), "odd.bmp")
    data = bytearray(path.read_bytes())
    data[30:34] = struct.pack("<I", 9)  # compression method 9 does not exist
    path.write_bytes(bytes(data))
    assert reason_of(path) == "unsupported or corrupt image (Unsupported BMP compression (9))"


def test_out_of_memory_is_not_disguised_as_a_bad_image(tmp_path, monkeypatch):
    def exhausted(self):
        raise MemoryError

    path = save(tmp_path, Image.new("RGB", (2, 2)), "fine.png")
    monkeypatch.setattr(ImageFile.ImageFile, "load", exhausted)
    with pytest.raises(MemoryError):
        load_image(path)


# --- decompression bombs -----------------------------------------------------------------------


def test_max_pixels_is_the_limit(tmp_path, load_calls):
    path = save(tmp_path, Image.new("RGB", (10, 10), RED), "small.png")
    assert reason_of(path, max_pixels=99) == (
        "refused: 10 x 10 = 100 pixels exceeds the limit of 99 "
        "(a guard against decompression bombs: raise max_pixels, vlsr run --max-pixels or the "
        "embed form's Largest image, to read it)"
    )
    assert load_calls == []  # refused from the header
    assert load_image(path, max_pixels=100).getpixel((9, 9)) == RED


@pytest.mark.filterwarnings("error")  # Pillow's DecompressionBombWarning must not show either
@pytest.mark.parametrize("side", [10000, 20000])  # above Pillow's warning, and its error, limit
def test_huge_header_is_refused_without_decoding(tmp_path, load_calls, side):
    path = png_claiming(tmp_path, side, side)
    assert DEFAULT_MAX_PIXELS == Image.MAX_IMAGE_PIXELS == 89_478_485
    assert reason_of(path) == (
        f"refused: {side} x {side} = {side * side:,} pixels exceeds the limit of 89,478,485 "
        "(a guard against decompression bombs: raise max_pixels, vlsr run --max-pixels or the "
        "embed form's Largest image, to read it)"
    )
    assert oriented_size(path) == (side, side)
    assert load_calls == []
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own limit is left as it was


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("name", ["big.png", "big.tiff"])  # TIFF checks Pillow's limit again on decode
def test_max_pixels_above_pillows_limit_loads(tmp_path, monkeypatch, name):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns above 1000, refuses above 2000
    path = save(tmp_path, halves("RGB", (64, 64), RED, BLUE), name)
    for max_pixels in (None, 64 * 64):
        im = load_image(path, max_pixels=max_pixels)
        assert im.size == (64, 64) and (im.getpixel((0, 0)), im.getpixel((63, 0))) == (RED, BLUE)
    assert reason_of(path, max_pixels=64 * 64 - 1).startswith("refused: 64 x 64 = 4,096 pixels")
    assert oriented_size(path) == (64, 64)
    warned = save(tmp_path, Image.new("RGB", (30, 50)), "warned-" + name)  # 1500: only a warning
    assert load_image(warned, max_pixels=None).size == (30, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000


# --- draft decoding (reduced-scale JPEG) -------------------------------------------------------


def test_draft_decodes_a_jpeg_at_the_smallest_scale_still_covering_the_size(tmp_path):
    path = save(tmp_path, halves("RGB", (800, 600), RED, BLUE), "big.jpg", quality=95)
    full, small = load_image(path), load_image(path, draft=224)
    assert full.size == (800, 600)
    assert small.size == (400, 300)  # 1/2: 1/4 would make the short side 150 < 224
    assert load_image(path, draft=100).size == (200, 150)  # 1/4: 1/8 would give 75 < 100
    assert load_image(path, draft=75).size == (100, 75)  # 1/8, the smallest scale there is
    assert close(small.getpixel((50, 150)), RED, 10) and close(small.getpixel((350, 150)), BLUE, 10)
    reference = np.asarray(full.resize(small.size, Image.Resampling.BICUBIC), dtype=float)
    assert np.abs(np.asarray(small, dtype=float) - reference).mean() < 3  # same picture


def test_draft_still_applies_exif_orientation(tmp_path):
    path = save(tmp_path, halves("RGB", (800, 400), RED, BLUE), "rotated.jpg",
                exif=exif_bytes(6), quality=95)
    im = load_image(path, draft=100)
    assert im.size == (100, 200)  # decoded at 1/4, then turned
    assert close(im.getpixel((50, 20)), RED, 10) and close(im.getpixel((50, 180)), BLUE, 10)


@pytest.mark.parametrize("name", ["big.png", "big.tiff"])
def test_draft_leaves_other_formats_at_full_size(tmp_path, name):
    path = save(tmp_path, halves("RGB", (800, 600), RED, BLUE), name)
    assert load_image(path, draft=224).size == (800, 600)
