"""Unit tests for the synthetic X-ray-like sample (cxr_support.synthetic)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from helpers import (
    TINY_COUNTS,
    snapshot,
)
from PIL import Image

import cxr_utils as cxr
from cxr_support import synthetic
from cxr_support.dataset import list_split
from cxr_support.download import locate_dataset_root
from cxr_support.images import decode_resized
from cxr_support.synthetic import make_synthetic_dataset

# ----------------------------------------------------------------------------- synthetic sample


def test_synthetic_dataset_has_kaggle_layout(synthetic_tiny):
    """train/val/test x NORMAL/PNEUMONIA, with the requested number of patients in each folder."""
    assert synthetic_tiny.name == "chest_xray" and synthetic_tiny.parent.name == "seed42"
    assert locate_dataset_root(synthetic_tiny) == synthetic_tiny
    # no temporary folder left
    assert sorted(p.name for p in synthetic_tiny.parent.parent.iterdir()) == ["seed42"]
    for split, counts in TINY_COUNTS.items():
        samples, skipped = list_split(synthetic_tiny, split)
        assert skipped == []
        for label, n_patients in enumerate(counts):
            patients = {cxr.patient_id(path) for path, lab in samples if lab == label}
            assert len(patients) == n_patients, (split, label)


def test_synthetic_file_names_parse_to_patients(synthetic_tiny):
    """Every file name fits a Kaggle pattern, and some patients have several images."""
    images_per_patient = Counter()
    for path in synthetic_tiny.rglob("*.jpeg"):
        patient = cxr.patient_id(path)
        assert patient != path.stem, f"{path.name} fits no Kaggle pattern"
        images_per_patient[(path.parent.name, patient)] += 1
    assert max(images_per_patient.values()) > 1
    assert {cls for cls, _ in images_per_patient} == set(cxr.CLASS_NAMES)
    multi = {cls for (cls, _), n in images_per_patient.items() if n > 1}
    assert multi == set(cxr.CLASS_NAMES)  # both classes have multi-image patients


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpeg"))}


def test_synthetic_dataset_is_deterministic(synthetic_tiny, tmp_path):
    """The same seed gives byte-identical files; another seed different ones."""
    again = make_synthetic_dataset(tmp_path / "again", seed=42, counts=TINY_COUNTS)
    assert _file_bytes(again) == _file_bytes(synthetic_tiny)
    other = make_synthetic_dataset(tmp_path / "other", seed=43, counts=TINY_COUNTS)
    other_bytes, same_bytes = _file_bytes(other), _file_bytes(synthetic_tiny)
    common = set(other_bytes) & set(same_bytes)
    assert common  # e.g. every patient's first image has the same name for both seeds
    assert all(other_bytes[k] != same_bytes[k] for k in common)


def test_synthetic_dataset_is_reused(tmp_path, monkeypatch):
    """A second call with the same seed and counts returns the existing folder without redrawing."""
    root = make_synthetic_dataset(tmp_path / "syn", seed=5, counts=TINY_COUNTS)
    before = snapshot(root)

    def no_drawing(*args, **kwargs):
        raise AssertionError("synthetic_xray called although the sample exists")

    monkeypatch.setattr(synthetic, "synthetic_xray", no_drawing)
    assert make_synthetic_dataset(tmp_path / "syn", seed=5, counts=TINY_COUNTS) == root
    assert snapshot(root) == before


def test_synthetic_dataset_has_large_and_rgb_files(synthetic_large):
    """With enough patients, some images are over 1000 px on a side and some files are RGB."""
    sizes, modes = [], Counter()
    for path in synthetic_large.rglob("*.jpeg"):
        with Image.open(path) as image:
            sizes.append(max(image.size))
            modes[image.mode] += 1
    assert max(sizes) > 1000
    assert min(sizes) < 1000
    assert modes["RGB"] >= 1 and modes["L"] > modes["RGB"]


def test_synthetic_brightness_gives_no_class_away(synthetic_large):
    """Mean image brightness does not separate NORMAL from PNEUMONIA.

    Its ROC AUC lies between 0.3 and 0.7.
    """
    from sklearn.metrics import roc_auc_score

    samples, _ = list_split(synthetic_large, "train")
    labels = [label for _, label in samples]
    means = [decode_resized(path, 64)[0].mean() for path, _ in samples]
    assert min(Counter(labels).values()) >= 30
    assert 0.3 <= roc_auc_score(labels, means) <= 0.7


