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
from PIL import Image

from cxr_support.dataset import (
    DataError,
)
from cxr_support.images import decode_resized, read_xray

# ----------------------------------------------------------------------------- decoding odd images



def _two_halves(mode: str, left, right, size=(64, 48)) -> Image.Image:
    image = Image.new(mode, size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def _make_rgba(path: Path) -> Path:
    image = _two_halves("RGBA", (200, 100, 50, 255), (255, 255, 255, 0))  # right half fully transparent
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


# name, writer, file mode as stored, expected gray value of the left and the right half (+-3 for JPEG)
ODD_IMAGES = [
    ("rgba.png", _make_rgba, "RGBA", 124, 0),  # transparent areas composite onto black
    ("cmyk.jpeg", _make_cmyk, "CMYK", 127, 255),
    ("gray16.png", _make_gray16, "I;16", 255, 128),  # 65535 -> 255, 32768 -> 128
    ("palette.png", _make_palette, "P", 124, 255),
    ("rgb.jpeg", _make_rgb, "RGB", 90, 200),
]


@pytest.mark.parametrize(("name", "writer", "mode", "left", "right"), ODD_IMAGES, ids=[row[0] for row in ODD_IMAGES])
def test_read_xray_converts_any_mode_to_8bit_gray(tmp_path, name, writer, mode, left, right):
    """RGBA, CMYK, 16-bit, palette and RGB files all read as 8-bit 'L' with the right gray values."""
    path = writer(tmp_path / name)
    with Image.open(path) as stored:
        assert stored.mode == mode  # the file really is in the odd mode
    image = read_xray(path)
    assert image.mode == "L" and image.size == (64, 48)
    pixels = np.asarray(image).astype(int)
    assert abs(pixels[24, 8] - left) <= 3
    assert abs(pixels[24, 56] - right) <= 3


@pytest.mark.parametrize(("name", "writer", "mode", "left", "right"), ODD_IMAGES, ids=[row[0] for row in ODD_IMAGES])
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


