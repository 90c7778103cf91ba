"""Support code: decoding image files of any mode to 8-bit grayscale (lessons need not read this).

Every mode Pillow opens reads as grey (the rule per mode is in ``to_grayscale``). Hostile or
odd files end in a ``DataError`` that names the file: images that declare more than twice
Pillow's safety limit (``Image.MAX_IMAGE_PIXELS``; between one and two times it only warns),
damaged files, float images with NaN or
infinite values, a pixel mode with no conversion to grey. Films stored rotated (EXIF
orientation) are turned upright, and wide (16-bit, 32-bit, float) images are converted in
slices, never as full-size float copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_support.errors import DataError
from cxr_support.paths import display_path

WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_BYTE_ORDER_16 = frozenset({"I;16B", "I;16L", "I;16N"})  # 16-bit modes Pillow's getextrema refuses
# wide images are scaled this many rows at a time (float32), to bound memory
_ROWS_PER_SLICE = 256

# EXIF orientation -> the transposition that shows the image upright
# (as ImageOps.exif_transpose does)
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
    """(8-bit grey image, stored size, stored mode) of a file.

    Any failure becomes a DataError naming the file.
    """
    try:
        with Image.open(path) as image:
            original_size, original_mode = image.size, image.mode
            if draft_size and image.format == "JPEG":
                image.draft("L", (draft_size, draft_size))
            image.load()
            return to_grayscale(image), original_size, original_mode
    except Image.DecompressionBombError as err:
        raise DataError(
            f"Refusing to decode {display_path(path)}: {err} "
            "Shrink the file, move it out of the dataset, or, if you trust it, "
            "raise PIL.Image.MAX_IMAGE_PIXELS."
        ) from err
    # damaged or hostile files raise many kinds of errors: each names its file
    except Exception as err:
        raise DataError(
            f"Cannot read image {display_path(path)}: {type(err).__name__}: {err}. "
            "Delete or replace the file, or move it out of the dataset."
        ) from err


def read_xray(path: Path | str, draft_size: int | None = None) -> Image.Image:
    """Open any image file as 8-bit grayscale ('L').

    JPEGs decode at a reduced scale when ``draft_size`` allows. Handles every mode Pillow opens
    (rules in ``to_grayscale``) and EXIF orientation; raises ``DataError`` naming the file when
    it is not a readable image.
    """
    return _open_xray(Path(path), draft_size)[0]


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 to 8) of an image; 1 (as stored) when it has none or is damaged."""
    try:
        return int(image.getexif().get(0x0112, 1))  # 0x0112: the EXIF Orientation tag
    except Exception:  # a damaged EXIF block is ignored, as viewers do
        return 1


def _row_slices(image: Image.Image) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, pixels in the image's own number type) of each slice of rows of an image."""
    width, height = image.size
    for start in range(0, height, _ROWS_PER_SLICE):
        yield start, np.asarray(
            image.crop((0, start, width, min(height, start + _ROWS_PER_SLICE))))


def _extrema(image: Image.Image) -> tuple[float, float]:
    """Smallest and largest pixel value; by slices where Pillow's getextrema refuses the mode."""
    if image.mode not in _BYTE_ORDER_16:
        low, high = image.getextrema()  # Pillow skips NaN here: each slice is checked later
        return float(low), float(high)
    lows, highs = zip(*((rows.min(), rows.max()) for _, rows in _row_slices(image)))
    return float(min(lows)), float(max(highs))


