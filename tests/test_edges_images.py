"""Edge cases of image files (issue 11, classes 2 and 3).

Huge and hostile images, orientation, float pixels, odd names.

A file that cannot be decoded must never stop a run: data preparation skips it with a
warning naming it, ``predict_image`` raises a ``DataError`` naming it, and the data folder
is left byte-identical.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import SIZE, TINY_LAYOUT, snapshot, write_jpeg, write_truncated_jpeg
from PIL import Image, ImageOps

import cxr_utils as cxr
from cxr_support import records
from cxr_support.errors import DataError
from cxr_support.images import decode_resized, read_xray, to_grayscale
from cxr_support.paths import display_path

ROOT = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------- builders


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def write_bomb_png(path: Path, side: int = 30000) -> Path:
    """A 100-byte PNG that declares side x side pixels (8-bit grey).

    Pillow's decompression-bomb check refuses it.
    """
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    return path


def bright_left_image(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """Grey image whose left half is white and right half black (landscape)."""
    image = Image.new("L", size, 0)
    image.paste(255, (0, 0, size[0] // 2, size[1]))
    return image


def with_orientation(image: Image.Image, orientation: int) -> Image.Exif:
    exif = image.getexif()
    exif[0x0112] = orientation
    return exif


def write_float_tiff(
    path: Path, left: float, right: float, size: tuple[int, int] = (64, 48)
) -> Path:
    """A 32-bit float TIFF (mode 'F') with two halves."""
    array = np.full((size[1], size[0]), right, np.float32)
    array[:, : size[0] // 2] = left
    Image.fromarray(array, mode="F").save(path)
    return path


# ----------------------------------------------------------------------------- decompression bombs


def test_bomb_png_really_is_refused_by_pillow(tmp_path):
    """The test file does what the issue describes.

    Plain Pillow stops with DecompressionBombError, naming no file.
    """
    path = write_bomb_png(tmp_path / "bomb.png")
    with pytest.raises(Image.DecompressionBombError) as caught:
        Image.open(path)
    assert "bomb.png" not in str(caught.value)


@pytest.mark.parametrize(
    "decode", [read_xray, lambda p: decode_resized(p, SIZE)], ids=["read_xray", "decode_resized"]
)
def test_bomb_image_gives_a_data_error_naming_the_file_and_the_fix(tmp_path, decode):
    """Decoding a file that declares 30000 x 30000 pixels raises DataError.

    The error names the file and the limit to raise.
    """
    path = write_bomb_png(tmp_path / "IM-0001-0001.png")
    with pytest.raises(DataError) as caught:
        decode(path)
    assert str(path) in str(caught.value) and "MAX_IMAGE_PIXELS" in str(caught.value)


def test_predict_image_on_a_bomb_names_the_file(tmp_path, base_model):
    """predict_image raises a clear DataError naming the file.

    Not Pillow's bare DecompressionBombError.
    """
    path = write_bomb_png(tmp_path / "upload.png")
    with pytest.raises(DataError, match=re.escape(str(path))):
        cxr.predict_image(path, base_model, {"image_size": SIZE}, torch.device("cpu"))


def test_prepare_data_skips_a_bomb_with_a_warning_and_leaves_data_alone(tiny_root, tmp_path):
    """A data set holding a bomb file is prepared without it.

    The warning names the file; the data folder is untouched.
    """
    bomb = write_bomb_png(tiny_root / "train" / "PNEUMONIA" / "person9_virus_9.png")
    before = snapshot(tiny_root)
    with pytest.warns(UserWarning, match=re.escape(str(bomb))):
        splits = cxr.prepare_data(
            tiny_root, tmp_path / "run", image_size=SIZE, seed=0, progress=False
        )
    assert snapshot(tiny_root) == before
    assert len(splits["train"]) + len(splits["val"]) == sum(
        len(names) for names in TINY_LAYOUT["train"].values()
    )
    assert [path for name in ("train", "val") for path, _ in splits[name].skipped] == [str(bomb)]


# --------------------------------------------------------------------------- memory of large images


def test_wide_image_is_converted_without_full_size_float_copies():
    """A 6-megapixel 16-bit image converts with under 4 bytes of Python-side memory per pixel.

    The float64 copies it used to make took 24.
    """
    image = Image.fromarray(np.full((2000, 3000), 3000, np.uint16))
    tracemalloc.start()
    try:
        gray = to_grayscale(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak / (2000 * 3000) < 4
    assert np.asarray(gray)[0, 0] == round(3000 / 4095 * 255)  # 12-bit data, scaled as before


_RGBA_PEAK = """
from PIL import Image
from cxr_support.images import to_grayscale

def status(field):
    return next(
        int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":")
    )

