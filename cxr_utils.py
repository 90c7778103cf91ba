"""Shared helpers for the chest X-ray transfer-learning series.

Each notebook in ``notebooks/`` introduces a few of these helpers and explains them; the
docstrings say which one. The module does no work at import time: every helper takes
its device and settings as arguments, and only the notebooks read the config.

Sections: config · data (find, synthetic sample, patient split, transforms, decode-once
cache, loaders) · preview plots · device · model · training · checkpoints · evaluation
and metrics · explanation (Grad-CAM) · run records and Jovian · teaching demos.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError

CLASS_NAMES = ("NORMAL", "PNEUMONIA")
SPLIT_FOLDERS = ("train", "val", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".bmp", ".tif", ".tiff"})
KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"
KAGGLE_MOUNT = Path("/kaggle/input/chest-xray-pneumonia/chest_xray")
CACHE_FORMAT = 1
CHECKPOINT_FORMAT = 1
SYNTHETIC_VERSION = 1
PROJECT_ROOT = Path(__file__).resolve().parent


# ----------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run, with where each value came from (Introduced in 01_data_preview.ipynb)."""

    data_dir: Path | None
    quick: bool
    seed: int
    image_size: int
    batch_size: int
    epochs: int
    max_lr: float
    pretrained: str
    train_mode: str
    max_images: int | None
    weights_file: Path | None
    run_dir: Path
    sources: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def show(self) -> None:
        """Print the config as a small table: name, value, source."""
        print(f"{'setting':<15} {'value':<40} source")
        for field in dataclasses.fields(self):
            if field.name == "sources":
                continue
            value = getattr(self, field.name)
            shown = "(auto)" if value is None and field.name == "data_dir" else str(value)
            print(f"{field.name:<15} {shown:<40} {self.sources.get(field.name, 'default')}")

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-friendly values (paths as strings)."""
        out = {}
        for field in dataclasses.fields(self):
            if field.name != "sources":
                value = getattr(self, field.name)
                out[field.name] = str(value) if isinstance(value, Path) else value
        return out


# name -> (environment variable, parser)
def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected 1/0/true/false, got {text!r}")


def _parse_choice(*choices: str):
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def _parse_path(text: str) -> Path:
    """A path from the environment; relative ones are taken from the project folder, as notebooks run in notebooks/."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def _parse_optional_int(text: str) -> int | None:
    if text.strip().lower() in {"", "none", "all"}:
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive number or 'all', got {text!r}")
    return value


_ENV = {
    "data_dir": ("CXR_DATA_DIR", _parse_path),
    "quick": ("CXR_QUICK", _parse_bool),
    "seed": ("CXR_SEED", int),
    "image_size": ("CXR_IMAGE_SIZE", int),
    "batch_size": ("CXR_BATCH_SIZE", int),
    "epochs": ("CXR_EPOCHS", int),
    "max_lr": ("CXR_MAX_LR", float),
    "pretrained": ("CXR_PRETRAINED", _parse_choice("auto", "1", "0")),
    "train_mode": ("CXR_TRAIN_MODE", _parse_choice("auto", "finetune", "feature_extractor")),
    "max_images": ("CXR_MAX_IMAGES", _parse_optional_int),
    "weights_file": ("CXR_WEIGHTS_FILE", _parse_path),
    "run_dir": ("CXR_RUN_DIR", _parse_path),
}

# Full run (a GPU, the real data) and quick run (CI, a CPU laptop): same code, other sizes.
FULL_DEFAULTS = {"image_size": 224, "batch_size": 64, "epochs": 8, "max_lr": 3e-4, "max_images": None}
QUICK_DEFAULTS = {"image_size": 64, "batch_size": 32, "epochs": 6, "max_lr": 2e-3, "max_images": 400}


def load_config(environ: dict[str, str] | None = None, **overrides: Any) -> Config:
    """Build the run's config from CXR_* environment variables, notebook overrides and defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (var, parse) in _ENV.items():
        if overrides.get(name) is not None:
            value = overrides[name]
            try:
                values[name] = parse(value) if isinstance(value, str) else value
            except ValueError as err:
                raise ValueError(f"{name}={value!r} is not valid: {err}") from None
            sources[name] = "notebook parameter"
        elif env.get(var, "").strip():
            try:
                values[name] = parse(env[var])
            except ValueError as err:
                raise ValueError(f"{var}={env[var]!r} is not valid: {err}") from None
            sources[name] = f"env {var}"
    if "quick" not in values:
        values["quick"] = not torch.cuda.is_available()
        sources["quick"] = "auto (no CUDA device)" if values["quick"] else "auto (CUDA device found)"
    defaults = QUICK_DEFAULTS if values["quick"] else FULL_DEFAULTS
    for name, value in {
        **defaults,
        "data_dir": None,
        "seed": 42,
        "pretrained": "auto",
        "train_mode": "auto",
        "weights_file": None,
        "run_dir": PROJECT_ROOT / "runs",
    }.items():
        if name not in values:
            values[name] = value
            sources[name] = ("quick default" if values["quick"] else "full default") if name in defaults else "default"
    for name in ("image_size", "batch_size", "epochs"):
        if values[name] < 1:
            raise ValueError(f"{_ENV[name][0]} must be a positive integer, got {values[name]}")
    if values["image_size"] < 32:
        raise ValueError(f"CXR_IMAGE_SIZE must be at least 32 for a ResNet50, got {values['image_size']}")
    return Config(**values, sources=sources)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so reruns match (Introduced in 02_training_on_gpu.ipynb)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- data: finding it


class DataError(Exception):
    """A problem with the dataset folder; the message names the path and the fix."""


def decode_label(label_number: int) -> str:
    """Turn a label number (0 or 1) into its class name, as in the blog post."""
    return CLASS_NAMES[int(label_number)]


def _looks_like_root(path: Path) -> bool:
    return all((path / split).is_dir() for split in ("train", "test"))


def locate_dataset_root(path: Path) -> Path | None:
    """Find the folder holding train/ and test/ at or below ``path`` (the Kaggle zip nests it twice)."""
    for candidate in (path, path / "chest_xray", path / "chest_xray" / "chest_xray"):
        if candidate.is_dir() and candidate.name != "__MACOSX" and _looks_like_root(candidate):
            return candidate
    return None


def default_data_dirs() -> list[Path]:
    """Places searched for the dataset when CXR_DATA_DIR is unset."""
    return [PROJECT_ROOT / "data", Path.cwd() / "data", KAGGLE_MOUNT.parent]


def find_dataset(data_dir: Path | None) -> Path | None:
    """Return the real dataset's root: the given folder (or an error) or the first default that has it."""
    if data_dir is not None:
        data_dir = Path(data_dir)
        root = locate_dataset_root(data_dir)
        if root is None:
            looked = ", ".join(str(p) for p in (data_dir, data_dir / "chest_xray", data_dir / "chest_xray" / "chest_xray"))
            raise DataError(
                f"CXR_DATA_DIR={data_dir} does not hold the dataset: no train/ and test/ folders in {looked}. "
                "Point CXR_DATA_DIR at the unpacked 'chest_xray' folder (see the README, 'Getting the real data'), "
                "or unset it to use the synthetic sample."
            )
        return root
    for place in default_data_dirs():
        root = locate_dataset_root(place)
        if root is not None:
            return root
    return None


def resolve_dataset(data_dir: Path | None, run_dir: Path, seed: int = 42) -> tuple[Path, bool]:
    """Return (dataset root, is_synthetic): the real data if found, else the synthetic sample, loudly.

    Introduced in 01_data_preview.ipynb. ``data_dir`` is CXR_DATA_DIR (None: search the defaults).
    """
    root = find_dataset(data_dir)
    if root is not None:
        print(f"Using the dataset at {root}")
        return root, False
    root = make_synthetic_dataset(Path(run_dir) / "synthetic", seed=seed)
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


def download_dataset(target_dir: Path) -> Path:
    """Download the Kaggle dataset with kagglehub (needs internet and Kaggle credentials)."""
    try:
        import kagglehub
    except ImportError as err:
        raise RuntimeError("kagglehub is not installed: pip install kagglehub") from err
    cached = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    root = locate_dataset_root(cached)
    if root is None:
        raise DataError(f"Downloaded {KAGGLE_DATASET} to {cached} but found no chest_xray/train and test there.")
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    link = target_dir / "chest_xray"
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    print(f"Dataset ready at {link} (files live in kagglehub's cache: {root})")
    return link


# ----------------------------------------------------------------------------- data: listing files

_JUNK_NAMES = {"thumbs.db", "desktop.ini"}


def list_split(root: Path, split: str) -> tuple[list[tuple[Path, int]], list[tuple[Path, str]]]:
    """List (path, label) for one split folder, and the (path, reason) of every file skipped."""
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(
            f"Missing split folder {split_dir}. The dataset must have {'/'.join(SPLIT_FOLDERS)}/ with "
            f"{' and '.join(CLASS_NAMES)}/ inside each; re-download or re-unpack it."
        )
    samples, skipped = [], []
    for label, class_name in enumerate(CLASS_NAMES):
        class_dir = split_dir / class_name
        if not class_dir.is_dir():
            raise DataError(f"Missing class folder {class_dir}; expected {' and '.join(CLASS_NAMES)} in {split_dir}.")
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
            raise DataError(f"Class folder {class_dir} has no images. Check that the download or unpacking finished.")
    return samples, skipped


