"""Unit tests for decoding image files of odd modes and damaged files (cxr_support.images)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    SIZE,
    write_fake_jpeg,
    write_truncated_jpeg,
)
from PIL import Image, ImageCms, ImageOps

from cxr_support.errors import DataError
from cxr_support.images import decode_resized, read_xray, to_grayscale

# ----------------------------------------------------------------------------- decoding odd images


def _two_halves(mode: str, left, right, size=(64, 48)) -> Image.Image:
    image = Image.new(mode, size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def _make_rgba(path: Path) -> Path:
    # right half fully transparent
    image = _two_halves("RGBA", (200, 100, 50, 255), (255, 255, 255, 0))
    image.save(path)
    return path


def _make_cmyk(path: Path) -> Path:
    _two_halves("CMYK", (0, 0, 0, 128), (0, 0, 0, 0)).save(path, format="JPEG", quality=95)
    return path


def _make_gray16(path: Path) -> Path:
    array = np.full((48, 64), 32768, np.uint16)
    array[:, :32] = 65535
    image = Image.fromarray(array)
    assert image.mode == "I;16"
    image.save(path)
    return path


def _make_palette(path: Path) -> Path:
    image = Image.new("P", (64, 48), 1)
    image.putpalette([0, 0, 0, 255, 255, 255, 200, 100, 50] + [0, 0, 0] * 253)
    image.paste(2, (0, 0, 32, 48))
    image.save(path)
    return path


def _make_rgb(path: Path) -> Path:
    _two_halves("RGB", (90, 90, 90), (200, 200, 200)).save(path, format="JPEG", quality=95)
    return path


# name, writer, file mode as stored, expected gray value of the left and the right half
# (+-3 for JPEG)
ODD_IMAGES = [
    ("rgba.png", _make_rgba, "RGBA", 124, 0),  # transparent areas composite onto black
    ("cmyk.jpeg", _make_cmyk, "CMYK", 127, 255),
    ("gray16.png", _make_gray16, "I;16", 255, 128),  # 65535 -> 255, 32768 -> 128
    ("palette.png", _make_palette, "P", 124, 255),
    ("rgb.jpeg", _make_rgb, "RGB", 90, 200),
]


@pytest.mark.parametrize(
    ("name", "writer", "mode", "left", "right"), ODD_IMAGES, ids=[row[0] for row in ODD_IMAGES]
)
def test_read_xray_converts_any_mode_to_8bit_gray(tmp_path, name, writer, mode, left, right):
    """RGBA, CMYK, 16-bit, palette and RGB files all read as 8-bit 'L'.

    Each has the right gray values.
    """
    path = writer(tmp_path / name)
    with Image.open(path) as stored:
        assert stored.mode == mode  # the file really is in the odd mode
    image = read_xray(path)
    assert image.mode == "L" and image.size == (64, 48)
    pixels = np.asarray(image).astype(int)
    assert abs(pixels[24, 8] - left) <= 3
    assert abs(pixels[24, 56] - right) <= 3


@pytest.mark.parametrize(
    ("name", "writer", "mode", "left", "right"), ODD_IMAGES, ids=[row[0] for row in ODD_IMAGES]
)
def test_decode_resized_gives_uint8_square(tmp_path, name, writer, mode, left, right):
    """decode_resized returns a (size x size) uint8 array plus the original size and mode."""
    path = writer(tmp_path / name)
    pixels, original_size, original_mode = decode_resized(path, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE)
    assert original_size == (64, 48) and original_mode == mode
    assert abs(int(pixels[SIZE // 2, 3]) - left) <= 3
    assert abs(int(pixels[SIZE // 2, SIZE - 4]) - right) <= 3


def test_read_xray_rejects_truncated_jpeg(tmp_path):
    """A JPEG cut in half is a DataError naming the file (read_xray and decode_resized)."""
    path = write_truncated_jpeg(tmp_path / "person5_virus_9.jpeg")
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_xray(path)
    with pytest.raises(DataError, match=re.escape(str(path))):
        decode_resized(path, SIZE)


def test_read_xray_rejects_text_named_jpeg(tmp_path):
    """A text file named .jpeg is a DataError naming the file in read_xray."""
    path = write_fake_jpeg(tmp_path / "IM-0042-0001.jpeg")
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_xray(path)


def test_decode_resized_rejects_text_named_jpeg(tmp_path):
    """A text file named .jpeg is a DataError naming the file in decode_resized too."""
    path = write_fake_jpeg(tmp_path / "IM-0042-0001.jpeg")
    with pytest.raises(DataError, match=re.escape(str(path))):
        decode_resized(path, SIZE)


# ------------------------------------------------------------------------- every mode Pillow opens

LEVELS = np.arange(0, 256, 17)  # a 16-step black-to-white ramp: the grey expected in each column
RAMP_SIZE = (16, 4)


def _grey_ramp() -> Image.Image:
    """The ramp as 8-bit grey: column i is LEVELS[i], 4 rows."""
    return Image.fromarray(np.tile(LEVELS.astype(np.uint8), (RAMP_SIZE[1], 1)))


def _grey_palette(image: Image.Image) -> Image.Image:
    """An 'L' or 'LA' image of column indexes, made 'P' or 'PA' with the ramp as palette."""
    image.putpalette(np.repeat(LEVELS, 3).astype(np.uint8).tobytes())
    return image


def _ramp_in(mode: str) -> Image.Image:
    """The grey ramp in ``mode``: R = G = B, black ink only, opaque, wide modes at full scale."""
    grey = _grey_ramp()
    zero, half, full = (Image.new("L", RAMP_SIZE, value) for value in (0, 128, 255))
    index = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8), (RAMP_SIZE[1], 1)))
    wide = np.tile(LEVELS, (RAMP_SIZE[1], 1)) * 257  # 0 to 65535
    srgb, lab = ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB")
    builders = {
        "1": lambda: grey.convert("1", dither=Image.Dither.NONE),
        "L": lambda: grey,
        "P": lambda: _grey_palette(index),
        "PA": lambda: _grey_palette(Image.merge("LA", (index, full))),
        "LA": lambda: Image.merge("LA", (grey, full)),
        "RGB": lambda: grey.convert("RGB"),
        "RGBA": lambda: grey.convert("RGBA"),
        "CMYK": lambda: Image.merge("CMYK", (zero, zero, zero, ImageOps.invert(grey))),
        "YCbCr": lambda: Image.merge("YCbCr", (grey, half, half)),
        "LAB": lambda: ImageCms.profileToProfile(grey.convert("RGB"), srgb, lab, outputMode="LAB"),
        "HSV": lambda: Image.merge("HSV", (zero, zero, grey)),
        "I": lambda: Image.fromarray(wide.astype(np.int32)),
        "I;16": lambda: Image.fromarray(wide.astype(np.uint16)),
        "I;16B": lambda: Image.frombytes("I;16B", RAMP_SIZE, wide.astype(">u2").tobytes()),
        "I;16L": lambda: Image.frombytes("I;16L", RAMP_SIZE, wide.astype("<u2").tobytes()),
        "F": lambda: Image.fromarray((wide / 65535).astype(np.float32)),
    }
    image = builders[mode]()
    assert image.mode == mode
    return image


# mode, file format that keeps it (None: no format Pillow writes does), tolerance in grey levels
EVERY_MODE = [
    ("1", "PNG", 0),  # two levels: the ramp's lower half is black, its upper half white
    ("L", "PNG", 0),
    ("P", "PNG", 0),
    ("PA", "TIFF", 0),
    ("LA", "PNG", 0),
    ("RGB", "PNG", 0),
    ("RGBA", "PNG", 0),
    ("CMYK", "TIFF", 0),
    ("YCbCr", "TIFF", 1),  # Y is the luma: R = G = B gives Y back
    ("LAB", "TIFF", 2),  # sRGB grey to L*a*b* and back, in 8 bits
    ("HSV", None, 0),
    ("I", "TIFF", 0),  # 0 to 65535: 16-bit full scale
    ("I;16", "PNG", 0),
    ("I;16B", "TIFF", 0),  # big-endian 16-bit, as DICOM converters write
    ("I;16L", None, 0),  # a little-endian TIFF opens as 'I;16'
    ("F", "TIFF", 1),  # 0 to 1
]
EVERY_MODE_IDS = [row[0] for row in EVERY_MODE]


@pytest.mark.parametrize(("mode", "file_format", "tolerance"), EVERY_MODE, ids=EVERY_MODE_IDS)
def test_every_mode_reads_its_grey_ramp(tmp_path, mode, file_format, tolerance):
    """A black-to-white ramp in every mode Pillow opens reads as its grey values, 0 to 255."""
    image = _ramp_in(mode)
    if file_format is None:  # only in memory: through to_grayscale, which read_xray uses
        gray = to_grayscale(image)
    else:
        path = tmp_path / f"ramp.{file_format.lower()}"
        image.save(path, format=file_format)
        with Image.open(path) as stored:
            assert stored.mode == mode  # the file really is in that mode
        gray = read_xray(path)
    assert gray.mode == "L" and gray.size == RAMP_SIZE
    pixels = np.asarray(gray).astype(int)
    expected = np.where(LEVELS >= 128, 255, 0) if mode == "1" else LEVELS
    assert np.abs(pixels - expected).max() <= tolerance
    assert pixels[:, 0].max() <= tolerance and pixels[:, -1].min() >= 255 - tolerance
    assert (np.diff(pixels, axis=1) >= 0).all()


def _white_with_alpha(mode: str, alphas: list[int]) -> Image.Image:
    """A white image in ``mode`` whose columns have the given opacities ('P': a tRNS table)."""
    size = (len(alphas), 2)
    white = Image.new("L", size, 255)
    alpha = Image.fromarray(np.tile(np.array(alphas, np.uint8), (2, 1)))
    if mode in {"P", "PA"}:  # palette entries 0, 1, 2 all white: the columns use one each
        index = Image.fromarray(np.tile(np.arange(len(alphas), dtype=np.uint8), (2, 1)))
        image = index if mode == "P" else Image.merge("LA", (index, alpha))
        image.putpalette(bytes([255] * 3 * len(alphas)))
        if mode == "P":
            image.info["transparency"] = bytes(alphas)
        return image
    return Image.merge(mode, (white,) * (len(mode) - 1) + (alpha,))


ALPHA_FILES = [("LA", "PNG"), ("PA", "TIFF"), ("RGBA", "PNG"), ("P", "PNG")]


@pytest.mark.parametrize(("mode", "file_format"), ALPHA_FILES, ids=[row[0] for row in ALPHA_FILES])
def test_transparent_pixels_are_laid_on_black(tmp_path, mode, file_format):
    """White at opacity 255, 128 and 0 reads 255, 128, 0 (grey x alpha / 255); 'P' by tRNS."""
    image = _white_with_alpha(mode, [255, 128, 0])
    path = tmp_path / f"alpha.{file_format.lower()}"
    image.save(path, format=file_format, transparency=image.info.get("transparency"))
    with Image.open(path) as stored:
        assert stored.mode == mode
    assert np.asarray(read_xray(path))[0].tolist() == [255, 128, 0]


WIDE_INTEGERS = [  # 32-bit 'I' values of the left and right half, their expected grey
    ("8-bit", (0, 255), (0, 255)),
    ("12-bit", (2048, 4095), (128, 255)),
    ("16-bit", (32768, 65535), (128, 255)),
    ("over-16-bit", (50000, 100000), (0, 255)),  # beyond 16 bits: lowest black, highest white
    ("negative", (-1000, 3000), (0, 255)),
]
WIDE_INTEGER_IDS = [row[0] for row in WIDE_INTEGERS]


@pytest.mark.parametrize(("values", "grey"), [r[1:] for r in WIDE_INTEGERS], ids=WIDE_INTEGER_IDS)
def test_32bit_integer_tiff_is_scaled_by_its_bit_depth_or_range(tmp_path, values, grey):
    """'I' pixels in [0, 65535] scale by the smallest of 8, 12, 16 bits; others by their range."""
    path = tmp_path / "wide.tif"
    _two_halves("I", *values).save(path)
    pixels = np.asarray(read_xray(path))
    assert (pixels[0, 0], pixels[0, -1]) == grey


def test_mode_without_a_grey_conversion_is_named_with_the_fix():
    """'La' (premultiplied alpha, in memory only) has no grey: ValueError names it and the fix."""
    with pytest.raises(ValueError, match=r"pixel mode 'La'.*8- or 16-bit grey"):
        to_grayscale(Image.new("La", (4, 4)))


def test_file_in_a_refused_mode_names_the_file_the_mode_and_the_fix(tmp_path, monkeypatch):
    """read_xray's DataError for a refused mode names the file, the mode and what to save it as."""
    path = write_fake_jpeg(tmp_path / "IM-0001-0001.png")
    monkeypatch.setattr(Image, "open", lambda _: Image.new("La", (4, 4)))  # a file in mode 'La'
    with pytest.raises(DataError) as caught:
        read_xray(path)
    assert all(part in str(caught.value) for part in (str(path), "'La'", "8- or 16-bit grey"))
