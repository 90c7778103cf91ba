"""Support code: another hospital's films for notebook 06's external check (lessons need not read
this).

``CXR_EXTERNAL_DIR`` names a folder with one folder of images per class, named as the classes the
model was trained on (``NORMAL/`` and ``PNEUMONIA/``), either directly or inside a ``test/``
folder. The folder is only read: decoded pixels are cached in the run dir like every split.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cxr_support.dataset import list_split, warn_skipped
from cxr_support.errors import DataError
from cxr_support.paths import display_path
from cxr_support.pixel_cache import XraySplit, load_pixels


def load_external(folder: Path, class_names: Sequence[str], image_size: int,
                  cache_dir: Path | None) -> XraySplit:
    """Every film of ``folder``'s class folders, decoded once (cached in ``cache_dir``).

    A one-line DataError when the folder is missing, has other class folders or no images, or
    holds files that do not decode: an external check must judge every film it is given.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"CXR_EXTERNAL_DIR={display_path(folder)} is not a folder: point it at a "
                        f"folder with {' and '.join(class_names)}/ inside.")
    root = folder / "test" if (folder / "test").is_dir() else folder
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if sorted(class_names) != found:
        raise DataError(f"CXR_EXTERNAL_DIR: {display_path(root)} must hold the model's class "
                        f"folders {', '.join(class_names)}; found {', '.join(found) or 'none'}.")
    samples, skipped = list_split(root.parent, root.name, class_names)
    warn_skipped(skipped, "non-image files in CXR_EXTERNAL_DIR")
    split = load_pixels("external", samples, image_size, cache_dir, progress=False,
                        class_names=class_names)
    if split.skipped:
        first, reason = split.skipped[0]
        raise DataError(f"CXR_EXTERNAL_DIR: {len(split.skipped)} of {len(samples)} files do not "
                        f"decode, first {display_path(first)} ({reason}): remove or replace them.")
    return split