def warn_skipped(skipped: Sequence[tuple[Path | str, str]], what: str = "files") -> None:
    """Warn once, listing every skipped file with its reason."""
    if skipped:
        lines = "\n".join(f"  {path}: {reason}" for path, reason in skipped[:50])
        more = f"\n  ... and {len(skipped) - 50} more" if len(skipped) > 50 else ""
        warnings.warn(f"Skipped {len(skipped)} {what}:\n{lines}{more}", stacklevel=2)


# ----------------------------------------------------------------------------- data: synthetic sample


def _smoothstep(d: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(d / width, -30, 30)))


def _ellipse_distance(x, y, cx, cy, rx, ry, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0


def synthetic_xray(rng: np.random.Generator, height: int, width: int, anatomy: dict, pneumonia: bool) -> np.ndarray:
    """Draw one X-ray-like image (uint8, H x W): body, dark lungs, ribs, spine, heart, optional opacities."""
    aspect = width / height
    y, x = np.mgrid[-1 : 1 : complex(0, height), -aspect : aspect : complex(0, width)].astype(np.float32)
    x = x - anatomy["shift_x"]
    y = y - anatomy["shift_y"]
    img = np.full((height, width), 0.08, np.float32)
    body = _smoothstep(_ellipse_distance(x, y, 0, 0.25, anatomy["body_w"], 1.3), 0.03)
    img += 0.50 * body
    lung_masks = []
    for side in (-1, 1):
        d = _ellipse_distance(x, y, side * anatomy["lung_dx"], -0.05, anatomy["lung_w"], anatomy["lung_h"], side * 0.12)
        lung_masks.append(_smoothstep(d, 0.05))
    lungs = np.maximum(*lung_masks)
    img -= 0.32 * lungs
    ribs = np.zeros_like(img)
    for i in range(9):
        curve = -0.62 + i * 0.13 + 0.35 * np.abs(x) ** 1.5
        ribs += np.exp(-(((y - curve) / 0.028) ** 2))
    thorax = _smoothstep(_ellipse_distance(x, y, 0, -0.05, anatomy["body_w"] * 0.85, 0.75), 0.05)
    img += 0.14 * ribs * thorax
    spine = np.exp(-((x / 0.09) ** 2)) * body
    img += 0.30 * spine
    heart = _smoothstep(_ellipse_distance(x, y, 0.12, 0.32, anatomy["heart_w"], 0.28, -0.3), 0.05)
    img += 0.30 * heart * body
    clavicle = np.exp(-(((y + 0.72 - 0.1 * np.abs(x)) / 0.035) ** 2)) * (np.abs(x) < 0.75)
    img += 0.18 * clavicle
    if pneumonia:
        before = img.mean()
        opacity = np.zeros_like(img)
        for cx, cy, r in anatomy["opacities"]:
            cx += rng.normal(0, 0.02)
            cy += rng.normal(0, 0.02)
            for _ in range(6):  # patchy: several overlapping soft blobs
                bx, by = cx + rng.normal(0, r * 0.6), cy + rng.normal(0, r * 0.6)
                br = r * rng.uniform(0.3, 0.8)
                opacity += np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * br**2)))
        texture = rng.uniform(0.6, 1.0, size=(max(height // 16, 2), max(width // 16, 2))).astype(np.float32)
        texture = np.asarray(Image.fromarray(texture).resize((width, height), Image.Resampling.BILINEAR))
        img += 0.40 * np.clip(opacity, 0, 1.5) * texture * lungs
        img -= img.mean() - before  # keep the global brightness: no giveaway in the image mean
    img += rng.normal(0, 0.025, img.shape).astype(np.float32)
    gain, offset = anatomy["gain"] * rng.uniform(0.9, 1.1), anatomy["offset"] + rng.normal(0, 0.03)
    img = np.clip((img * gain + offset), 0, 1) ** anatomy["gamma"]
    out = Image.fromarray((img * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius=max(height / 400, 0.6)))
    marker = ImageDraw.Draw(out)  # a side marker, as on real films: same for both classes
    size = max(height // 20, 4)
    mx = int(width * anatomy["marker_x"])
    marker.rectangle([mx, size, mx + size, size * 2], fill=235)
    return np.asarray(out)


def _patient_anatomy(rng: np.random.Generator, pneumonia: bool) -> dict:
    anatomy = {
        "shift_x": rng.normal(0, 0.05),
        "shift_y": rng.normal(0, 0.04),
        "body_w": rng.uniform(0.85, 1.05),
        "lung_dx": rng.uniform(0.32, 0.40),
        "lung_w": rng.uniform(0.22, 0.28),
        "lung_h": rng.uniform(0.48, 0.60),
        "heart_w": rng.uniform(0.20, 0.28),
        "gain": rng.uniform(0.8, 1.2),
        "offset": rng.uniform(-0.05, 0.1),
        "gamma": rng.uniform(0.8, 1.25),
        "marker_x": rng.choice([0.05, 0.85]),
        "opacities": [],
    }
    if pneumonia:
        for _ in range(rng.integers(1, 4)):
            side = rng.choice([-1, 1])
            anatomy["opacities"].append(
                (side * anatomy["lung_dx"] + rng.normal(0, 0.06), rng.uniform(-0.3, 0.35), rng.uniform(0.08, 0.16))
            )
    return anatomy


SYNTHETIC_COUNTS = {"train": (60, 160), "val": (4, 4), "test": (30, 45)}  # patients per class


def make_synthetic_dataset(out_dir: Path, seed: int = 42, counts: dict[str, tuple[int, int]] | None = None) -> Path:
    """Generate (or reuse) a deterministic synthetic sample in the Kaggle layout; return its root.

    Introduced in 01_data_preview.ipynb. Patients have 1 to 3 images (Kaggle file names),
    sizes vary from 300 px to over 1000 px a side, and a few files are saved as RGB.
    """
    counts = counts or SYNTHETIC_COUNTS
    root = Path(out_dir) / f"seed{seed}" / "chest_xray"
    stamp = {"generator_version": SYNTHETIC_VERSION, "seed": seed, "counts": {k: list(v) for k, v in counts.items()}}
    stamp_path = root / "SYNTHETIC.json"
    if stamp_path.exists() and json.loads(stamp_path.read_text()) == stamp:
        return root
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".synthetic-", dir=out_dir))  # same disk, so the rename is atomic
    try:
        for split_index, (split, patients_per_class) in enumerate(counts.items()):
            for label, n_patients in enumerate(patients_per_class):
                folder = tmp_root / split / CLASS_NAMES[label]
                folder.mkdir(parents=True)
                for patient in range(1, n_patients + 1):
                    _write_synthetic_patient(folder, np.random.default_rng([seed, split_index, label, patient]), label, patient)
        (tmp_root / "SYNTHETIC.json").write_text(json.dumps(stamp))
        if root.exists():
            shutil.rmtree(root)  # an older generated sample of ours, inside the run dir
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_root, root)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return root


def _write_synthetic_patient(folder: Path, rng: np.random.Generator, label: int, patient: int) -> None:
    """Write one synthetic patient's 1 to 3 films, named as in the Kaggle data."""
    anatomy = _patient_anatomy(rng, pneumonia=bool(label))
    base = int(rng.integers(1000, 1500) if rng.random() < 0.06 else rng.integers(300, 640))
    height, width = base, int(base * rng.uniform(1.0, 1.4))
    kind = rng.choice(["bacteria", "virus"])
    for k in range(1, int(rng.integers(1, 4)) + 1):
        if label == 0:
            stem = f"IM-{patient:04d}-0001" if k == 1 else f"IM-{patient:04d}-0001-{k:04d}"
        else:
            stem = f"person{patient}_{kind}_{k}"
        scale = min(1.0, 320 / width)  # draw at <= 320 px (fast), then upsample
        pixels = synthetic_xray(rng, round(height * scale), round(width * scale), anatomy, bool(label))
        image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)
        if rng.random() < 0.05:
            image = image.convert("RGB")
        image.save(folder / f"{stem}.jpeg", quality=90)


# ----------------------------------------------------------------------------- data: patient split

_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE),
)


def patient_id(filename: str | Path) -> str:
    """Read the patient id from a Kaggle file name; a name that fits no pattern is its own patient."""
    stem = Path(filename).stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def patient_split(
    samples: Sequence[tuple[Path, int]], val_fraction: float = 0.1, seed: int = 42
) -> tuple[list[int], list[int]]:
    """Split sample indices into (train, val) by patient, stratified by class, deterministic in the seed.

    Introduced in 01_data_preview.ipynb. Whole patients go to one side, class by class,
    until that class has ``val_fraction`` of its images on the validation side.
    """
    by_patient: dict[tuple[int, str], list[int]] = defaultdict(list)
    for index, (path, label) in enumerate(samples):
        by_patient[(label, patient_id(path))].append(index)
    val: list[int] = []
    rng = random.Random(seed)
    for label in range(len(CLASS_NAMES)):
        patients = sorted(key for key in by_patient if key[0] == label)
        rng.shuffle(patients)
        target = val_fraction * sum(len(by_patient[key]) for key in patients)
        taken = 0
        for key in patients:
            if taken >= target:
                break
            val.extend(by_patient[key])
            taken += len(by_patient[key])
    val_set = set(val)
    return [i for i in range(len(samples)) if i not in val_set], sorted(val)


