"""Support code: decoding image files of any mode to 8-bit grayscale (lessons need not read this)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cxr_support.dataset import DataError


def _open_xray(path: Path, draft_size: int | None) -> tuple[Image.Image, tuple[int, int], str]:
    try:
        with Image.open(path) as image:
            original_size, original_mode = image.size, image.mode
            if draft_size and image.format == "JPEG":
                image.draft("L", (draft_size, draft_size))
            image.load()
            return to_grayscale(image), original_size, original_mode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"Cannot read image {path}: {err}. Delete or replace the file, or move it out of the dataset.") from err


def read_xray(path: Path | str, draft_size: int | None = None) -> Image.Image:
    """Open any image file as 8-bit grayscale ('L'); JPEGs decode at a reduced scale when ``draft_size`` allows.

    Handles RGB, RGBA, CMYK, palette and 16-bit files;
    raises ``DataError`` naming the file when it is not a readable image.
    """
    return _open_xray(Path(path), draft_size)[0]


def to_grayscale(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit grayscale.

    Wide (16-bit, 32-bit, float) images are scaled by the smallest of 8, 12 or 16 bits that
    holds their values, so 12-bit detector data stored in 16-bit files is not left near black.
    """
    if image.mode in {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        peak = array.max(initial=0)
        top = 255.0 if peak <= 255 else 4095.0 if peak <= 4095 else 65535.0
        return Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode == "CMYK":
        image = image.convert("RGB")
    return image.convert("L")


def decode_resized(path: Path | str, image_size: int) -> tuple[np.ndarray, tuple[int, int], str]:
    """Decode one file to a (size x size) uint8 array with an antialiased resize; also its original size and mode."""
    image, original_size, original_mode = _open_xray(Path(path), draft_size=image_size)
    image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(image), original_size, original_mode