image = Image.new("RGBA", (4000, 4000), (200, 100, 50, 128))
image.load()
# reset the peak resident size (VmHWM) to the current one
open("/proc/self/clear_refs", "w").write("5")
before = status("VmRSS")
gray = to_grayscale(image)
print((status("VmHWM") - before) * 1024 / (4000 * 4000), gray.getpixel((0, 0)))
"""


@pytest.mark.skipif(
    not Path("/proc/self/clear_refs").exists(),
    reason="needs Linux's /proc/self/clear_refs to reset the peak memory",
)
def test_large_rgba_image_is_converted_in_8_bit_planes():
    """Flattening a 16-megapixel RGBA image costs under 6 bytes per pixel of peak memory.

    Full RGBA copies took 12.
    """
    done = subprocess.run(
        [sys.executable, "-c", _RGBA_PEAK], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    per_pixel, value = done.stdout.split()
    assert float(per_pixel) < 6
    # grey of (200, 100, 50) at half opacity, over black
    assert int(value) == round(124 * 128 / 255)


# ---------------------------------------------------------------- EXIF orientation and float pixels


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_when_decoding(tmp_path, orientation):
    """A film stored rotated (EXIF orientation 3, 6 or 8) decodes upright.

    It decodes exactly as ImageOps.exif_transpose shows it.
    """
    path = tmp_path / f"rotated{orientation}.png"
    image = bright_left_image()
    image.save(path, exif=with_orientation(image, orientation))
    gray = read_xray(path)
    with Image.open(path) as opened:
        upright = ImageOps.exif_transpose(opened).convert("L")
    assert gray.size == upright.size and np.array_equal(np.asarray(gray), np.asarray(upright))
    expected_size = (48, 64) if orientation in (6, 8) else (64, 48)
    assert gray.size == expected_size


def test_exif_orientation_six_puts_the_left_edge_on_top(tmp_path):
    """Orientation 6 (stored 90 degrees counter-clockwise): the stored left half is the top.

    This holds after decoding, also resized.
    """
    path = tmp_path / "IM-0001-0001.jpeg"
    image = bright_left_image()
    image.save(path, quality=95, exif=with_orientation(image, 6))
    pixels, size, _ = decode_resized(path, SIZE)
    assert size == (64, 48)  # as stored in the file
    assert pixels[: SIZE // 4].mean() > 200 and pixels[-SIZE // 4 :].mean() < 50


def test_pil_image_with_exif_orientation_is_turned_upright():
    """predict_image's PIL path (to_grayscale) also honours the orientation of an opened photo."""
    image = bright_left_image()
    image.info["exif"] = with_orientation(image, 8).tobytes()
    gray = np.asarray(to_grayscale(image))
    assert gray.shape == (64, 48)
    # orientation 8: the stored left edge ends at the bottom
    assert gray[-8:].mean() > 200 and gray[:8].mean() < 50


def test_float_tiff_in_unit_range_is_scaled_by_255(tmp_path):
    """A float TIFF with values in [0, 1] decodes with its real brightness, not almost black."""
    gray = np.asarray(read_xray(write_float_tiff(tmp_path / "unit.tif", 0.25, 1.0)))
    assert abs(int(gray[0, 0]) - 64) <= 1 and gray[0, -1] == 255


def test_float_tiff_beyond_unit_range_is_scaled_by_its_range(tmp_path):
    """A float TIFF of other values (say -1000 to 3000) maps its minimum to black.

    Its maximum goes to white.
    """
    gray = np.asarray(read_xray(write_float_tiff(tmp_path / "wide.tif", -1000.0, 3000.0)))
    assert gray[0, 0] == 0 and gray[0, -1] == 255


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_float_tiff_with_nan_or_inf_is_refused_naming_the_file(tmp_path, bad):
    """Float pixels that are NaN or infinite cannot be scaled.

    The DataError names the file and the reason.
    """
    path = write_float_tiff(tmp_path / "broken.tif", 0.5, bad)
    with pytest.raises(DataError, match="NaN|infinite") as caught:
        read_xray(path)
    assert str(path) in str(caught.value)


# -------------------------------------------------------------------- file names that are not UTF-8


def _non_utf8(folder: Path, raw_name: bytes) -> Path:
    """The path of a file whose name is the given bytes (not valid UTF-8).

    Skips where the file system refuses.
    """
    raw = os.path.join(os.fsencode(folder), raw_name)
    try:
        os.close(os.open(raw, os.O_CREAT | os.O_WRONLY, 0o644))
    except (OSError, UnicodeError):
        pytest.skip("this file system does not allow file names that are not UTF-8")
    return Path(os.fsdecode(raw))


def test_display_path_shows_bytes_that_are_not_utf8():
    """display_path turns undecodable bytes into \\xNN text that can be printed and encoded."""
    shown = display_path(Path(os.fsdecode(b"/data/IM-\xff-0001.jpeg")))
    assert shown == "/data/IM-\\xff-0001.jpeg"
    shown.encode("utf-8")  # would raise UnicodeEncodeError for the raw name


def test_prepare_data_works_with_file_names_that_are_not_utf8(tiny_root, tmp_path, decode_calls):
    """A readable file with a non-UTF-8 name is used.

    A broken one is skipped with a printable warning; cache and split are reused.
    """
    good = _non_utf8(tiny_root / "train" / "NORMAL", b"IM-0042-0001-\xff\xfe.jpeg")
    write_jpeg(good, seed=42)
    bad = _non_utf8(tiny_root / "train" / "PNEUMONIA", b"person42_virus_\xe9.jpeg")
    write_truncated_jpeg(bad)
    before = snapshot(tiny_root)
    run_dir = tmp_path / "run"
    for _ in range(2):
        with pytest.warns(UserWarning) as caught:
            splits = cxr.prepare_data(tiny_root, run_dir, image_size=SIZE, seed=0, progress=False)
        messages = "\n".join(str(w.message) for w in caught)
        assert display_path(bad) in messages
        messages.encode("utf-8")  # the warning itself is printable
    assert good in splits["train"].paths + splits["val"].paths
    assert len(decode_calls) == 4  # the second round decoded nothing: every cache file matched
    split_file = json.loads((run_dir / "split-seed0.json").read_text())
    assert os.path.relpath(good, tiny_root) in split_file["train"] + split_file["val"]
    summary = records.dataset_summary(tiny_root, False, splits)
    assert len(summary["file_list_sha256"]) == 64
    assert snapshot(tiny_root) == before