def random_image_split(n: int, val_fraction: float = 0.1, seed: int = 42) -> tuple[list[int], list[int]]:
    """The blog post's split: images at random, ignoring patients (shown only to expose the leak)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = int(val_fraction * n)
    return sorted(order[n_val:]), sorted(order[:n_val])


def patients_on_both_sides(samples: Sequence[tuple[Path, int]], train_idx: Iterable[int], val_idx: Iterable[int]) -> int:
    """Count patients with images on both sides of a split (leakage)."""
    train_patients = {patient_id(samples[i][0]) for i in train_idx}
    return len(train_patients & {patient_id(samples[i][0]) for i in val_idx})


def file_list_sha256(paths: Iterable[Path], root: Path) -> str:
    """SHA-256 of a list of file paths relative to ``root``: changes when any file is added, removed or renamed."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(Path(path).relative_to(root)).encode() + b"\0")
    return digest.hexdigest()


def load_or_make_split(
    samples: Sequence[tuple[Path, int]], root: Path, run_dir: Path, seed: int, val_fraction: float = 0.1
) -> tuple[list[int], list[int]]:
    """Reuse the saved patient split for this file list and seed, or make and save it (Introduced in 01)."""
    path = Path(run_dir) / f"split-seed{seed}.json"
    fingerprint = file_list_sha256((p for p, _ in samples), root)[:16]
    rel = [str(Path(p).relative_to(root)) for p, _ in samples]
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("fingerprint") == fingerprint and saved.get("val_fraction") == val_fraction:
            val_set = set(saved["val"])
            val = [i for i, r in enumerate(rel) if r in val_set]
            return [i for i, r in enumerate(rel) if r not in val_set], val
    train_idx, val_idx = patient_split(samples, val_fraction, seed)
    record = {
        "seed": seed,
        "val_fraction": val_fraction,
        "fingerprint": fingerprint,
        "dataset_root": str(root),
        "val": [rel[i] for i in val_idx],
        "train": [rel[i] for i in train_idx],
    }
    atomic_write_text(path, json.dumps(record, indent=1))
    return train_idx, val_idx


# ----------------------------------------------------------------------------- data: decoding and transforms


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

    Introduced in 01_data_preview.ipynb. Handles RGB, RGBA, CMYK, palette and 16-bit files;
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


def make_transforms(image_size: int, train: bool):
    """torchvision transforms for the classic per-image pipeline: augmentation only when ``train``.

    Introduced in 01_data_preview.ipynb. Input is the grayscale PIL image from ``read_xray``;
    output is a 1-channel float tensor in [0, 1]. ImageNet normalisation happens inside the
    model's first layer (see ``fold_rgb_conv``).
    """
    from torchvision import transforms as T

    steps = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)]
    if train:
        steps += [
            T.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.9, 1.1)),
            T.ColorJitter(brightness=0.2, contrast=0.2),
        ]
    steps.append(T.ToTensor())
    return T.Compose(steps)


class XrayFileDataset(torch.utils.data.Dataset):
    """The classic way: decode and transform each image from disk every time it is read (Introduced in 02)."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform, draft_size: int | None = None):
        self.paths, self.labels, self.transform, self.draft_size = list(paths), list(labels), transform, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_xray(self.paths[index], self.draft_size)), self.labels[index]


# ----------------------------------------------------------------------------- data: decode-once cache


@dataclasses.dataclass
class XraySplit:
    """One split held in memory: uint8 pixels (N x 1 x S x S), labels, and where each came from."""

    name: str
    pixels: torch.Tensor
    labels: torch.Tensor
    paths: list[Path]
    original_sizes: list[tuple[int, int]]
    original_modes: list[str]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self) -> dict[str, int]:
        """Images per class name."""
        counts = torch.bincount(self.labels, minlength=len(CLASS_NAMES)).tolist()
        return dict(zip(CLASS_NAMES, counts))

    def subset(self, indices: Sequence[int], name: str | None = None) -> XraySplit:
        """A new split holding only ``indices`` (pixels are shared views where possible)."""
        index = torch.as_tensor(list(indices), dtype=torch.long)
        return XraySplit(
            name or self.name,
            self.pixels[index],
            self.labels[index],
            [self.paths[i] for i in index.tolist()],
            [self.original_sizes[i] for i in index.tolist()],
            [self.original_modes[i] for i in index.tolist()],
            self.skipped,
        )


def _decode_or_none(path: Path, image_size: int):
    try:
        return decode_resized(path, image_size)
    except DataError as err:
        return err


def decode_files(
    paths: Sequence[Path], image_size: int, workers: int | None = None, progress: bool = True
) -> tuple[np.ndarray, list[int], list[tuple[int, int]], list[str], list[tuple[str, str]]]:
    """Decode files in parallel threads; return pixels, indices kept, sizes, modes and (path, reason) skipped."""
    from tqdm.auto import tqdm

    workers = workers or min(8, os.cpu_count() or 1)
    kept, pixels, sizes, modes, skipped = [], [], [], [], []
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: _decode_or_none(p, image_size), paths)
        for index, result in enumerate(tqdm(results, total=len(paths), desc="decode", disable=not progress)):
            if isinstance(result, DataError):
                skipped.append((str(paths[index]), str(result.__cause__ or result)))
                continue
            array, size, mode = result
            kept.append(index)
            pixels.append(array)
            sizes.append(size)
            modes.append(mode)
    stacked = np.stack(pixels) if pixels else np.zeros((0, image_size, image_size), np.uint8)
    return stacked, kept, sizes, modes, skipped


def _cache_key(paths: Sequence[Path], image_size: int) -> str:
    digest = hashlib.sha256(f"format{CACHE_FORMAT}-size{image_size}".encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def load_pixels(
    name: str, samples: Sequence[tuple[Path, int]], image_size: int, cache_dir: Path | None, progress: bool = True
) -> XraySplit:
    """Decode a list of (path, label) once into an ``XraySplit``, reusing the on-disk cache when it matches.

    Introduced in 02_training_on_gpu.ipynb. The cache file's name is a hash of the paths,
    their sizes and modification times and the image size, so any change rebuilds it.
    Unreadable files are skipped with a warning that lists them.
    """
    paths = [Path(p) for p, _ in samples]
    labels = [int(label) for _, label in samples]
    cache_path = Path(cache_dir) / f"{name}-{_cache_key(paths, image_size)}.pt" if cache_dir else None
    if cache_path is not None and cache_path.exists():
        try:
            saved = torch.load(cache_path, weights_only=True)
            split = XraySplit(
                name,
                saved["pixels"],
                saved["labels"],
                [Path(p) for p in saved["paths"]],
                [tuple(s) for s in saved["original_sizes"]],
                list(saved["original_modes"]),
                [tuple(s) for s in saved["skipped"]],
            )
            warn_skipped(split.skipped, f"unreadable images in {name}")
            return split
        except Exception as err:  # a damaged cache is rebuilt, never trusted
            warnings.warn(f"Ignoring unreadable cache {cache_path} ({err}); rebuilding it.", stacklevel=2)
    pixels, kept, sizes, modes, skipped = decode_files(paths, image_size, progress=progress)
    split = XraySplit(
        name,
        torch.from_numpy(pixels).unsqueeze(1),
        torch.tensor([labels[i] for i in kept], dtype=torch.long),
        [paths[i] for i in kept],
        sizes,
        modes,
        skipped,
    )
    warn_skipped(skipped, f"unreadable images in {name}")
    if cache_path is not None:
        payload = {
            "pixels": split.pixels,
            "labels": split.labels,
            "paths": [str(p) for p in split.paths],
            "original_sizes": [list(s) for s in sizes],
            "original_modes": modes,
            "skipped": [list(s) for s in skipped],
        }
        atomic_torch_save(payload, cache_path)
    return split


def stratified_subset(samples: Sequence[tuple[Path, int]], indices: list[int], cap: int | None, seed: int) -> list[int]:
    """At most ``cap`` of ``indices``, drawn at random per class in proportion to the class sizes."""
    if cap is None or len(indices) <= cap:
        return indices
    by_class = [[i for i in indices if samples[i][1] == label] for label in range(len(CLASS_NAMES))]
    exact = [cap * len(members) / len(indices) for members in by_class]
    shares = [math.floor(x) for x in exact]
    for label in sorted(range(len(exact)), key=lambda k: exact[k] - shares[k], reverse=True)[: cap - sum(shares)]:
        shares[label] += 1  # largest remainders first, so the shares add up to cap exactly
    rng = random.Random(seed)
    return sorted(i for members, share in zip(by_class, shares) for i in rng.sample(members, share))


def prepare_data(
    root: Path,
    run_dir: Path,
    image_size: int,
    seed: int = 42,
    max_images: int | None = None,
    val_fraction: float = 0.1,
    progress: bool = True,
) -> dict[str, XraySplit]:
    """Load train/val (a patient split of Kaggle's train/) and test as decoded ``XraySplit`` objects.

    Introduced in 01_data_preview.ipynb. ``max_images`` caps each split (quick mode),
    keeping its class proportions. Kaggle's own 16-image val/ folder is returned as ``kaggle_val``.
    """
    run_dir = Path(run_dir)
    train_samples, train_junk = list_split(root, "train")
    test_samples, test_junk = list_split(root, "test")
    kaggle_val_samples, val_junk = list_split(root, "val")
    warn_skipped(train_junk + test_junk + val_junk, "non-image files")
    train_idx, val_idx = load_or_make_split(train_samples, root, run_dir, seed, val_fraction)
    plan = {
        "train": [train_samples[i] for i in stratified_subset(train_samples, train_idx, max_images, seed)],
        "val": [train_samples[i] for i in stratified_subset(train_samples, val_idx, max_images, seed)],
        "test": [test_samples[i] for i in stratified_subset(test_samples, list(range(len(test_samples))), max_images, seed)],
        "kaggle_val": kaggle_val_samples,
    }
    return {name: load_pixels(name, samples, image_size, run_dir / "cache", progress) for name, samples in plan.items()}


# ----------------------------------------------------------------------------- device


def get_default_device() -> torch.device:
    """Pick the GPU if there is one, else the CPU (Introduced in 02_training_on_gpu.ipynb)."""
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def to_device(data: Any, device: torch.device) -> Any:
    """Move a tensor, or a list/tuple/dict of tensors, to ``device`` (Introduced in 02)."""
    if isinstance(data, (list, tuple)):
        return [to_device(x, device) for x in data]
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    return data.to(device, non_blocking=True)


class DeviceDataLoader:
    """Wrap a DataLoader so every batch arrives on ``device`` (Introduced in 02_training_on_gpu.ipynb)."""

    def __init__(self, dl: Iterable, device: torch.device):
        self.dl = dl
        self.device = device

    def __iter__(self) -> Iterator:
        for batch in self.dl:
            yield to_device(batch, self.device)

    def __len__(self) -> int:
        return len(self.dl)


def make_classic_loader(
    split: XraySplit, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int = 2
) -> DeviceDataLoader:
    """The blog post's pipeline, fixed: decode every file every epoch in DataLoader workers (Introduced in 02)."""
    dataset = XrayFileDataset(split.paths, split.labels.tolist(), make_transforms(image_size, train), draft_size=image_size)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    return DeviceDataLoader(loader, device)


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random small rotation, shift, zoom, brightness and contrast for a whole batch at once, on its device.

    Introduced in 02_training_on_gpu.ipynb. Matches ``make_transforms(train=True)`` (no flips:
    a chest X-ray is never upside down, and a mirrored one puts the heart on the wrong side).
    ``images`` is float in [0, 1], shape (N, 1, H, W).
    """
    n, _, height, width = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device) * (high - low) + low).view(n, 1, 1)

    angle, scale = torch.deg2rad(uniform(-7, 7)), uniform(0.9, 1.1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x, shift_y = uniform(-0.1, 0.1), uniform(-0.1, 0.1)
    # The sampling grid of F.affine_grid, built by broadcasting (several times faster on a CPU).
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=device).view(1, 1, width)
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=device).view(1, height, 1)
    grid = torch.empty(n, height, width, 2, device=device)
    torch.add(cos * xs, shift_x - sin * ys, out=grid[..., 0])
    torch.add(sin * xs, shift_y + cos * ys, out=grid[..., 1])
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness, contrast = uniform(0.8, 1.2).unsqueeze(1), uniform(0.8, 1.2).unsqueeze(1)
    # brightness then contrast around the image mean, fused: x*b*c + mean(x*b)*(1-c)
    mean = out.mean(dim=(1, 2, 3), keepdim=True) * brightness
    return torch.addcmul(mean * (1 - contrast), out, brightness * contrast).clamp_(0, 1)


def to_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 grayscale pixels (N, 1, H, W) to the model's input: float in [0, 1] (Introduced in 02)."""
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    return pixels.float().div_(255)


class CachedBatchLoader:
    """Serve batches from decoded pixels held on ``device``, augmenting on the device (Introduced in 02).

    Yields (images, labels): float images (N, 1, S, S) in [0, 1] and float labels (N,).
    The whole split is copied to the device once.
    """

    def __init__(
        self,
        split: XraySplit,
        batch_size: int,
        device: torch.device,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ):
        pin = device.type == "cuda"
        self.pixels = (split.pixels.pin_memory() if pin else split.pixels).to(device, non_blocking=True)
        self.labels = split.labels.to(device, non_blocking=True)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator, device=self.device) if self.shuffle else None
        for b in range(len(self)):
            index = slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            chosen = order[index] if order is not None else index
            images = to_model_input(self.pixels[chosen])
            if self.augment:
                images = augment_batch(images, self.generator)
            yield images, self.labels[chosen].float()


