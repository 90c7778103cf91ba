"""Support code: decoding image files of any mode to 8-bit grayscale (lessons need not read this).

Hostile or odd files end in a ``DataError`` that names the file: images that declare more
pixels than Pillow's safety limit (``Image.MAX_IMAGE_PIXELS``), damaged files, float images
with NaN or infinite values. Films stored rotated (EXIF orientation) are turned upright, and
wide (16-bit, 32-bit, float) images are converted in slices, never as full-size float copies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxr_support.dataset import DataError, display_path

WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_ROWS_PER_SLICE = 256  # wide images are scaled this many rows at a time (float32), to bound memory

# EXIF orientation -> the transposition that shows the image upright (as ImageOps.exif_transpose does)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _open_xray(path: Path, draft_size: int | None) -> tuple[Image.Image, tuple[int, int], str]:
    """(8-bit grey image, stored size, stored mode) of a file; any failure becomes a DataError naming the file."""
    try:
        with Image.open(path) as image:
            original_size, original_mode = image.size, image.mode
            if draft_size and image.format == "JPEG":
                image.draft("L", (draft_size, draft_size))
            image.load()
            return to_grayscale(image), original_size, original_mode
    except Image.DecompressionBombError as err:
        raise DataError(
            f"Refusing to decode {display_path(path)}: {err} Shrink the file, move it out of the dataset, or, if you trust it, "
            "raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from err
    except Exception as err:  # damaged or hostile files raise many kinds of errors: each names its file
        raise DataError(
            f"Cannot read image {display_path(path)}: {type(err).__name__}: {err}. Delete or replace the file, or move it out of the dataset."
        ) from err


def read_xray(path: Path | str, draft_size: int | None = None) -> Image.Image:
    """Open any image file as 8-bit grayscale ('L'); JPEGs decode at a reduced scale when ``draft_size`` allows.

    Handles RGB, RGBA, CMYK, palette, 16-bit and float files and EXIF orientation;
    raises ``DataError`` naming the file when it is not a readable image.
    """
    return _open_xray(Path(path), draft_size)[0]


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8) of an image; 1 (as stored) when it has none or it is damaged."""
    try:
        return int(image.getexif().get(0x0112, 1))  # 0x0112: the EXIF Orientation tag
    except Exception:  # a damaged EXIF block is ignored, as viewers do
        return 1


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float pixels to 8-bit, a slice of rows at a time (never a full-size float copy)."""
    # Integers: by the smallest of 8, 12 or 16 bits that holds them (12-bit detector data in 16-bit files is not
    # left near black). Floats in [0, 1]: by 255. Anything else (negative, floats beyond 1, over 16 bits): by its range.
    width, height = image.size
    if width * height == 0:
        return Image.new("L", image.size)
    low, high = (float(v) for v in image.getextrema())  # Pillow skips NaN here: each slice is checked below
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ValueError("its float pixels include infinite values")
    floating = image.mode == "F"
    if floating and low >= 0 and high <= 1:
        low, top = 0.0, 1.0
    elif not floating and low >= 0 and high <= 65535:
        low, top = 0.0, 255.0 if high <= 255 else 4095.0 if high <= 4095 else 65535.0
    else:
        top = high if high > low else low + 1.0
    scale = 255.0 / (top - low)
    out = np.empty((height, width), np.uint8)
    for start in range(0, height, _ROWS_PER_SLICE):
        rows = np.asarray(image.crop((0, start, width, min(height, start + _ROWS_PER_SLICE))), dtype=np.float32)
        if floating and not np.isfinite(rows).all():
            raise ValueError("its float pixels include NaN (not-a-number) values")
        out[start : start + _ROWS_PER_SLICE] = np.clip((rows - low) * scale + 0.5, 0, 255)
    return Image.fromarray(out, mode="L")


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Grey of an image with transparency, laid on black: grey x alpha / 255, in 8-bit planes only."""
    from PIL import ImageChops

    if image.mode not in {"RGBA", "LA"}:
        image = image.convert("RGBA")
    return ImageChops.multiply(image.convert("L"), image.getchannel("A"))


def to_grayscale(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit grayscale, upright by its EXIF orientation.

    Wide (16-bit, 32-bit, float) images are scaled by the smallest of 8, 12 or 16 bits that
    holds their values, float images in [0, 1] by 255 (see ``_wide_to_8bit``); transparent
    areas become black.
    """
    orientation = _exif_orientation(image)
    if image.mode in WIDE_MODES:
        gray = _wide_to_8bit(image)
    elif image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        gray = _composite_on_black(image)
    else:
        gray = (image.convert("RGB") if image.mode == "CMYK" else image).convert("L")
    return gray.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else gray


def decode_resized(path: Path | str, image_size: int) -> tuple[np.ndarray, tuple[int, int], str]:
    """Decode one file to a (size x size) uint8 array with an antialiased resize; also its original size and mode."""
    image, original_size, original_mode = _open_xray(Path(path), draft_size=image_size)
    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image), original_size, original_mode
