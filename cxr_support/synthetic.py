"""Support code: the deterministic synthetic X-ray-like sample (lessons need not read this).

It is in the Kaggle layout. Used when no real dataset is found, always with a loud banner:
numbers from it say nothing about real X-rays.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from cxr_support.atomic_files import owner_tag, remove_stale_temporaries
from cxr_support.names import CLASS_NAMES

SYNTHETIC_VERSION = 1


def _smoothstep(d: np.ndarray, width: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(np.clip(d / width, -30, 30)))


def _ellipse_distance(x, y, cx, cy, rx, ry, angle=0.0):
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return np.sqrt((u / rx) ** 2 + (v / ry) ** 2) - 1.0


def synthetic_xray(rng: np.random.Generator, height: int, width: int, anatomy: dict,
                   pneumonia: bool) -> np.ndarray:
    """Draw one X-ray-like image (uint8, H x W).

    Body, dark lungs, ribs, spine, heart, optional opacities.
    """
    aspect = width / height
    y, x = np.mgrid[-1 : 1 : complex(0, height),
                    -aspect : aspect : complex(0, width)].astype(np.float32)
    x = x - anatomy["shift_x"]
    y = y - anatomy["shift_y"]
    img = np.full((height, width), 0.08, np.float32)
    body = _smoothstep(_ellipse_distance(x, y, 0, 0.25, anatomy["body_w"], 1.3), 0.03)
    img += 0.50 * body
    lung_masks = []
    for side in (-1, 1):
        d = _ellipse_distance(x, y, side * anatomy["lung_dx"], -0.05, anatomy["lung_w"],
                              anatomy["lung_h"], side * 0.12)
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
        texture = rng.uniform(0.6, 1.0, size=(max(height // 16, 2),
                                              max(width // 16, 2))).astype(np.float32)
        texture = np.asarray(Image.fromarray(texture).resize((width, height),
                                                             Image.Resampling.BILINEAR))
        img += 0.40 * np.clip(opacity, 0, 1.5) * texture * lungs
        img -= img.mean() - before  # keep the global brightness: no giveaway in the image mean
    img += rng.normal(0, 0.025, img.shape).astype(np.float32)
    gain, offset = (anatomy["gain"] * rng.uniform(0.9, 1.1),
                    anatomy["offset"] + rng.normal(0, 0.03))
    img = np.clip((img * gain + offset), 0, 1) ** anatomy["gamma"]
    out = Image.fromarray((img * 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(radius=max(height / 400, 0.6)))
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
                (side * anatomy["lung_dx"] + rng.normal(0, 0.06), rng.uniform(-0.3, 0.35),
                 rng.uniform(0.08, 0.16))
            )
    return anatomy


SYNTHETIC_COUNTS = {"train": (60, 160), "val": (4, 4), "test": (30, 45)}  # patients per class


def make_synthetic_dataset(out_dir: Path, seed: int = 42,
                           counts: dict[str, tuple[int, int]] | None = None) -> Path:
    """Generate (or reuse) a deterministic synthetic sample in the Kaggle layout; return its root.

    Patients have 1 to 3 images (Kaggle file names),
    sizes vary from 300 px to over 1000 px a side, and a few files are saved as RGB.
    Safe when several processes ask at once: each builds beside the target and renames its
    copy into place; whoever comes second uses the sample already there, never deleting it.
    """
    counts = counts or SYNTHETIC_COUNTS
    root = Path(out_dir) / f"seed{seed}" / "chest_xray"
    stamp = {"generator_version": SYNTHETIC_VERSION, "seed": seed,
             "counts": {k: list(v) for k, v in counts.items()}}
    # folders left by a process killed while it built a sample
    remove_stale_temporaries(Path(out_dir))
    if _is_complete(root, stamp):
        return root
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    # same disk: the rename is atomic
    tmp_root = Path(tempfile.mkdtemp(prefix=f".synthetic-{owner_tag()}-", dir=out_dir))
    try:
        for split_index, (split, patients_per_class) in enumerate(counts.items()):
            for label, n_patients in enumerate(patients_per_class):
                folder = tmp_root / split / CLASS_NAMES[label]
                folder.mkdir(parents=True)
                for patient in range(1, n_patients + 1):
                    _write_synthetic_patient(
                        folder, np.random.default_rng([seed, split_index, label, patient]),
                        label, patient)
        (tmp_root / "SYNTHETIC.json").write_text(json.dumps(stamp))
        _publish(tmp_root, root, stamp)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return root


def _is_complete(root: Path, stamp: dict) -> bool:
    """True when ``root`` holds a finished sample made with these settings.

    Its stamp is written last.
    """
    try:
        return json.loads((root / "SYNTHETIC.json").read_text()) == stamp
    except (OSError, ValueError):
        return False


def _publish(tmp_root: Path, root: Path, stamp: dict) -> None:
    """Rename a finished sample into place.

    Keep a complete one already there (another process may read it).
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    error: OSError | None = None
    for _ in range(5):
        try:
            os.rename(tmp_root, root)  # fails while root exists and is not empty
            return
        except OSError as err:
            error = err
        if _is_complete(root, stamp):
            return  # another process finished first: use its sample, discard ours
        if os.path.lexists(root):
            _move_aside(root)  # an outdated sample of ours, never the current one
    raise OSError(f"Could not put the synthetic sample in place at {root} ({error}). "
                  "Delete that folder and run again.") from error