# ----------------------------------------------------------------------------- preview plots


def show_image(img_tuple: tuple[torch.Tensor, int]) -> None:
    """Show one (normalised image, label) pair with its label, as in the blog post (Introduced in 01)."""
    import matplotlib.pyplot as plt

    image, label = img_tuple
    plt.imshow(image[0].float().cpu(), cmap="gray", vmin=0, vmax=1)
    plt.axis("off")
    plt.title(f"Label: {decode_label(int(label))}")


def show_batch(dl: Iterable, invert: bool = False, nrow: int = 8) -> None:
    """Show the first batch of a loader as a grid (Introduced in 01_data_preview.ipynb)."""
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    images, labels = next(iter(dl))
    images = images.float().cpu()
    data = 1 - images if invert else images
    fig, ax = plt.subplots(figsize=(2 * nrow, 2 * math.ceil(len(images) / nrow)))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.imshow(make_grid(data, nrow=nrow).permute(1, 2, 0))
    names = [decode_label(int(x))[0] for x in labels.cpu()]
    ax.set_title("labels (N=NORMAL, P=PNEUMONIA): " + " ".join(names), fontsize=9)


def count_table(splits: dict[str, XraySplit]) -> list[dict[str, Any]]:
    """Rows of images per class per split, with the PNEUMONIA share (Introduced in 01)."""
    rows = []
    for name, split in splits.items():
        counts = split.class_counts()
        total = sum(counts.values())
        rows.append({"split": name, **counts, "total": total, "pneumonia_share": round(counts["PNEUMONIA"] / max(total, 1), 3)})
    return rows