def _wide_to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer or float pixels to 8-bit, a slice of rows at a time.

    Never a full-size float copy.
    """
    # Integers in [0, 65535]: the full scale of the smallest of 8, 12 or 16 bits that holds them is
    # white (12-bit detector data in 16-bit files is not left near black). Floats in [0, 1]: 1 is
    # white. Anything else (negative values, floats beyond 1, integers over 65535): lowest value
    # black, highest white (a flat image of such values reads black).
    width, height = image.size
    if width * height == 0:
        return Image.new("L", image.size)
    low, high = _extrema(image)
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
    for start, pixels in _row_slices(image):
        rows = pixels.astype(np.float32)
        if floating and not np.isfinite(rows).all():
            raise ValueError("its float pixels include NaN (not-a-number) values")
        out[start : start + _ROWS_PER_SLICE] = np.clip((rows - low) * scale + 0.5, 0, 255)
    return Image.fromarray(out, mode="L")


def _composite_on_black(image: Image.Image) -> Image.Image:
    """Grey of an image with transparency, laid on black: grey x alpha / 255.

    In 8-bit planes only.
    """
    from PIL import ImageChops

    if image.mode not in {"RGBA", "LA"}:
        image = image.convert("RGBA")
    return ImageChops.multiply(image.convert("L"), image.getchannel("A"))


def _opaque_to_8bit(image: Image.Image) -> Image.Image:
    """Grey of an image without transparency or wide pixels; CMYK and LAB by way of sRGB."""
    if image.mode == "LAB":  # Pillow's convert has no LAB to RGB: Little CMS does it
        from PIL import ImageCms

        lab, srgb = ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB")
        image = ImageCms.profileToProfile(image, lab, srgb, outputMode="RGB")
    elif image.mode == "CMYK":
        image = image.convert("RGB")
    try:
        return image.convert("L")
    except ValueError as err:
        raise ValueError(
            f"its pixel mode {image.mode!r} has no conversion to grey; save it as 8- or 16-bit "
            "grey (Pillow mode 'L' or 'I;16', e.g. a grey PNG)"
        ) from err


def to_grayscale(image: Image.Image) -> Image.Image:
    """Convert a PIL image of any mode to 8-bit grayscale, upright by its EXIF orientation.

    '1' reads 0 or 255; 'L' as it is; 'P', 'RGB', 'HSV', 'CMYK' and the rest by Pillow's
    luma of their RGB colours (R = G = B reads as that value); 'YCbCr' by its Y (luma);
    'LAB' by the luma of its sRGB colours (Little CMS). Transparent modes ('LA', 'PA',
    'RGBA', 'P' with a transparent colour) are laid on black: grey x alpha / 255. Wide modes
    ('I;16', 'I;16B', 'I;16L', 'I;16N', 'I', 'F'): integers in [0, 65535] map the full scale
    of the smallest of 8, 12 or 16 bits that holds them to 255, floats in [0, 1] map 1 to
    255, anything else maps its lowest value to 0 and its highest to 255 (``_wide_to_8bit``).
    A mode Pillow cannot turn into grey ('La') raises ``ValueError`` naming the mode and the
    fix.
    """
    orientation = _exif_orientation(image)
    if image.mode in WIDE_MODES:
        gray = _wide_to_8bit(image)
    elif (image.mode in {"RGBA", "LA", "PA"}
          or (image.mode == "P" and "transparency" in image.info)):
        gray = _composite_on_black(image)
    else:
        gray = _opaque_to_8bit(image)
    return gray.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else gray


def resize_square(image: Image.Image, image_size: int) -> Image.Image:
    """The series' one resize: to ``image_size`` x ``image_size`` pixels, bilinear and antialiased.

    Pillow's BILINEAR filter widens with the reduction, so every source pixel counts (the blog
    post's NEAREST kept one in many). A square squashes the aspect ratio, as the blog post did.
    The pixel cache, the per-file transforms and ``predict_image`` all resize with it.
    """
    return image.resize((image_size, image_size), Image.Resampling.BILINEAR)


def decode_resized(source: Path | str | Image.Image,
                   image_size: int) -> tuple[np.ndarray, tuple[int, int], str]:
    """A file (or an opened image) as a (size x size) uint8 array, resized by ``resize_square``.

    Also returns its original size and mode. A file is read as ``read_xray`` reads it (JPEGs
    drafted near ``image_size``); an opened image is taken as it is, turned grey. The array is
    writable (its own memory), so ``torch.from_numpy`` takes it without a warning.
    """
    if isinstance(source, Image.Image):
        image, original_size, original_mode = to_grayscale(source), source.size, source.mode
    else:
        image, original_size, original_mode = _open_xray(Path(source), draft_size=image_size)
    return np.array(resize_square(image, image_size)), original_size, original_mode