def _move_aside(root: Path) -> None:
    """Rename an outdated sample out of the way, then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=f".synthetic-old-{owner_tag()}-",
                                  dir=root.parent.parent))
    with contextlib.suppress(FileNotFoundError):  # someone else moved it already
        os.rename(root, aside / "chest_xray")
    shutil.rmtree(aside, ignore_errors=True)


# "Another hospital" (make_other_hospital): the same drawing, another exposure: contrast times
# 0.6 around mid-grey, then 20 grey levels brighter
OTHER_EXPOSURE = (0.6, 20)


def make_other_hospital(out_dir: Path, seed: int = 1,
                        patients: tuple[int, int] = (20, 30)) -> Path:
    """A synthetic "other hospital" for notebook 06's external check; return its folder.

    Class folders only (``NORMAL/``, ``PNEUMONIA/``), films drawn like the main sample's but
    with another exposure (``OTHER_EXPOSURE``: lower contrast, brighter), as a different machine
    or protocol would give. Deterministic; rebuilt when incomplete.
    """
    root = Path(out_dir) / f"other-hospital-seed{seed}"
    stamp = {"generator_version": SYNTHETIC_VERSION, "seed": seed, "patients": list(patients),
             "exposure": list(OTHER_EXPOSURE)}
    if _is_complete(root, stamp):
        return root
    remove_stale_temporaries(Path(out_dir))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".other-{owner_tag()}-", dir=out_dir))
    try:
        for label, n_patients in enumerate(patients):
            folder = tmp_root / CLASS_NAMES[label]
            folder.mkdir()
            for patient in range(1, n_patients + 1):
                _write_synthetic_patient(folder, np.random.default_rng([seed, 99, label, patient]),
                                         label, patient, exposure=OTHER_EXPOSURE)
        (tmp_root / "SYNTHETIC.json").write_text(json.dumps(stamp))
        _publish(tmp_root, root, stamp)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return root


def _write_synthetic_patient(folder: Path, rng: np.random.Generator, label: int,
                             patient: int, exposure: tuple[float, float] | None = None) -> None:
    """Write one synthetic patient's 1 to 3 films, named as in the Kaggle data.

    ``exposure`` (contrast, brightness) changes every film's grey levels: 128 + contrast *
    (grey - 128) + brightness.
    """
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
        pixels = synthetic_xray(rng, round(height * scale), round(width * scale), anatomy,
                                bool(label))
        if exposure is not None:
            contrast, brightness = exposure
            grey = 128 + contrast * (pixels.astype(np.float32) - 128) + brightness
            pixels = np.clip(grey, 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC)
        if rng.random() < 0.05:
            image = image.convert("RGB")
        image.save(folder / f"{stem}.jpeg", quality=90)