def print_table(rows: Sequence[dict[str, Any]]) -> None:
    """Print a list of dicts as an aligned text table."""
    if not rows:
        print("(empty)")
        return
    columns = list(rows[0])
    widths = {c: max(len(str(c)), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(str(c).ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(_fmt(row.get(c)).ljust(widths[c]) for c in columns))


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def folder_counts(root: Path) -> list[dict[str, Any]]:
    """Images per class in each of the dataset's own split folders, junk excluded (Introduced in 01)."""
    rows = []
    for split in SPLIT_FOLDERS:
        samples, _ = list_split(root, split)
        counts = [sum(1 for _, label in samples if label == k) for k in range(len(CLASS_NAMES))]
        rows.append({"folder": split, **dict(zip(CLASS_NAMES, counts)), "total": sum(counts), "pneumonia_share": round(counts[1] / sum(counts), 3)})
    return rows


def plot_counts(rows: Sequence[dict[str, Any]], key: str = "folder") -> None:
    """Bar chart of images per class per split (Introduced in 01_data_preview.ipynb)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    positions = np.arange(len(rows))
    for offset, name in zip((-0.2, 0.2), CLASS_NAMES):
        bars = ax.bar(positions + offset, [r[name] for r in rows], width=0.4, label=name)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks(positions, [r[key] for r in rows])
    ax.set(ylabel="images", title="Images per class")
    ax.legend()


def plot_image_sizes(split: XraySplit) -> None:
    """Scatter of the original width and height of every image in a split (Introduced in 01)."""
    import matplotlib.pyplot as plt

    sizes = np.array(split.original_sizes)
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, name in enumerate(CLASS_NAMES):
        mask = split.labels.numpy() == label
        ax.scatter(sizes[mask, 0], sizes[mask, 1], s=8, alpha=0.5, label=name)
    ax.set(xlabel="width (px)", ylabel="height (px)", title=f"Original image sizes ({split.name})")
    ax.legend()


def show_augmentations(path: Path, image_size: int, n: int = 8, seed: int = 0) -> None:
    """The same image through the training transforms ``n`` times (Introduced in 01_data_preview.ipynb)."""
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    image = read_xray(path)
    transform = make_transforms(image_size, train=True)
    fig, axes = plt.subplots(1, n + 1, figsize=(2 * (n + 1), 2.3))
    axes[0].imshow(make_transforms(image_size, train=False)(image)[0], cmap="gray", vmin=0, vmax=1)
    axes[0].set_title("original", fontsize=9)
    for ax in axes[1:]:
        ax.imshow(transform(image)[0], cmap="gray", vmin=0, vmax=1)
        ax.set_title("augmented", fontsize=9)
    for ax in axes:
        ax.axis("off")


def show_resize_comparison(path: Path, image_size: int) -> None:
    """The blog post's NEAREST resize beside an antialiased one, with a zoomed crop (Introduced in 01)."""
    import matplotlib.pyplot as plt

    image = read_xray(path)
    nearest = image.resize((image_size, image_size), Image.Resampling.NEAREST)
    smooth = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.6))
    crop = (image_size // 4, image_size // 4, image_size // 2, image_size // 2)
    for ax, (title, picture) in zip(
        axes,
        [("NEAREST (blog post)", nearest), ("antialiased (this series)", smooth), ("NEAREST, zoomed", nearest.crop(crop)), ("antialiased, zoomed", smooth.crop(crop))],
    ):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")


# ----------------------------------------------------------------------------- model


class BinaryClassificationBase(nn.Module):
    """Training and validation steps for a one-logit classifier (Introduced in 02_training_on_gpu.ipynb).

    The model returns raw logits; the loss is ``binary_cross_entropy_with_logits`` (numerically
    stable, unlike sigmoid followed by BCE) with ``pos_weight`` to balance the classes.
    """

    pos_weight: torch.Tensor

    def training_step(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean loss on one batch."""
        images, targets = batch
        return F.binary_cross_entropy_with_logits(self(images).float(), targets.float(), pos_weight=self.pos_weight)

    def validation_step(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed loss, correct count and sample count on one batch (kept on the device: no sync)."""
        images, targets = batch
        logits = self(images).float()
        loss = F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=self.pos_weight, reduction="sum")
        correct = ((logits > 0).float() == targets).sum()
        return {"loss_sum": loss.detach(), "correct": correct, "count": torch.tensor(len(targets), device=logits.device)}

    def validation_epoch_end(self, outputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Combine batches exactly: totals over all samples, not a mean of batch means."""
        totals = {key: torch.stack([o[key].float() for o in outputs]).sum() for key in ("loss_sum", "correct", "count")}
        count = totals["count"].item()
        return {"val_loss": totals["loss_sum"].item() / count, "val_acc": totals["correct"].item() / count}

    def epoch_end(self, epoch: int, result: dict[str, Any]) -> None:
        """Print one line of progress."""
        print(
            f"Epoch [{epoch}], train_loss: {result['train_loss']:.4f}, "
            f"val_loss: {result['val_loss']:.4f}, val_acc: {result['val_acc']:.4f}"
        )


def fold_rgb_conv(conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float]) -> nn.Conv2d:
    """A 1-channel convolution equal to: grey [0, 1] image -> 3 equal channels -> normalise -> ``conv``.

    Introduced in 02_training_on_gpu.ipynb. Summing the RGB filters (each divided by its
    channel's std) gives the weight; the mean becomes a bias. Exact except at the padded
    border, which is black here instead of the mean colour.
    """
    weight = conv.weight.detach()
    mean_t = torch.tensor(mean, dtype=weight.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=weight.dtype).view(1, 3, 1, 1)
    folded = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        folded.weight.copy_((weight / std_t).sum(dim=1, keepdim=True))
        folded.bias.copy_(-(weight * mean_t / std_t).sum(dim=(1, 2, 3)))
    return folded


class PneumoniaCnnModel(BinaryClassificationBase):
    """A torchvision ResNet50 with a one-logit head, for 1-channel input in [0, 1] (Introduced in 02).

    ``state_dict`` is the ImageNet backbone (or None for random init). The first
    convolution is folded to one input channel with the ImageNet normalisation inside it
    (``fold_rgb_conv``). With ``freeze_backbone`` only the new head trains: the
    fixed-feature-extractor mode.
    """

    def __init__(
        self,
        state_dict: dict[str, torch.Tensor] | None = None,
        pos_weight: float = 1.0,
        freeze_backbone: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        super().__init__()
        from torchvision import models

        self.network = models.resnet50(weights=None)
        if state_dict is not None:
            self.network.load_state_dict(state_dict)
        self.network.conv1 = fold_rgb_conv(self.network.conv1, mean, std)
        self.network.fc = nn.Linear(self.network.fc.in_features, 1)
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.frozen = False
        if freeze_backbone:
            self.freeze()

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        """Logits, shape (N,), for images (N, 1, H, W) in [0, 1]."""
        return self.network(xb).squeeze(1)

    def freeze(self) -> None:
        """Train only the head: the backbone's weights and batch-norm statistics stay fixed."""
        self.frozen = True
        for name, param in self.network.named_parameters():
            param.requires_grad = name.startswith("fc.")

    def unfreeze(self) -> None:
        """Train every layer (fine-tuning)."""
        self.frozen = False
        for param in self.network.parameters():
            param.requires_grad = True

    def train(self, mode: bool = True) -> PneumoniaCnnModel:
        """Like nn.Module.train, but a frozen backbone keeps its batch-norm layers in eval mode."""
        super().train(mode)
        if mode and self.frozen:
            for module in self.network.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for (CXR_PRETRAINED=1) but could not be loaded."""


def load_imagenet_weights(pretrained: str = "auto", weights_file: Path | None = None, timeout_s: float = 20.0):
    """Return (ResNet50 ImageNet state dict or None, description); loud when it falls back to random init.

    Introduced in 02_training_on_gpu.ipynb. ``pretrained``: "1" insists (error when
    unavailable), "auto" tries and falls back loudly, "0" skips. ``weights_file`` (CXR_WEIGHTS_FILE)
    is a local copy of torchvision's ResNet50 weights file, for offline machines.
    """
    from torchvision.models import ResNet50_Weights

    weights = ResNet50_Weights.DEFAULT
    if pretrained == "0":
        return None, "random init (CXR_PRETRAINED=0)"
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise PretrainedWeightsUnavailable(f"CXR_WEIGHTS_FILE={path} does not exist. Point it at a ResNet50 weights file ({weights.url}).")
        try:
            from torchvision import models

            state = torch.load(path, map_location="cpu", weights_only=True)
            models.resnet50(weights=None).load_state_dict(state)
        except Exception as err:  # damaged file, HTML error page, another model's weights
            raise PretrainedWeightsUnavailable(
                f"CXR_WEIGHTS_FILE={path} is not a torchvision ResNet50 weights file ({_error_summary(err)}). "
                f"Download it again from {weights.url}."
            ) from None
        return state, f"ImageNet weights from {path}"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        state = weights.get_state_dict(progress=False)
        return state, f"ImageNet weights {weights} ({weights.url.rsplit('/', 1)[-1]})"
    except Exception as err:  # offline, proxy, corrupt download: all mean "no weights"
        reason = f"{type(err).__name__}: {err}"
    finally:
        socket.setdefaulttimeout(previous)
    fix = (
        "To fix: run once on a machine that is online (torchvision caches the file in "
        f"{torch.hub.get_dir()}/checkpoints), or download {weights.url} and set CXR_WEIGHTS_FILE to its path."
    )
    if pretrained == "1":
        raise PretrainedWeightsUnavailable(f"CXR_PRETRAINED=1 but the ImageNet weights could not be loaded ({reason}). {fix}")
    banner = "!" * 78
    print(
        f"{banner}\nNO PRETRAINED WEIGHTS: the ImageNet weights could not be loaded ({reason}).\n"
        f"This run trains a ResNet50 from RANDOM INITIALISATION, which is NOT transfer learning\n"
        f"and will score far below a pretrained model. {fix}\n"
        f"Set CXR_PRETRAINED=1 to make this an error instead.\n{banner}"
    )
    warnings.warn("ImageNet weights unavailable: training from random initialisation", stacklevel=2)
    return None, f"random init (ImageNet weights unavailable: {reason})"


def resolve_train_mode(train_mode: str, device: torch.device, pretrained_loaded: bool) -> str:
    """Pick 'finetune' or 'feature_extractor' for 'auto': fine-tune on a GPU, freeze on a CPU (Introduced in 02).

    A randomly initialised backbone is never frozen: its features are noise.
    """
    if train_mode != "auto":
        if train_mode == "feature_extractor" and not pretrained_loaded:
            warnings.warn("Freezing a randomly initialised backbone: only the head will learn, from random features.", stacklevel=2)
        return train_mode
    if not pretrained_loaded:
        return "finetune"
    return "finetune" if device.type == "cuda" else "feature_extractor"


def class_balance_pos_weight(labels: torch.Tensor) -> float:
    """pos_weight for BCE that gives both classes equal total weight: #NORMAL / #PNEUMONIA (Introduced in 02)."""
    positives = int(labels.sum())
    return (len(labels) - positives) / max(positives, 1)


# ----------------------------------------------------------------------------- training


def best_epoch(history: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch with the lowest finite validation loss (the one ``fit`` keeps), or None."""
    finite = [h for h in history if "epoch" in h and math.isfinite(h.get("val_loss", math.nan))]
    return min(finite, key=lambda h: h["val_loss"]) if finite else None


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group."""
    for param_group in optimizer.param_groups:
        return param_group["lr"]
    raise ValueError("optimizer has no parameter groups")


def autocast_settings(device: torch.device) -> tuple[bool, torch.dtype]:
    """(use autocast, dtype): bf16 on GPUs that support it, fp16 on older GPUs, off on the CPU."""
    if device.type != "cuda":
        return False, torch.float32
    return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@torch.no_grad()
def evaluate(model: BinaryClassificationBase, val_loader: Iterable) -> dict[str, float]:
    """Validation loss and accuracy over every sample of ``val_loader`` (Introduced in 02)."""
    model.eval()
    device = next(model.parameters()).device
    use_amp, dtype = autocast_settings(device)
    with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
        outputs = [model.validation_step(batch) for batch in val_loader]
    return model.validation_epoch_end(outputs)


def fit(
    epochs: int,
    max_lr: float,
    model: BinaryClassificationBase,
    train_loader: Iterable,
    val_loader: Iterable,
    weight_decay: float = 0,
    grad_clip: float | None = None,
    opt_func: type[torch.optim.Optimizer] = torch.optim.SGD,
    keep_best: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train with a one-cycle schedule; return one dict per epoch (Introduced in 02_training_on_gpu.ipynb).

    The blog post's ``fit``, plus: mixed precision on CUDA, no host sync inside the batch
    loop, and (``keep_best``) the weights of the epoch with the lowest validation loss restored
    at the end.
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    use_amp, dtype = autocast_settings(device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and dtype == torch.float16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = opt_func(params, max_lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, epochs=epochs, steps_per_epoch=len(train_loader))
    history: list[dict[str, Any]] = []
    best_loss, best_state = math.inf, None
    for epoch in range(epochs):
        model.train()
        train_losses, lrs = [], []
        start, seen = time.perf_counter(), 0
        for batch in tqdm(train_loader, desc=f"epoch {epoch}", disable=not progress, leave=False):
            with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
                loss = model.training_step(batch)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_value_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            train_losses.append(loss.detach())
            seen += len(batch[1])
            lrs.append(get_lr(optimizer))
            sched.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # one sync per epoch, so the timing covers the GPU's work
        seconds = time.perf_counter() - start  # training only; validation is not counted
        result = evaluate(model, val_loader)
        result.update(
            epoch=epoch,
            train_loss=torch.stack(train_losses).mean().item(),
            lrs=lrs,
            seconds=round(seconds, 2),
            images_per_s=round(seen / seconds, 1),
        )
        model.epoch_end(epoch, result)
        history.append(result)
        if keep_best and result["val_loss"] < best_loss:
            best_loss = result["val_loss"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
        best = best_epoch(history)
        print(f"Restored the weights of epoch {best['epoch']} (lowest val_loss {best['val_loss']:.4f}).")
    return history


def images_per_second(
    step, batches: Iterable, warmup: int = 2, sync_device: torch.device | None = None, max_batches: int | None = None
) -> float:
    """Time ``step(batch)`` over ``batches`` (at most ``max_batches``) after ``warmup`` untimed ones; return images/s."""
    import itertools

    iterator = iter(batches)
    if max_batches is not None:
        iterator = itertools.islice(iterator, warmup + max_batches)
    for _ in range(warmup):
        step(next(iterator))
    if sync_device is not None and sync_device.type == "cuda":
        torch.cuda.synchronize(sync_device)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        step(batch)
        count += len(batch[1])
    if sync_device is not None and sync_device.type == "cuda":
        torch.cuda.synchronize(sync_device)
    return count / (time.perf_counter() - start)


def plot_history(history: Sequence[dict[str, Any]]) -> None:
    """Plot train/val loss, val accuracy and the learning rate per batch (Introduced in 02)."""
    import matplotlib.pyplot as plt

    history = [h for h in history if "epoch" in h]  # skip the pre-training baseline
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["train_loss"] for h in history], "-o", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "-o", label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="Loss vs. epochs")
    axes[0].legend()
    axes[1].plot(epochs, [h["val_acc"] for h in history], "-o")
    axes[1].set(xlabel="epoch", ylabel="accuracy", title="Validation accuracy")
    axes[2].plot([lr for h in history for lr in h["lrs"]])
    axes[2].set(xlabel="batch", ylabel="learning rate", title="One-cycle learning rate")
    fig.tight_layout()


# ----------------------------------------------------------------------------- checkpoints


def _error_summary(err: Exception) -> str:
    """The informative line of an exception (torch.load's weights-only errors put it mid-message)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    key = next((line for line in lines if "Unsupported" in line or "WeightsUnpickler error" in line), lines[0] if lines else "")
    return f"{type(err).__name__}: {key[:300]}"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, or does not fit the model."""


def _write_beside(path: Path, data: bytes) -> str:
    """Write ``data`` to a new, synced temporary file in ``path``'s folder and return its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; run products are ordinary files
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see the old or the new content, never half of it."""
    path = Path(path)
    tmp = _write_beside(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic text write (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def library_versions() -> dict[str, str]:
    """Versions of Python and the main libraries, for records and checkpoints."""
    import PIL
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
    }


def save_checkpoint(path: Path, model: PneumoniaCnnModel, metadata: dict[str, Any]) -> Path:
    """Save weights plus what is needed to use them later, atomically (Introduced in 02_training_on_gpu.ipynb).

    ``metadata`` must hold plain values (str, int, float, bool, lists, dicts); it is
    merged over the defaults: architecture, normalisation, class names, threshold 0.5.
    """
    meta = {
        "format": CHECKPOINT_FORMAT,
        "architecture": "resnet50-gray-1logit",
        "image_size": None,
        "input": "1 channel, [0, 1]; ImageNet mean/std folded into conv1",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "class_names": list(CLASS_NAMES),
        "threshold": 0.5,
        "versions": library_versions(),
        "saved_at": now_iso(),
        **metadata,
    }
    if not isinstance(meta["image_size"], int):
        raise ValueError("metadata must include image_size (the size the model was trained at)")
    meta = json.loads(json.dumps(meta))  # plain values only, so weights_only loading accepts them
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"metadata": meta, "state_dict": state}, Path(path))
    return Path(path)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[PneumoniaCnnModel, dict[str, Any]]:
    """Load a checkpoint saved by ``save_checkpoint``: (model in eval mode on ``device``, metadata).

    Introduced in 03_test_predictions.ipynb. Uses ``weights_only=True``, so a file that
    carries arbitrary Python objects is refused rather than executed.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Run notebooks/02_training_on_gpu.ipynb first (it writes one).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Refusing to load {path}: it is not a plain weights file ({_error_summary(err)}). "
            "It may be damaged or tampered with; re-run notebook 02 to make a fresh one."
        ) from None
    if not isinstance(payload, dict) or "state_dict" not in payload or "metadata" not in payload:
        raise CheckpointError(f"{path} is not a checkpoint of this series (no 'metadata'/'state_dict'); re-run notebook 02.")
    meta = payload["metadata"]
    if not isinstance(meta, dict) or not isinstance(payload["state_dict"], dict):
        raise CheckpointError(f"{path} is not a checkpoint of this series (malformed 'metadata' or 'state_dict'); re-run notebook 02.")
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("architecture") != "resnet50-gray-1logit":
        raise CheckpointError(
            f"{path} has format {meta.get('format')!r} / architecture {meta.get('architecture')!r}; "
            f"this code reads format {CHECKPOINT_FORMAT} of 'resnet50-gray-1logit'. Re-run notebook 02."
        )
    model = PneumoniaCnnModel()
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path} does not fit PneumoniaCnnModel: {str(err)[:400]}. Re-run notebook 02.") from None
    return model.to(device).eval(), meta


def latest_checkpoint(run_dir: Path) -> Path:
    """The newest checkpoint in the run dir, or a clear error naming the notebook that makes one."""
    folder = Path(run_dir) / "checkpoints"
    found = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    if not found:
        raise CheckpointError(f"No checkpoint in {folder}. Run notebooks/02_training_on_gpu.ipynb first (it trains and saves one).")
    return found[-1]


# ----------------------------------------------------------------------------- evaluation and metrics


@torch.no_grad()
def predict_dl(dl: Iterable, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of PNEUMONIA and true labels for every sample of a loader (Introduced in 03)."""
    model.eval()
    device = next(model.parameters()).device
    use_amp, dtype = autocast_settings(device)
    probs, labels = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=use_amp):
        for xb, yb in dl:
            probs.append(torch.sigmoid(model(xb).float()).cpu())
            labels.append(torch.as_tensor(yb).cpu().long())
    return torch.cat(probs), torch.cat(labels)


def accuracy(outputs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Fraction of correct predictions over all samples; ``outputs`` are probabilities (Introduced in 02)."""
    preds = (outputs >= threshold).long()
    return (preds == labels.long()).float().mean()


def binary_metrics(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, precision, F1, ROC AUC and the confusion matrix (Introduced in 03).

    Sensitivity is the recall of PNEUMONIA, specificity the recall of NORMAL. A metric that
    is undefined for the data (for example AUC with one class present) is NaN.
    """
    from sklearn import metrics as skm

    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=float)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    nan = float("nan")
    return {
        "threshold": float(threshold),
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else nan,
        "specificity": float(tn / (tn + fp)) if tn + fp else nan,
        "precision": float(tp / (tp + fp)) if tp + fp else nan,
        "f1": float(skm.f1_score(y, pred, zero_division=0.0)) if tp + fn else nan,
        "roc_auc": float(skm.roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else nan,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")


def bootstrap_ci(
    labels: Sequence[int] | np.ndarray,
    probs: Sequence[float] | np.ndarray,
    threshold: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap confidence intervals for each metric of ``binary_metrics`` (Introduced in 03)."""
    y = np.asarray(labels).astype(int)
    p = np.asarray(probs, dtype=float)
    rng = np.random.default_rng(seed)
    samples = {name: [] for name in METRIC_NAMES}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = binary_metrics(y[idx], p[idx], threshold)
        for name in METRIC_NAMES:
            samples[name].append(result[name])
    tail = (1 - level) / 2 * 100
    out = {}
    for name, values in samples.items():
        arr = np.asarray(values, dtype=float)
        arr = arr[~np.isnan(arr)]
        out[name] = (float(np.percentile(arr, tail)), float(np.percentile(arr, 100 - tail))) if len(arr) else (float("nan"),) * 2
    return out


def metrics_with_ci(labels, probs, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """``binary_metrics`` plus a ``ci`` entry of 95% bootstrap intervals."""
    result = binary_metrics(labels, probs, threshold)
    result["ci"] = {k: list(v) for k, v in bootstrap_ci(labels, probs, threshold, n_boot, seed).items()}
    return result


def print_metrics(named: dict[str, dict[str, Any]]) -> None:
    """Print metrics side by side (e.g. {'threshold 0.5': m1, 'threshold from val': m2}) with intervals."""
    rows = []
    for metric in ("threshold", *METRIC_NAMES):
        row = {"metric": metric}
        for label, m in named.items():
            value = m[metric]
            ci = m.get("ci", {}).get(metric)
            row[label] = f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        rows.append(row)
    print_table(rows)


def choose_threshold(labels, probs, method: str = "youden", min_sensitivity: float = 0.95) -> float:
    """Pick a decision threshold on VALIDATION predictions (Introduced in 03_test_predictions.ipynb).

    ``youden``: maximise sensitivity + specificity - 1. ``sensitivity``: the highest threshold
    whose sensitivity reaches ``min_sensitivity`` (fewest false alarms at that sensitivity).
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(labels).astype(int)
    if len(set(y.tolist())) < 2:
        raise ValueError("Choosing a threshold needs both classes in the validation labels.")
    fpr, tpr, thresholds = roc_curve(y, np.asarray(probs, dtype=float), drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if method == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if method == "sensitivity":
        reaching = np.flatnonzero(tpr >= min_sensitivity)
        return float(thresholds[reaching[0]])
    raise ValueError(f"unknown method {method!r}; use 'youden' or 'sensitivity'")


def plot_confusion_roc_hist(labels, probs, threshold: float, title: str = "") -> None:
    """Confusion matrix, ROC curve with the operating point, and probability histograms (Introduced in 03)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    m = binary_metrics(y, p, threshold)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ConfusionMatrixDisplay(np.array(m["confusion_matrix"]), display_labels=CLASS_NAMES).plot(ax=axes[0], colorbar=False)
    axes[0].set_title(f"Confusion matrix (threshold {threshold:.3f})")
    RocCurveDisplay.from_predictions(y, p, ax=axes[1], name="model")
    axes[1].plot(1 - m["specificity"], m["sensitivity"], "ro", label="operating point")
    axes[1].legend(loc="lower right")
    axes[1].set_title("ROC curve")
    bins = np.linspace(0, 1, 26)
    for label, name in enumerate(CLASS_NAMES):
        axes[2].hist(p[y == label], bins=bins, alpha=0.6, label=f"true {name}")
    axes[2].axvline(threshold, color="k", linestyle="--", label="threshold")
    axes[2].set(xlabel="predicted probability of PNEUMONIA", ylabel="images", title="Predicted probabilities")
    axes[2].legend()
    fig.suptitle(title)
    fig.tight_layout()


def threshold_explorer(labels, probs, initial: float = 0.5):
    """A slider that moves the threshold and redraws the confusion matrix and rates live (Introduced in 03)."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    output = widgets.Output()
    slider = widgets.FloatSlider(value=initial, min=0.0, max=1.0, step=0.01, description="threshold", continuous_update=False)

    def redraw(change=None):
        m = binary_metrics(labels, probs, slider.value)
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(4, 3.5))
            ax.imshow(np.array(m["confusion_matrix"]), cmap="Blues")
            for (i, j), v in np.ndenumerate(np.array(m["confusion_matrix"])):
                ax.text(j, i, str(v), ha="center", va="center")
            ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, xlabel="predicted", ylabel="true")
            ax.set_title(f"sens {m['sensitivity']:.3f}  spec {m['specificity']:.3f}")
            plt.show()

    slider.observe(redraw, names="value")
    redraw()
    return widgets.VBox([slider, output])


def plot_threshold_sweep(labels, probs, marks: dict[str, float]) -> None:
    """Sensitivity and specificity against the threshold, with chosen thresholds marked (static figure)."""
    import matplotlib.pyplot as plt

    grid = np.linspace(0.01, 0.99, 99)
    sweep = [binary_metrics(labels, probs, t) for t in grid]
    sens, spec = [m["sensitivity"] for m in sweep], [m["specificity"] for m in sweep]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(grid, sens, label="sensitivity")
    ax.plot(grid, spec, label="specificity")
    for name, t in marks.items():
        ax.axvline(t, linestyle="--", color="gray")
        ax.text(t, 0.02, f" {name}", rotation=90, va="bottom")
    ax.set(xlabel="threshold", ylabel="rate", ylim=(0, 1.02), title="Moving the threshold trades sensitivity for specificity")
    ax.legend()


def outcome_indices(labels, probs, threshold: float, n: int = 4) -> dict[str, list[int]]:
    """The ``n`` most confident true/false positives/negatives: {'TP': [...], 'FP': ..., 'FN': ..., 'TN': ...}."""
    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    pred = p >= threshold
    confidence = np.abs(p - threshold)
    groups = {"TP": pred & (y == 1), "FP": pred & (y == 0), "FN": ~pred & (y == 1), "TN": ~pred & (y == 0)}
    return {name: [int(i) for i in np.flatnonzero(mask)[np.argsort(-confidence[mask])][:n]] for name, mask in groups.items()}


def show_confident_mistakes(split: XraySplit, probs, threshold: float, n: int = 8) -> None:
    """A gallery of the most confident wrong predictions on a split (Introduced in 03)."""
    import matplotlib.pyplot as plt

    groups = outcome_indices(split.labels, probs, threshold, n)
    mistakes = sorted(groups["FP"] + groups["FN"], key=lambda i: -abs(float(probs[i]) - threshold))[:n]
    if not mistakes:
        print("No mistakes at this threshold.")
        return
    fig, axes = plt.subplots(1, len(mistakes), figsize=(2.4 * len(mistakes), 2.8), squeeze=False)
    for ax, i in zip(axes[0], mistakes):
        ax.imshow(split.pixels[i, 0], cmap="gray", vmin=0, vmax=255)
        ax.set_title(f"true {decode_label(split.labels[i])[:4]}\np={float(probs[i]):.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("Most confident mistakes")
    fig.tight_layout()


PUBLISHED_ANCHORS = [
    {"result": "Kermany et al. 2018 (Cell), pneumonia vs normal", "accuracy": 0.928, "sensitivity": 0.932, "specificity": 0.901, "roc_auc": 0.968},
    {"result": "MedMNIST v2, ResNet-50 (224 px), PneumoniaMNIST", "accuracy": 0.884, "sensitivity": None, "specificity": None, "roc_auc": 0.962},
]


def describe_data(synthetic: bool, splits: dict[str, XraySplit]) -> str:
    """Say which data produced a result: synthetic sample, 224 px copies of real X-rays, or the originals."""
    if synthetic:
        return "synthetic sample (not real X-rays)"
    sizes = set(splits["train"].original_sizes)
    if sizes == {(224, 224)}:
        return "real X-rays, downscaled 224 px copies of the Kaggle images"
    return "real X-rays, Kaggle originals"


def results_table(named_metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's test metrics beside the published anchors, as table rows (Introduced in 03)."""
    rows = [dict(anchor) for anchor in PUBLISHED_ANCHORS]
    for name, m in named_metrics.items():
        rows.append({"result": name, **{k: round(m[k], 3) for k in ("accuracy", "sensitivity", "specificity", "roc_auc")}})
    return rows


# ----------------------------------------------------------------------------- explanation


def gradcam(model: PneumoniaCnnModel, images: torch.Tensor, target_class: int = 1) -> np.ndarray:
    """Grad-CAM heatmaps (N x H x W, in [0, 1]) for the last ResNet block, via pytorch-grad-cam (Introduced in 03)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    model.eval()
    with GradCAM(model=model, target_layers=[model.network.layer4[-1]]) as cam:
        return cam(input_tensor=images, targets=[BinaryClassifierOutputTarget(target_class)] * len(images))


def overlay_heatmap(image: torch.Tensor, heatmap: np.ndarray) -> np.ndarray:
    """Blend a heatmap over an image tensor (1 x H x W, in [0, 1]) for display."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = image.float().cpu().expand(3, -1, -1).permute(1, 2, 0).numpy().astype(np.float32)
    return show_cam_on_image(rgb, heatmap, use_rgb=True)


def show_gradcam_grid(model: PneumoniaCnnModel, split: XraySplit, indices: Sequence[int], probs, device: torch.device, title: str) -> None:
    """Grad-CAM overlays for some images of a split, each titled with truth and probability (Introduced in 03)."""
    import matplotlib.pyplot as plt

    if not len(indices):
        print(f"{title}: none")
        return
    images = to_model_input(split.pixels[list(indices)].to(device))
    heatmaps = gradcam(model, images)
    fig, axes = plt.subplots(1, len(indices), figsize=(3 * len(indices), 3.4), squeeze=False)
    for ax, i, image, heat in zip(axes[0], indices, images, heatmaps):
        ax.imshow(overlay_heatmap(image, heat))
        ax.set_title(f"true {decode_label(split.labels[i])[:4]}, p={float(probs[i]):.2f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()


def predict_image(
    image: Path | str | Image.Image, model: PneumoniaCnnModel, metadata: dict[str, Any], device: torch.device, heatmap: bool = False
) -> dict[str, Any]:
    """Probability, label and optionally a Grad-CAM heatmap for one image, preprocessed as in training.

    Introduced in 03_test_predictions.ipynb. ``image`` is a path or a PIL image; the image
    size, normalisation and threshold come from the checkpoint's ``metadata``.
    """
    size = int(metadata["image_size"])
    if isinstance(image, Image.Image):
        pixels = np.asarray(to_grayscale(image).resize((size, size), Image.Resampling.BILINEAR))
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"No image at {path}: check the path.")
        pixels, _, _ = decode_resized(path, size)
    batch = to_model_input(torch.from_numpy(pixels.copy()).view(1, 1, size, size).to(device))
    model.eval()
    with torch.no_grad():
        prob = float(torch.sigmoid(model(batch).float())[0])
    threshold = float(metadata.get("threshold", 0.5))
    result = {"probability": prob, "label": decode_label(int(prob >= threshold)), "threshold": threshold}
    if heatmap:
        result["heatmap"] = gradcam(model, batch)[0]
    return result


# ----------------------------------------------------------------------------- run records and Jovian


def new_run_id() -> str:
    """A sortable, unique id for a run: UTC time plus a random suffix."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + f"-{random.SystemRandom().randrange(16**4):04x}"


def now_iso() -> str:
    """The current UTC time, ISO 8601, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_commit(path: Path = PROJECT_ROOT) -> str | None:
    """The current git commit of the project, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def dataset_summary(root: Path, synthetic: bool, splits: dict[str, XraySplit]) -> dict[str, Any]:
    """Which data a run used: real or synthetic, counts per split and a hash of the file list."""
    return {
        "root": str(root),
        "synthetic": synthetic,
        "counts": {name: split.class_counts() for name, split in splits.items()},
        "file_list_sha256": file_list_sha256((p for split in splits.values() for p in split.paths), root),
    }


def create_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write a new run record ``records/<run_id>.json``; refuses to overwrite an existing one (Introduced in 02)."""
    path = Path(run_dir) / "records" / f"{record['run_id']}.json"
    tmp = _write_beside(path, json.dumps(record, indent=1, default=str).encode("utf-8"))
    try:
        os.link(tmp, path)  # fails if the record exists: an earlier run is never overwritten
    except FileExistsError:
        raise FileExistsError(f"A run record already exists at {path}; records are never overwritten.") from None
    finally:
        os.unlink(tmp)
    return path


def read_record(path: Path) -> dict[str, Any]:
    """Load one run record."""
    return json.loads(Path(path).read_text())


def update_record(path: Path, **sections: Any) -> dict[str, Any]:
    """Add or replace top-level sections of this run's own record, atomically (Introduced in 03)."""
    record = read_record(path)
    record.update(sections)
    atomic_write_text(Path(path), json.dumps(record, indent=1, default=str))
    return record


def list_records(run_dir: Path) -> list[dict[str, Any]]:
    """Every readable run record in the run dir, oldest first; unreadable ones are skipped with a warning."""
    records, skipped = [], []
    for path in sorted((Path(run_dir) / "records").glob("*.json")):
        try:
            records.append(read_record(path))
        except (OSError, ValueError) as err:  # ValueError covers bad JSON and bad UTF-8
            skipped.append((path, str(err)))
    warn_skipped(skipped, "unreadable run records")
    return records


def compare_runs(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run: data, settings, best validation and test metrics (Introduced in 04)."""
    rows = []
    for r in records:
        history = r.get("history") or []
        test = (r.get("test") or {}).get("chosen_threshold") or {}
        rows.append(
            {
                "run_id": r.get("run_id"),
                "data": "synthetic" if r.get("dataset", {}).get("synthetic") else "real",
                "weights": "imagenet" if r.get("model", {}).get("pretrained") else "random",
                "mode": r.get("model", {}).get("train_mode"),
                "size": r.get("config", {}).get("image_size"),
                "epochs": len(history),
                "best_val_loss": (best_epoch(history) or {}).get("val_loss", math.nan),
                "test_acc": test.get("accuracy", math.nan),
                "test_sens": test.get("sensitivity", math.nan),
                "test_spec": test.get("specificity", math.nan),
                "test_auc": test.get("roc_auc", math.nan),
            }
        )
    return rows


def plot_run_curves(records: Sequence[dict[str, Any]]) -> None:
    """Validation loss and accuracy per epoch for several runs on one figure (Introduced in 04)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for r in records:
        history = r.get("history") or []
        epochs = [h["epoch"] for h in history]
        axes[0].plot(epochs, [h["val_loss"] for h in history], "-o", label=r["run_id"])
        axes[1].plot(epochs, [h["val_acc"] for h in history], "-o", label=r["run_id"])
    axes[0].set(xlabel="epoch", ylabel="validation loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy")
    axes[1].legend(fontsize=7)
    fig.tight_layout()


def jovian_credentials_path() -> Path:
    """Where the Jovian client keeps its API key (``jovian configure`` writes it)."""
    return Path(os.path.expanduser("~")) / ".jovian" / "credentials.json"


def jovian_status(timeout_s: float = 5.0, creds_path: Path | None = None) -> tuple[bool, str]:
    """(ready, reason): True only when a key is configured and the Jovian API accepts it within the timeout.

    Introduced in 04_jovian_logging.ipynb. Never prints or returns the key itself.
    """
    if os.environ.get("CXR_JOVIAN", "").strip() == "0":
        return False, "Jovian is switched off (CXR_JOVIAN=0)."
    path = creds_path or jovian_credentials_path()
    try:
        creds = json.loads(path.read_text())
    except FileNotFoundError:
        return False, f"No Jovian credentials ({path} does not exist). Run `jovian configure` once to add your API key."
    except (OSError, json.JSONDecodeError):
        return False, f"The Jovian credentials file {path} is unreadable. Run `jovian configure` again."
    key = creds.get("API_KEY")
    if not key:
        return False, f"{path} holds no API key. Run `jovian configure` to add one."
    api_url = creds.get("API_URL") or "https://api.jovian.com/"
    import requests

    try:
        response = requests.get(api_url.rstrip("/") + "/user/profile", headers={"Authorization": "Bearer " + key}, timeout=timeout_s)
    except requests.RequestException as err:
        return False, f"The Jovian service at {api_url} did not answer ({type(err).__name__}); nothing was uploaded."
    if response.status_code != 200:
        return False, f"The Jovian service at {api_url} refused the API key (HTTP {response.status_code}). Run `jovian configure` again."
    return True, f"Jovian is reachable at {api_url} and the API key is valid."


def jovian_payload(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the blog post logs to Jovian, read from a run record: hyperparams and metrics (Introduced in 04).

    Training metrics come from the epoch with the lowest validation loss, whose weights ``fit`` kept.
    """
    hp = record.get("hyperparams", {})
    best = best_epoch(record.get("history") or []) or {}  # the epoch whose weights fit kept
    test = (record.get("test") or {}).get("chosen_threshold") or {}
    hyperparams = {
        "arch": hp.get("arch"),
        "epochs": hp.get("epochs"),
        "lr": hp.get("max_lr"),
        "scheduler": hp.get("scheduler"),
        "weight_decay": hp.get("weight_decay"),
        "grad_clip": hp.get("grad_clip"),
        "opt": hp.get("opt"),
    }
    metrics = {
        "train_loss": best.get("train_loss"),
        "val_loss": best.get("val_loss"),
        "val_accuracy": best.get("val_acc"),
        "test_accuracy": test.get("accuracy"),
        "test_sensitivity": test.get("sensitivity"),
        "test_specificity": test.get("specificity"),
        "test_roc_auc": test.get("roc_auc"),
        "threshold": test.get("threshold"),
    }
    return {"hyperparams": hyperparams, "metrics": metrics}


def log_to_jovian(record: dict[str, Any], project: str, outputs: Sequence[Path] = (), commit: bool = True, timeout_s: float = 5.0) -> dict[str, Any]:
    """Log a run to Jovian when it is configured and reachable; otherwise print what would be logged.

    Introduced in 04_jovian_logging.ipynb. Returns {'logged': bool, 'reason': str,
    'payload': ...}. Never prompts for a key, never raises on a failed upload, never
    prints the key; the local run record is not touched.
    """
    payload = jovian_payload(record)
    ready, reason = jovian_status(timeout_s)
    print(reason)
    if not ready:
        print("Not logged to Jovian. This is what would have been logged:")
        print(json.dumps(payload, indent=1))
        print("To enable: `jovian configure` (stores your API key in ~/.jovian/credentials.json), then re-run.")
        return {"logged": False, "reason": reason, "payload": payload}
    try:
        import jovian

        jovian.log_hyperparams(payload["hyperparams"])
        jovian.log_metrics(payload["metrics"])
        if commit:
            jovian.commit(project=project, environment=None, outputs=[str(p) for p in outputs])
    except Exception as err:  # the upload is optional: report, keep going
        message = f"Jovian upload failed ({type(err).__name__}); the local record is intact."
        print(message)
        return {"logged": False, "reason": message, "payload": payload}
    return {"logged": True, "reason": reason, "payload": payload}


# ----------------------------------------------------------------------------- teaching demos


def per_batch_mean_accuracy(correct: Sequence[bool], batch_size: int) -> float:
    """The blog post's way: the mean of per-batch accuracies (wrong when the last batch is smaller)."""
    batches = [correct[i : i + batch_size] for i in range(0, len(correct), batch_size)]
    return float(np.mean([np.mean(b) for b in batches]))


def environment_summary(device: torch.device) -> dict[str, Any]:
    """Device name, CPU count and library versions for a run record."""
    info = {"device": str(device), "cpu_count": os.cpu_count(), "platform": platform.platform(), **library_versions()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
