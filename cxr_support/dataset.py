"""Support code: finding and listing the dataset's files (lessons need not read this).

The Kaggle layout is ``chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}``; another binary X-ray
folder in that layout works too, its two class names read from ``train/``
(``find_class_names``). Downloading it is ``cxr_support.download``'s concern. Bad input gets
a ``DataError`` naming the path and the fix; files that are not images are skipped with a
warning that lists them. The saved patient split also lives here.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cxr_support import synthetic
from cxr_support.atomic_files import atomic_write_text, remove_stale_temporaries
from cxr_support.download import locate_dataset_root
from cxr_support.errors import DataError
from cxr_support.names import CLASS_NAMES, SPLIT_FOLDERS
from cxr_support.paths import PROJECT_ROOT, display_path

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff"})
# 2: patient ids per class for names without a patient pattern; a saved split of another format
# is made again
SPLIT_FORMAT = 2
KAGGLE_MOUNT = Path("/kaggle/input/chest-xray-pneumonia/chest_xray")


def default_data_dirs() -> list[Path]:
    """Places searched for the dataset when CXR_DATA_DIR is unset, each once (the project's
    data/ is the working folder's when a script runs from the project folder)."""
    places = [PROJECT_ROOT / "data", Path.cwd() / "data", KAGGLE_MOUNT.parent]
    return list({place.resolve(): place for place in places}.values())


def find_dataset(data_dir: Path | None) -> Path | None:
    """Return the real dataset's root.

    Either the given folder (or an error) or the first default that has it.
    """
    if data_dir is not None:
        data_dir = Path(data_dir)
        root = locate_dataset_root(data_dir)
        if root is None:
            looked = ", ".join(str(p) for p in (data_dir, data_dir / "chest_xray",
                                                data_dir / "chest_xray" / "chest_xray"))
            raise DataError(
                f"CXR_DATA_DIR={data_dir} does not hold the dataset: "
                f"no train/ and test/ folders in {looked}. "
                "Point CXR_DATA_DIR at the unpacked 'chest_xray' folder "
                "(see the README, 'Getting the real data'), "
                "or unset it to use the synthetic sample."
            )
        return root
    for place in default_data_dirs():
        root = locate_dataset_root(place)
        if root is not None:
            return root
    return None


def resolve_dataset(data_dir: Path | None, run_dir: Path, seed: int = 42) -> tuple[Path, bool]:
    """Return (dataset root, is_synthetic).

    The real data if found, else the synthetic sample, loudly. ``data_dir`` is CXR_DATA_DIR
    (None: search the defaults).
    """
    root = find_dataset(data_dir)
    if root is not None:
        print(f"Using the dataset at {root}")
        return root, False
    root = synthetic.make_synthetic_dataset(Path(run_dir) / "synthetic", seed=seed)
    looked = ", ".join(str(p) for p in default_data_dirs())
    print(
        "=" * 78 + "\n"
        "SYNTHETIC DATA: no chest X-ray dataset was found, so this run uses a small synthetic\n"
        "sample drawn to look like chest radiographs. Numbers from it say nothing about\n"
        "real X-rays. To use the real Kaggle data, download it (README, 'Getting the real\n"
        "data') and set CXR_DATA_DIR, or unpack it into data/.\n"
        f"Looked in: {looked}\n"
        f"Synthetic sample: {root}\n" + "=" * 78
    )
    return root, True


_JUNK_NAMES = {"thumbs.db", "desktop.ini"}


def find_class_names(root: Path, positive: str = "PNEUMONIA") -> tuple[str, str]:
    """(negative, positive): the two class folders of ``train/``.

    The one named ``positive`` (CXR_POSITIVE_CLASS) comes last.
    """
    train_dir = Path(root) / "train"
    if not train_dir.is_dir():
        raise DataError(f"Missing split folder {train_dir}. The dataset must have "
                        f"{'/'.join(SPLIT_FOLDERS)}/ with one folder per class inside each.")
    found = sorted(p.name for p in train_dir.iterdir()
                   if p.is_dir() and not p.name.startswith((".", "__MACOSX")))
    shown = ", ".join(display_path(name) for name in found) or "none"
    if len(found) != 2:
        raise DataError(f"{train_dir} must hold exactly two class folders "
                        f"(such as NORMAL and PNEUMONIA); found {len(found)}: {shown}.")
    same_but_case = [name for name in found if name.lower() == positive.lower()]
    if positive not in found and len(same_but_case) == 1:
        positive = same_but_case[0]  # a pneumonia/ folder works with the default PNEUMONIA too
    if positive not in found:
        raise DataError(
            f"CXR_POSITIVE_CLASS={positive} is not a class folder of {train_dir} (found {shown}). "
            "Set CXR_POSITIVE_CLASS to the folder of the class the model should detect."
        )
    return (found[0] if found[1] == positive else found[1], positive)


def list_split(
    root: Path, split: str, class_names: Sequence[str] = CLASS_NAMES, required: bool = True
) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """List (path, label) for one split folder, and the (path, reason) of every file skipped.

    The label is the position in ``class_names``. A split that is not ``required`` (Kaggle's
    val/, which the series does not use) may be missing: then both lists are empty.
    """
    split_dir = Path(root) / split
    if not split_dir.exists() and not required:
        return [], []
    if not split_dir.is_dir():
        raise DataError(
            f"Missing split folder {split_dir}. "
            f"The dataset must have {'/'.join(SPLIT_FOLDERS)}/ with "
            f"{' and '.join(class_names)}/ inside each; re-download or re-unpack it."
        )
    samples, skipped = [], []
    for label, class_name in enumerate(class_names):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            raise DataError(f"Missing class folder {class_dir}; "
                            f"expected {' and '.join(class_names)} in {split_dir}.")
        found = 0
        for path in sorted(class_dir.iterdir()):
            if path.is_dir():
                skipped.append((path, "a folder, not an image"))
            elif path.name.startswith(".") or path.name.lower() in _JUNK_NAMES:
                skipped.append((path, "hidden or system file"))
            elif path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append((path, f"not an image file name ({path.suffix or 'no suffix'})"))
            elif path.stat().st_size == 0:
                skipped.append((path, "empty file"))
            else:
                samples.append((path, label))
                found += 1
        if found == 0:
            raise DataError(f"Class folder {class_dir} has no images. "
                            "Check that the download or unpacking finished.")
    return samples, skipped


def warn_skipped(skipped: Sequence[tuple[Path | str, str]], what: str = "files") -> None:
    """Warn once, listing every skipped file with its reason."""
    if skipped:
        lines = "\n".join(f"  {display_path(path)}: {reason}" for path, reason in skipped[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        warnings.warn(f"Skipped {len(skipped)} {what}:\n{lines}{more}", stacklevel=2)


def file_list_sha256(paths: Iterable[Path], root: Path) -> str:
    """SHA-256 of a list of file paths relative to ``root``.

    It changes when any file is added, removed or renamed.
    """
    digest = hashlib.sha256()
    for path in paths:
        # the file system's bytes: any name works
        digest.update(os.fsencode(Path(path).relative_to(root)) + b"\0")
    return digest.hexdigest()


def load_or_make_split(
    samples: Sequence[tuple[Path, int]],
    root: Path,
    run_dir: Path,
    seed: int,
    make_split: Callable[[Sequence[tuple[Path, int]], float, int], tuple[list[int], list[int]]],
    val_fraction: float = 0.1,
) -> tuple[list[int], list[int]]:
    """Make the split with ``make_split`` (cheap and seeded) and keep it in the run dir.

    The file records which files a run validated on. It is rewritten only when it differs: a
    new file list, or a changed patient rule (say a new pattern in ``PATIENT_PATTERNS``), which
    a reused file would silently ignore; the second case is announced with a warning.
    """
    path = Path(run_dir) / f"split-seed{seed}.json"
    # e.g. a split file's, left by a process killed while writing it
    remove_stale_temporaries(Path(run_dir))
    fingerprint = file_list_sha256((p for p, _ in samples), root)[:16]
    rel = [str(Path(p).relative_to(root)) for p, _ in samples]
    train_idx, val_idx = make_split(samples, val_fraction, seed)
    saved = _read_saved_split(path)
    if (saved.get("format") == SPLIT_FORMAT and saved.get("fingerprint") == fingerprint
            and saved.get("val_fraction") == val_fraction):
        if sorted(saved["val"]) == sorted(rel[i] for i in val_idx):
            return train_idx, val_idx  # the saved split is this one: nothing to write
        warnings.warn(f"{path} was made for the same files by another patient rule; replacing "
                      "it with the split the current rule makes.", stacklevel=2)
    record = {
        "format": SPLIT_FORMAT,
        "seed": seed,
        "val_fraction": val_fraction,
        "fingerprint": fingerprint,
        "dataset_root": str(root),
        "val": [rel[i] for i in val_idx],
        "train": [rel[i] for i in train_idx],
    }
    try:
        # JSON escapes names that are not UTF-8: they round-trip
        atomic_write_text(path, json.dumps(record, indent=1))
    except OSError as err:
        # the split is recomputed identically from the seed: saving it is a convenience
        warnings.warn(f"{err}. Carrying on with the split in memory; "
                      "it is made again, identically, next time.", stacklevel=2)
    return train_idx, val_idx


def _read_saved_split(path: Path) -> dict:
    """A saved split file's content, or {} when it is missing or damaged (then made again)."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        warnings.warn(f"Ignoring unreadable split file {path} ({err}); making the split again.",
                      stacklevel=3)
        return {}
    valid = (isinstance(saved, dict) and isinstance(saved.get("val"), list)
             and all(isinstance(v, str) for v in saved["val"]))
    return saved if valid else {}


def stratified_subset(samples: Sequence[tuple[Path, int]], indices: list[int], cap: int | None,
                      seed: int) -> list[int]:
    """At most ``cap`` of ``indices``, drawn at random per class in proportion to class sizes."""
    if cap is None or len(indices) <= cap:
        return indices
    by_class = [[i for i in indices if samples[i][1] == label]
                for label in sorted({samples[i][1] for i in indices})]
    exact = [cap * len(members) / len(indices) for members in by_class]
    shares = [math.floor(x) for x in exact]
    # largest remainders first, so the shares add up to cap exactly
    for label in sorted(range(len(exact)), key=lambda k: exact[k] - shares[k],
                        reverse=True)[: cap - sum(shares)]:
        shares[label] += 1
    rng = random.Random(seed)
    return sorted(i for members, share in zip(by_class, shares)
                  for i in rng.sample(members, share))
