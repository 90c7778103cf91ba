"""Tests for the data layer of cxr_utils: finding, listing, splitting, decoding, caching and loading.

Every input is built small under ``tmp_path``; no real dataset and nothing outside the test's
temporary folders is read or written.
"""

from __future__ import annotations

import os
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cxr_utils as cxr

TINY_COUNTS = {"train": (4, 6), "val": (1, 1), "test": (2, 3)}  # patients per class
LARGE_COUNTS = {"train": (20, 40), "val": (1, 1), "test": (1, 1)}

# ----------------------------------------------------------------------------- shared helpers and fixtures


def noise_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A smooth random grayscale image (upsampled noise), different for each seed."""
    rng = np.random.default_rng(seed)
    small = (rng.random((6, 6)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def write_jpeg(path: Path, seed: int = 0, size: tuple[int, int] = (48, 40)) -> Path:
    """Write a small valid grayscale JPEG and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    noise_image(seed, size).save(path, format="JPEG", quality=90)
    return path


def write_truncated_jpeg(path: Path) -> Path:
    """Write a valid JPEG, then keep only the first half of its bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(123)
    Image.fromarray((rng.random((120, 160)) * 255).astype(np.uint8)).save(path, format="JPEG", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_fake_jpeg(path: Path) -> Path:
    """Write a text file with a .jpeg name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image, only a file with a .jpeg name\n")
    return path


# Kaggle-style names: NORMAL patients 1-3 images each, PNEUMONIA patients 1-2 (bacteria and virus).
TINY_LAYOUT = {
    "train": {
        "NORMAL": ["IM-0001-0001.jpeg", "IM-0001-0001-0002.jpeg", "IM-0002-0001.jpeg", "NORMAL2-IM-0003-0001.jpeg"],
        "PNEUMONIA": ["person1_bacteria_1.jpeg", "person1_bacteria_2.jpeg", "person2_virus_3.jpeg", "person3_bacteria_4.jpeg"],
    },
    "val": {"NORMAL": ["IM-0101-0001.jpeg"], "PNEUMONIA": ["person101_virus_1.jpeg"]},
    "test": {
        "NORMAL": ["IM-0201-0001.jpeg", "IM-0202-0001.jpeg"],
        "PNEUMONIA": ["person201_bacteria_1.jpeg", "person202_virus_2.jpeg"],
    },
}


def make_tree(root: Path, layout: dict[str, dict[str, list[str]]] = TINY_LAYOUT) -> Path:
    """Write a Kaggle-layout dataset of small JPEGs at ``root`` and return ``root``."""
    seed = 0
    for split, classes in layout.items():
        for class_name, names in classes.items():
            (root / split / class_name).mkdir(parents=True, exist_ok=True)
            for name in names:
                seed += 1
                write_jpeg(root / split / class_name / name, seed)
    return root


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every entry under ``root`` with (is folder, size, mtime in ns): equal snapshots mean nothing changed."""
    out = {}
    for path in sorted(root.rglob("*")):
        stat = path.stat()
        out[str(path.relative_to(root))] = (path.is_dir(), stat.st_size if path.is_file() else 0, stat.st_mtime_ns)
    return out


def kaggle_samples(root: Path, n_normal: int = 30, n_pneumonia: int = 60, seed: int = 0) -> list[tuple[Path, int]]:
    """A (path, label) list with Kaggle names and 1-3 images per patient; the files need not exist."""
    rng = np.random.default_rng(seed)
    samples = []
    for patient in range(1, n_normal + 1):
        for k in range(1, int(rng.integers(1, 4)) + 1):
            stem = f"IM-{patient:04d}-0001" if k == 1 else f"IM-{patient:04d}-0001-{k:04d}"
            samples.append((root / "train" / "NORMAL" / f"{stem}.jpeg", 0))
    image_number = 0
    for patient in range(1, n_pneumonia + 1):
        kind = "bacteria" if patient % 2 else "virus"
        for _ in range(int(rng.integers(1, 4))):
            image_number += 1
            samples.append((root / "train" / "PNEUMONIA" / f"person{patient}_{kind}_{image_number}.jpeg", 1))
    return samples


def index_of_pixels(images: torch.Tensor) -> list[int]:
    """Recover the uint8 value of the first pixel of each [0, 1] model-input image (used as a sample id)."""
    return [round(float(v) * 255) for v in images[:, 0, 0, 0]]


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A tiny Kaggle-layout dataset (train/val/test x NORMAL/PNEUMONIA) in tmp_path/data/chest_xray."""
    return make_tree(tmp_path / "data" / "chest_xray")


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    """Count calls of cxr_utils.decode_files (the real one still runs); the list grows by one per call."""
    calls: list[int] = []
    real = cxr.decode_files

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(cxr, "decode_files", counting)
    return calls


@pytest.fixture(scope="module")
def synthetic_tiny(tmp_path_factory) -> Path:
    """The synthetic sample with tiny counts (seed 42), generated once for this module."""
    return cxr.make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seed=42, counts=TINY_COUNTS)


@pytest.fixture(scope="module")
def synthetic_large(tmp_path_factory) -> Path:
    """A larger synthetic sample (60 training patients), generated once for this module."""
    return cxr.make_synthetic_dataset(tmp_path_factory.mktemp("synthetic-large"), seed=42, counts=LARGE_COUNTS)


# ----------------------------------------------------------------------------- patient ids


@pytest.mark.parametrize(
    ("name", "patient"),
    [
        ("person1_bacteria_1.jpeg", "person1"),
        ("person1_virus_12.jpeg", "person1"),
        ("person1000_bacteria_2931.jpeg", "person1000"),
        ("IM-0011-0001.jpeg", "IM-0011"),
        ("IM-0011-0001-0002.jpeg", "IM-0011"),
        ("NORMAL2-IM-0123-0001.jpeg", "NORMAL2-IM-0123"),
        ("NORMAL2-IM-0123-0001-0002.jpeg", "NORMAL2-IM-0123"),
        ("scan_from_elsewhere.png", "scan_from_elsewhere"),
    ],
)
def test_patient_id_reads_kaggle_names(name, patient):
    """Every Kaggle file-name pattern maps to its patient; an unknown name is its own patient."""
    assert cxr.patient_id(name) == patient
    assert cxr.patient_id(Path("/some/folder") / name) == patient


def test_patient_id_does_not_merge_different_patients():
    """Patients whose numbers share a prefix stay apart (person1 vs person12, IM-0011 vs IM-0012)."""
    assert cxr.patient_id("person1_virus_1.jpeg") != cxr.patient_id("person12_virus_1.jpeg")
    assert cxr.patient_id("IM-0011-0001.jpeg") != cxr.patient_id("IM-0012-0001.jpeg")
    assert cxr.patient_id("IM-0123-0001.jpeg") != cxr.patient_id("NORMAL2-IM-0123-0001.jpeg")


# ----------------------------------------------------------------------------- patient split


def test_patient_split_keeps_patients_on_one_side(tmp_path):
    """No patient has images on both sides, and every index appears exactly once."""
    samples = kaggle_samples(tmp_path)
    train, val = cxr.patient_split(samples, val_fraction=0.2, seed=1)
    assert cxr.patients_on_both_sides(samples, train, val) == 0
    assert sorted(train + val) == list(range(len(samples)))
    assert not set(train) & set(val)
    assert train == sorted(train) and val == sorted(val)


def test_patient_split_is_deterministic_in_the_seed(tmp_path):
    """The same seed gives the same split; another seed gives another one."""
    samples = kaggle_samples(tmp_path)
    assert cxr.patient_split(samples, 0.2, seed=1) == cxr.patient_split(samples, 0.2, seed=1)
    assert cxr.patient_split(samples, 0.2, seed=1)[1] != cxr.patient_split(samples, 0.2, seed=2)[1]


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.3])
def test_patient_split_is_stratified(tmp_path, val_fraction):
    """Each class puts about val_fraction of its images in val (whole patients: at most 3 images over)."""
    samples = kaggle_samples(tmp_path)
    _, val = cxr.patient_split(samples, val_fraction=val_fraction, seed=3)
    per_class = Counter(label for _, label in samples)
    val_per_class = Counter(samples[i][1] for i in val)
    for label in (0, 1):
        target = val_fraction * per_class[label]
        assert target <= val_per_class[label] < target + 3, (label, val_per_class, per_class)


def test_patient_split_takes_just_enough_patients(tmp_path):
    """With one image per patient, val gets exactly ceil(val_fraction * n) images of each class."""
    samples = [(tmp_path / f"IM-{i:04d}-0001.jpeg", 0) for i in range(10)]
    samples += [(tmp_path / f"person{i}_virus_{i}.jpeg", 1) for i in range(25)]
    _, val = cxr.patient_split(samples, val_fraction=0.2, seed=0)
    assert Counter(samples[i][1] for i in val) == {0: 2, 1: 5}


def test_patient_split_puts_both_classes_in_val(tmp_path):
    """Even a small class is represented in val."""
    samples = kaggle_samples(tmp_path, n_normal=4, n_pneumonia=40)
    _, val = cxr.patient_split(samples, val_fraction=0.1, seed=0)
    assert {samples[i][1] for i in val} == {0, 1}


def test_random_image_split_leaks_patients(tmp_path):
    """The blog post's image-level split puts the same patient on both sides (the pitfall it shows)."""
    samples = kaggle_samples(tmp_path)
    train, val = cxr.random_image_split(len(samples), val_fraction=0.2, seed=1)
    assert sorted(train + val) == list(range(len(samples)))
    assert len(val) == int(0.2 * len(samples))
    assert cxr.patients_on_both_sides(samples, train, val) > 0


def test_load_or_make_split_saves_and_reuses(tmp_path, monkeypatch):
    """The split is saved as split-seed<N>.json in run_dir and read back from it on the next call."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    samples = kaggle_samples(root)
    first = cxr.load_or_make_split(samples, root, run_dir, seed=3, val_fraction=0.2)
    saved = run_dir / "split-seed3.json"
    assert saved.is_file()
    assert first == cxr.patient_split(samples, 0.2, seed=3)

    def no_recompute(*args, **kwargs):
        raise AssertionError("patient_split called although a matching saved split exists")

    monkeypatch.setattr(cxr, "patient_split", no_recompute)
    assert cxr.load_or_make_split(samples, root, run_dir, seed=3, val_fraction=0.2) == first
    assert sorted(p.name for p in run_dir.iterdir()) == ["split-seed3.json"]  # no temporary files left


def test_load_or_make_split_recomputes_for_a_new_file_list(tmp_path):
    """Adding a file changes the fingerprint: the split is recomputed and the file rewritten."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    samples = kaggle_samples(root)
    cxr.load_or_make_split(samples, root, run_dir, seed=3)
    before = (run_dir / "split-seed3.json").read_text()
    added = (root / "train" / "PNEUMONIA" / "person999_virus_999.jpeg", 1)
    train, val = cxr.load_or_make_split([*samples, added], root, run_dir, seed=3)
    assert sorted(train + val) == list(range(len(samples) + 1))
    after = (run_dir / "split-seed3.json").read_text()
    assert after != before
    assert "person999_virus_999.jpeg" in after


# ----------------------------------------------------------------------------- finding the dataset


def test_find_dataset_wrong_explicit_dir_names_it(tmp_path):
    """A CXR_DATA_DIR without the dataset is an error naming that folder, never a silent fallback."""
    wrong = tmp_path / "downloads" / "not-the-dataset"
    wrong.mkdir(parents=True)
    (wrong / "train").mkdir()  # train/ alone is not enough
    with pytest.raises(cxr.DataError, match=re.escape(str(wrong))):
        cxr.find_dataset(wrong)
    with pytest.raises(cxr.DataError, match=re.escape(str(tmp_path / "missing"))):
        cxr.find_dataset(tmp_path / "missing")


def test_find_dataset_wrong_explicit_dir_given_as_str(tmp_path):
    """A wrong folder given as a string (as a notebook parameter passes it) is the same DataError."""
    with pytest.raises(cxr.DataError, match=re.escape(str(tmp_path / "missing"))):
        cxr.find_dataset(str(tmp_path / "missing"))


def test_find_dataset_handles_the_kaggle_zip_nesting(tmp_path):
    """The Kaggle zip's chest_xray/chest_xray/{train,test,val} is found, not the __MACOSX copy beside it."""
    download = tmp_path / "download"
    inner = download / "chest_xray" / "chest_xray"
    for split in ("train", "test", "val"):
        (inner / split / "NORMAL").mkdir(parents=True)
    for split in ("train", "test"):  # macOS resource-fork mirror beside the real folder
        (download / "chest_xray" / "__MACOSX" / split).mkdir(parents=True)
        (download / "__MACOSX" / "chest_xray" / split).mkdir(parents=True)
    assert cxr.locate_dataset_root(download) == inner
    assert cxr.locate_dataset_root(download / "chest_xray") == inner
    assert cxr.locate_dataset_root(inner) == inner
    assert cxr.find_dataset(download) == inner


def test_locate_dataset_root_returns_none_without_dataset(tmp_path):
    """A folder with no train/ and test/ at any of the searched depths gives None."""
    (tmp_path / "chest_xray" / "chest_xray" / "train").mkdir(parents=True)
    assert cxr.locate_dataset_root(tmp_path) is None
    assert cxr.locate_dataset_root(tmp_path / "nothing-here") is None


def test_find_dataset_none_without_defaults(tmp_path, monkeypatch):
    """With no CXR_DATA_DIR and no default folder holding the data, the answer is None (synthetic sample)."""
    monkeypatch.setattr(cxr, "default_data_dirs", lambda: [tmp_path / "nothing"])
    assert cxr.find_dataset(None) is None


def test_find_dataset_none_uses_first_default_with_data(tmp_path, monkeypatch):
    """With no CXR_DATA_DIR, the first default folder that holds the dataset is used."""
    make_tree(tmp_path / "data" / "chest_xray")
    monkeypatch.setattr(cxr, "default_data_dirs", lambda: [tmp_path / "nothing", tmp_path / "data"])
    assert cxr.find_dataset(None) == tmp_path / "data" / "chest_xray"


# ----------------------------------------------------------------------------- listing split folders


def test_list_split_lists_labels_in_order(tiny_root):
    """NORMAL files get label 0, PNEUMONIA label 1, in sorted order, with nothing skipped."""
    samples, skipped = cxr.list_split(tiny_root, "train")
    assert skipped == []
    expected = [
        (tiny_root / "train" / c / n, label) for label, c in enumerate(cxr.CLASS_NAMES) for n in sorted(TINY_LAYOUT["train"][c])
    ]
    assert samples == expected


def test_list_split_missing_split_folder(tiny_root):
    """A missing split folder is a DataError that names it."""
    missing = tiny_root / "holdout"
    with pytest.raises(cxr.DataError, match=re.escape(str(missing))):
        cxr.list_split(tiny_root, "holdout")


def test_list_split_missing_class_folder(tiny_root):
    """A split without one of its class folders is a DataError that names the missing folder."""
    for path in (tiny_root / "test" / "PNEUMONIA").iterdir():
        path.unlink()
    (tiny_root / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(cxr.DataError, match=re.escape(str(tiny_root / "test" / "PNEUMONIA"))):
        cxr.list_split(tiny_root, "test")


@pytest.mark.parametrize("junk", [[], [".DS_Store", "notes.txt"]])
def test_list_split_empty_class_folder(tiny_root, junk):
    """A class folder with no images (empty, or junk only) is a DataError that names it."""
    folder = tiny_root / "val" / "NORMAL"
    for path in folder.iterdir():
        path.unlink()
    for name in junk:
        (folder / name).write_text("x")
    with pytest.raises(cxr.DataError, match=re.escape(str(folder))):
        cxr.list_split(tiny_root, "val")


def test_list_split_skips_and_reports_junk(tiny_root):
    """System files, non-images, empty files and sub-folders are skipped with a reason, never counted."""
    folder = tiny_root / "train" / "NORMAL"
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"thumbs")
    (folder / "notes.txt").write_text("labels checked by hand")
    (folder / "IM-0999-0001.jpeg").touch()  # zero bytes
    (folder / "extra").mkdir()
    write_jpeg(folder / "extra" / "IM-0998-0001.jpeg")
    samples, skipped = cxr.list_split(tiny_root, "train")
    assert len(samples) == sum(len(names) for names in TINY_LAYOUT["train"].values())
    reasons = {Path(path).name: reason for path, reason in skipped}
    assert set(reasons) == {".DS_Store", "Thumbs.db", "notes.txt", "IM-0999-0001.jpeg", "extra"}
    assert "hidden" in reasons[".DS_Store"] and "system" in reasons["Thumbs.db"]
    assert ".txt" in reasons["notes.txt"]
    assert "empty" in reasons["IM-0999-0001.jpeg"]
    assert "folder" in reasons["extra"]
    listed = {path.name for path, _ in samples}
    assert not listed & set(reasons)
    assert "IM-0998-0001.jpeg" not in listed  # nothing is read from inside a sub-folder


# ----------------------------------------------------------------------------- decoding odd images

SIZE = 32


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
    image = cxr.read_xray(path)
    assert image.mode == "L" and image.size == (64, 48)
    pixels = np.asarray(image).astype(int)
    assert abs(pixels[24, 8] - left) <= 3
    assert abs(pixels[24, 56] - right) <= 3


@pytest.mark.parametrize(("name", "writer", "mode", "left", "right"), ODD_IMAGES, ids=[row[0] for row in ODD_IMAGES])
def test_decode_resized_gives_uint8_square(tmp_path, name, writer, mode, left, right):
    """decode_resized returns a (size x size) uint8 array plus the original size and mode."""
    path = writer(tmp_path / name)
    pixels, original_size, original_mode = cxr.decode_resized(path, SIZE)
    assert pixels.dtype == np.uint8 and pixels.shape == (SIZE, SIZE)
    assert original_size == (64, 48) and original_mode == mode
    assert abs(int(pixels[SIZE // 2, 3]) - left) <= 3
    assert abs(int(pixels[SIZE // 2, SIZE - 4]) - right) <= 3


def test_read_xray_rejects_truncated_jpeg(tmp_path):
    """A JPEG cut in half is a DataError naming the file (read_xray and decode_resized)."""
    path = write_truncated_jpeg(tmp_path / "person5_virus_9.jpeg")
    with pytest.raises(cxr.DataError, match=re.escape(str(path))):
        cxr.read_xray(path)
    with pytest.raises(cxr.DataError, match=re.escape(str(path))):
        cxr.decode_resized(path, SIZE)


def test_read_xray_rejects_text_named_jpeg(tmp_path):
    """A text file named .jpeg is a DataError naming the file in read_xray."""
    path = write_fake_jpeg(tmp_path / "IM-0042-0001.jpeg")
    with pytest.raises(cxr.DataError, match=re.escape(str(path))):
        cxr.read_xray(path)


def test_decode_resized_rejects_text_named_jpeg(tmp_path):
    """A text file named .jpeg is a DataError naming the file in decode_resized too."""
    path = write_fake_jpeg(tmp_path / "IM-0042-0001.jpeg")
    with pytest.raises(cxr.DataError, match=re.escape(str(path))):
        cxr.decode_resized(path, SIZE)


# ----------------------------------------------------------------------------- prepare_data with bad files


def _messages(records) -> str:
    return "\n".join(str(r.message) for r in records)


def test_prepare_data_skips_truncated_jpeg_and_leaves_data_alone(tiny_root, tmp_path):
    """A truncated JPEG is skipped with a warning naming it, left out of the counts; the data folder is untouched."""
    bad = write_truncated_jpeg(tiny_root / "train" / "NORMAL" / "IM-0005-0001.jpeg")
    before = snapshot(tiny_root)
    with pytest.warns(UserWarning) as records:
        splits = cxr.prepare_data(tiny_root, tmp_path / "run", image_size=SIZE, seed=0, progress=False)
    assert str(bad) in _messages(records)
    assert snapshot(tiny_root) == before
    good_train = sum(len(names) for names in TINY_LAYOUT["train"].values())
    assert len(splits["train"]) + len(splits["val"]) == good_train
    counts = Counter()
    for name in ("train", "val"):
        counts.update(splits[name].class_counts())
        assert bad not in splits[name].paths
    assert counts == {"NORMAL": len(TINY_LAYOUT["train"]["NORMAL"]), "PNEUMONIA": len(TINY_LAYOUT["train"]["PNEUMONIA"])}
    skipped = [path for name in ("train", "val") for path, _ in splits[name].skipped]
    assert skipped == [str(bad)]
    assert len(splits["test"]) == 4 and len(splits["kaggle_val"]) == 2


def test_prepare_data_skips_truncated_and_fake_jpegs(tiny_root, tmp_path):
    """A truncated JPEG and a fake .jpeg are both skipped with a warning listing them, and not counted."""
    truncated = write_truncated_jpeg(tiny_root / "train" / "NORMAL" / "IM-0005-0001.jpeg")
    fake = write_fake_jpeg(tiny_root / "train" / "PNEUMONIA" / "person7_virus_7.jpeg")
    before = snapshot(tiny_root)
    with pytest.warns(UserWarning) as records:
        splits = cxr.prepare_data(tiny_root, tmp_path / "run", image_size=SIZE, seed=0, progress=False)
    assert str(truncated) in _messages(records) and str(fake) in _messages(records)
    assert snapshot(tiny_root) == before
    assert len(splits["train"]) + len(splits["val"]) == sum(len(names) for names in TINY_LAYOUT["train"].values())
    skipped = sorted(path for name in ("train", "val") for path, _ in splits[name].skipped)
    assert skipped == sorted([str(truncated), str(fake)])


def test_prepare_data_writes_only_into_run_dir(tiny_root, tmp_path):
    """prepare_data keeps its split file and cache in run_dir and leaves the data folder unchanged."""
    before = snapshot(tiny_root)
    run_dir = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean dataset gives no warnings at all
        splits = cxr.prepare_data(tiny_root, run_dir, image_size=SIZE, seed=0, progress=False)
    assert snapshot(tiny_root) == before
    assert (run_dir / "split-seed0.json").is_file()
    assert len(list((run_dir / "cache").glob("*.pt"))) == 4  # train, val, test, kaggle_val
    assert set(splits) == {"train", "val", "test", "kaggle_val"}
    n_train, n_val = len(splits["train"]), len(splits["val"])
    together = [(path, 0) for path in splits["train"].paths + splits["val"].paths]
    assert cxr.patients_on_both_sides(together, range(n_train), range(n_train, n_train + n_val)) == 0


# ----------------------------------------------------------------------------- decode-once cache


@pytest.fixture
def cache_samples(tiny_root) -> list[tuple[Path, int]]:
    """The tiny dataset's training files as (path, label)."""
    return cxr.list_split(tiny_root, "train")[0]


def test_cache_is_reused_without_decoding(cache_samples, tmp_path, monkeypatch):
    """A second load_pixels of the same files reads the cache file and decodes nothing."""
    cache_dir = tmp_path / "cache"
    first = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    assert len(list(cache_dir.glob("train-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decode_files called although the cache matches")

    monkeypatch.setattr(cxr, "decode_files", no_decoding)
    second = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    assert torch.equal(second.pixels, first.pixels)
    assert torch.equal(second.labels, first.labels)
    assert second.paths == first.paths
    assert second.original_sizes == first.original_sizes and second.original_modes == first.original_modes


def test_cached_pixels_equal_decode_resized(cache_samples, tmp_path):
    """Fresh and cached pixels are exactly decode_resized's, in order, with the right labels."""
    cache_dir = tmp_path / "cache"
    fresh = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    cached = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    for split in (fresh, cached):
        assert split.pixels.shape == (len(cache_samples), 1, SIZE, SIZE) and split.pixels.dtype == torch.uint8
        assert split.labels.tolist() == [label for _, label in cache_samples]
        for i, (path, _) in enumerate(cache_samples):
            expected, size, mode = cxr.decode_resized(path, SIZE)
            assert np.array_equal(split.pixels[i, 0].numpy(), expected), path
            assert split.original_sizes[i] == size and split.original_modes[i] == mode


def test_cache_rebuilds_when_a_file_changes(cache_samples, tmp_path, decode_calls):
    """Replacing one file (new content, new mtime) gives a new cache file and the new pixels."""
    cache_dir = tmp_path / "cache"
    cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    old_files = set(cache_dir.glob("*.pt"))
    changed = cache_samples[0][0]
    write_jpeg(changed, seed=999)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    split = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    new_files = set(cache_dir.glob("*.pt")) - old_files
    assert len(new_files) == 1 and len(decode_calls) == 2
    assert np.array_equal(split.pixels[0, 0].numpy(), cxr.decode_resized(changed, SIZE)[0])


def test_cache_key_depends_on_image_size(cache_samples, tmp_path, decode_calls):
    """Another image size is another cache file, decoded afresh at that size."""
    cache_dir = tmp_path / "cache"
    cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    other = cxr.load_pixels("train", cache_samples, 40, cache_dir, progress=False)
    assert other.pixels.shape[-2:] == (40, 40)
    assert len(list(cache_dir.glob("*.pt"))) == 2 and len(decode_calls) == 2


def test_cache_write_leaves_no_temporary_files(cache_samples, tmp_path):
    """The cache is written atomically: only the finished .pt file is left in the cache folder."""
    cache_dir = tmp_path / "cache"
    cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    cxr.load_pixels("val", cache_samples[:3], SIZE, cache_dir, progress=False)
    names = sorted(p.name for p in cache_dir.iterdir())
    assert len(names) == 2
    assert all(re.fullmatch(r"(train|val)-[0-9a-f]{20}\.pt", name) for name in names), names


def test_corrupt_cache_is_ignored_and_rebuilt(cache_samples, tmp_path, decode_calls):
    """A damaged cache file is reported with a warning, decoded afresh and rewritten."""
    cache_dir = tmp_path / "cache"
    first = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    (cache_file,) = cache_dir.glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="Ignoring unreadable cache"):
        again = cxr.load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    assert len(decode_calls) == 2
    assert torch.equal(again.pixels, first.pixels)
    assert torch.equal(torch.load(cache_file, weights_only=True)["pixels"], first.pixels)  # rewritten whole


def test_cache_remembers_skipped_files(tiny_root, tmp_path, decode_calls):
    """A split loaded from the cache still lists and warns about the unreadable files."""
    bad = write_truncated_jpeg(tiny_root / "train" / "NORMAL" / "IM-0005-0001.jpeg")
    samples = cxr.list_split(tiny_root, "train")[0]
    cache_dir = tmp_path / "cache"
    for _ in range(2):
        with pytest.warns(UserWarning, match=re.escape(str(bad))):
            split = cxr.load_pixels("train", samples, SIZE, cache_dir, progress=False)
        assert [path for path, _ in split.skipped] == [str(bad)]
        assert len(split) == len(samples) - 1 and bad not in split.paths
    assert len(decode_calls) == 1


# ----------------------------------------------------------------------------- stratified subset


def _labelled(n_normal: int, n_pneumonia: int) -> list[tuple[Path, int]]:
    return [(Path(f"n{i}.jpeg"), 0) for i in range(n_normal)] + [(Path(f"p{i}.jpeg"), 1) for i in range(n_pneumonia)]


def test_stratified_subset_keeps_class_proportions():
    """Capping 30 NORMAL + 90 PNEUMONIA at 40 keeps about 10 + 30, all distinct, from the given indices."""
    samples = _labelled(30, 90)
    indices = list(range(0, 120))
    kept = cxr.stratified_subset(samples, indices, cap=40, seed=0)
    assert len(kept) <= 40 and len(set(kept)) == len(kept) and set(kept) <= set(indices)
    counts = Counter(samples[i][1] for i in kept)
    assert abs(counts[0] - 10) <= 1 and abs(counts[1] - 30) <= 1


def test_stratified_subset_is_deterministic():
    """The same seed gives the same subset; another seed another one."""
    samples = _labelled(30, 90)
    indices = list(range(120))
    assert cxr.stratified_subset(samples, indices, 40, seed=1) == cxr.stratified_subset(samples, indices, 40, seed=1)
    assert cxr.stratified_subset(samples, indices, 40, seed=1) != cxr.stratified_subset(samples, indices, 40, seed=2)


def test_stratified_subset_without_cap_keeps_everything():
    """No cap, or a cap above the size, returns the indices unchanged."""
    samples = _labelled(3, 5)
    assert cxr.stratified_subset(samples, [1, 4, 6], None, seed=0) == [1, 4, 6]
    assert cxr.stratified_subset(samples, [1, 4, 6], 3, seed=0) == [1, 4, 6]


def test_stratified_subset_never_exceeds_cap():
    """'At most cap' holds even when both class shares are exact halves (5 + 5 capped at 3)."""
    samples = _labelled(5, 5)
    assert len(cxr.stratified_subset(samples, list(range(10)), cap=3, seed=0)) <= 3


# ----------------------------------------------------------------------------- synthetic sample


def test_synthetic_dataset_has_kaggle_layout(synthetic_tiny):
    """train/val/test x NORMAL/PNEUMONIA, with the requested number of patients in each folder."""
    assert synthetic_tiny.name == "chest_xray" and synthetic_tiny.parent.name == "seed42"
    assert cxr.locate_dataset_root(synthetic_tiny) == synthetic_tiny
    assert sorted(p.name for p in synthetic_tiny.parent.parent.iterdir()) == ["seed42"]  # no temporary folder left
    for split, counts in TINY_COUNTS.items():
        samples, skipped = cxr.list_split(synthetic_tiny, split)
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
    again = cxr.make_synthetic_dataset(tmp_path / "again", seed=42, counts=TINY_COUNTS)
    assert _file_bytes(again) == _file_bytes(synthetic_tiny)
    other = cxr.make_synthetic_dataset(tmp_path / "other", seed=43, counts=TINY_COUNTS)
    other_bytes, same_bytes = _file_bytes(other), _file_bytes(synthetic_tiny)
    common = set(other_bytes) & set(same_bytes)
    assert common  # e.g. every patient's first image has the same name for both seeds
    assert all(other_bytes[k] != same_bytes[k] for k in common)


def test_synthetic_dataset_is_reused(tmp_path, monkeypatch):
    """A second call with the same seed and counts returns the existing folder without redrawing."""
    root = cxr.make_synthetic_dataset(tmp_path / "syn", seed=5, counts=TINY_COUNTS)
    before = snapshot(root)

    def no_drawing(*args, **kwargs):
        raise AssertionError("synthetic_xray called although the sample exists")

    monkeypatch.setattr(cxr, "synthetic_xray", no_drawing)
    assert cxr.make_synthetic_dataset(tmp_path / "syn", seed=5, counts=TINY_COUNTS) == root
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
    """Mean image brightness does not separate NORMAL from PNEUMONIA (ROC AUC between 0.3 and 0.7)."""
    from sklearn.metrics import roc_auc_score

    samples, _ = cxr.list_split(synthetic_large, "train")
    labels = [label for _, label in samples]
    means = [cxr.decode_resized(path, 64)[0].mean() for path, _ in samples]
    assert min(Counter(labels).values()) >= 30
    assert 0.3 <= roc_auc_score(labels, means) <= 0.7


# ----------------------------------------------------------------------------- augmentation, normalisation, loaders


def _left_bright_batch(n: int = 8, size: int = 32) -> torch.Tensor:
    images = torch.full((n, 1, size, size), 0.2)
    images[..., : size // 2] = 0.8
    return images


def test_augment_batch_keeps_shape_and_range():
    """Output has the input's shape and dtype, stays in [0, 1], and really changes the images."""
    images = torch.rand(6, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    out = cxr.augment_batch(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, images, atol=0.05)


def test_augment_batch_is_reproducible_with_a_generator():
    """The same generator seed gives the same augmentation."""
    images = _left_bright_batch()
    first = cxr.augment_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, cxr.augment_batch(images, torch.Generator().manual_seed(3)))


def test_augment_batch_never_flips():
    """A left-bright image stays left-bright after augmentation (no mirroring)."""
    images = _left_bright_batch(n=64)
    out = cxr.augment_batch(images, torch.Generator().manual_seed(0))
    left = out[..., :, :12].mean(dim=(1, 2, 3))
    right = out[..., :, 20:].mean(dim=(1, 2, 3))
    assert bool((left - right > 0.2).all()), (left - right).min()


def test_to_model_input_keeps_one_channel_and_shape():
    """uint8 (N, 1, H, W) pixels become float32 of the same shape: one channel, no ImageNet normalisation."""
    pixels = torch.full((2, 1, 4, 5), 128, dtype=torch.uint8)
    out = cxr.to_model_input(pixels)
    assert out.shape == (2, 1, 4, 5) and out.dtype == torch.float32
    assert torch.equal(out, torch.full((2, 1, 4, 5), 128 / 255))  # not (128/255 - mean) / std
    assert torch.equal(pixels, torch.full((2, 1, 4, 5), 128, dtype=torch.uint8))  # the input is not modified


def test_to_model_input_scales_uint8_to_unit_range():
    """Every uint8 value v becomes exactly v / 255: 0 is 0.0 and 255 is 1.0."""
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    out = cxr.to_model_input(pixels)
    assert float(out[0, 0, 0, 0]) == 0.0 and float(out[0, 0, 15, 15]) == 1.0
    torch.testing.assert_close(out, torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16) / 255, atol=0, rtol=0)


def _numbered_split(n: int = 10, size: int = 8) -> cxr.XraySplit:
    """An in-memory split whose sample i is filled with the value 10 * i (so batches reveal which samples they hold)."""
    pixels = torch.stack([torch.full((1, size, size), 10 * i, dtype=torch.uint8) for i in range(n)])
    labels = torch.tensor([i % 2 for i in range(n)])
    paths = [Path(f"img{i}.jpeg") for i in range(n)]
    return cxr.XraySplit("numbered", pixels, labels, paths, [(size, size)] * n, ["L"] * n, [])


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "expected_len"), [(3, False, 4), (3, True, 3), (5, False, 2), (16, False, 1)]
)
def test_cached_batch_loader_len(batch_size, drop_last, expected_len):
    """len() is the number of batches, with or without the last partial one."""
    loader = cxr.CachedBatchLoader(_numbered_split(10), batch_size, torch.device("cpu"), drop_last=drop_last)
    assert len(loader) == expected_len
    assert sum(1 for _ in loader) == expected_len


def test_cached_batch_loader_serves_every_sample_once_per_epoch():
    """With shuffling, each epoch yields every sample exactly once, in a new order, with its own label."""
    split = _numbered_split(10)
    loader = cxr.CachedBatchLoader(split, 3, torch.device("cpu"), shuffle=True, seed=0)
    orders = []
    for _ in range(3):
        seen = []
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [3, 3, 3, 1]
        for images, labels in batches:
            assert images.shape == (len(labels), 1, 8, 8) and images.dtype == torch.float32
            assert labels.dtype == torch.float32
            ids = [v // 10 for v in index_of_pixels(images)]
            assert labels.tolist() == [float(i % 2) for i in ids]
            assert torch.equal(images, split.pixels[ids].float() / 255)  # [0, 1], not normalised
            seen += ids
        assert sorted(seen) == list(range(10))
        orders.append(seen)
    assert any(order != list(range(10)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


def test_cached_batch_loader_without_shuffle_keeps_order_and_augments_in_range():
    """Without shuffling the order is the split's and images are pixels / 255; augmented images stay in [0, 1]."""
    split = _numbered_split(10)
    plain = cxr.CachedBatchLoader(split, 4, torch.device("cpu"))
    assert [v // 10 for images, _ in plain for v in index_of_pixels(images)] == list(range(10))
    plain_images = torch.cat([images for images, _ in plain])
    assert torch.equal(plain_images, split.pixels.float() / 255)
    augmented = cxr.CachedBatchLoader(split, 4, torch.device("cpu"), augment=True, seed=1)
    augmented_images = []
    for images, labels in augmented:
        assert images.shape[1:] == (1, 8, 8) and images.dtype == torch.float32 and labels.dtype == torch.float32
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        augmented_images.append(images)
    assert not torch.equal(torch.cat(augmented_images), plain_images)  # augmentation really ran


@pytest.mark.parametrize(
    ("fmt", "size", "draft"),
    [("PNG", (100, 80), None), ("JPEG", (50, 40), None), ("JPEG", (400, 300), SIZE)],
    ids=["png", "small-jpeg", "large-jpeg-drafted"],
)
def test_file_dataset_matches_decode_resized(tmp_path, fmt, size, draft):
    """XrayFileDataset with the eval transforms gives to_model_input(decode_resized(...)): 1 channel, within 1/255."""
    path = tmp_path / f"IM-0001-0001.{fmt.lower()}"
    noise_image(7, size).save(path, format=fmt)
    dataset = cxr.XrayFileDataset([path], [1], cxr.make_transforms(SIZE, train=False), draft_size=draft)
    assert len(dataset) == 1
    image, label = dataset[0]
    pixels, _, _ = cxr.decode_resized(path, SIZE)
    expected = cxr.to_model_input(torch.from_numpy(pixels.copy()).view(1, 1, SIZE, SIZE))[0]
    assert label == 1 and image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    torch.testing.assert_close(image, expected, atol=1 / 255, rtol=0)


def test_train_transforms_augment_but_keep_shape(tmp_path):
    """make_transforms(train=True) gives the eval shape (1 channel, [0, 1]) but different pixels (random augmentation)."""
    path = tmp_path / "IM-0001-0001.png"
    noise_image(3, (60, 50)).save(path)
    image = cxr.read_xray(path)
    torch.manual_seed(0)
    train = cxr.make_transforms(SIZE, train=True)(image)
    evaluation = cxr.make_transforms(SIZE, train=False)(image)
    assert train.shape == evaluation.shape == (1, SIZE, SIZE)
    assert train.dtype == evaluation.dtype == torch.float32
    for image_tensor in (train, evaluation):
        assert float(image_tensor.min()) >= 0.0 and float(image_tensor.max()) <= 1.0
    assert not torch.allclose(train, evaluation, atol=0.05)


def test_classic_loader_matches_cached_loader_for_large_jpegs(tmp_path):
    """make_classic_loader (eval, no workers) decodes large JPEGs like the cache (reduced-scale draft included).

    Its batches are 1-channel [0, 1] images equal, within 1/255, to CachedBatchLoader's over the same split.
    The control shows the check can fail: the fully decoded files (no draft) differ by more than that.
    """
    samples = [(write_jpeg(tmp_path / f"IM-000{i}-0001.jpeg", seed=20 + i, size=(400, 300)), i % 2) for i in range(3)]
    split = cxr.load_pixels("classic", samples, SIZE, None, progress=False)
    classic = cxr.make_classic_loader(split, SIZE, batch_size=2, train=False, device=torch.device("cpu"), workers=0)
    assert len(classic) == 2
    batches = list(classic)
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    cached = torch.cat([images for images, _ in cxr.CachedBatchLoader(split, 2, torch.device("cpu"))])
    assert images.shape == cached.shape == (3, 1, SIZE, SIZE) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1, 0]
    torch.testing.assert_close(images, cached, atol=1 / 255, rtol=0)
    full_decode = cxr.XrayFileDataset(split.paths, split.labels.tolist(), cxr.make_transforms(SIZE, train=False))
    undrafted = torch.stack([full_decode[i][0] for i in range(3)])
    assert float((undrafted - cached).abs().max()) > 1 / 255


def test_split_subset_and_class_counts(cache_samples, tmp_path):
    """XraySplit.subset keeps the chosen samples' pixels, labels and paths; class_counts counts per class."""
    split = cxr.load_pixels("train", cache_samples, SIZE, None, progress=False)
    assert split.class_counts() == {"NORMAL": 4, "PNEUMONIA": 4}
    part = split.subset([5, 0], name="part")
    assert part.name == "part" and len(part) == 2
    assert part.paths == [split.paths[5], split.paths[0]]
    assert torch.equal(part.pixels[0], split.pixels[5]) and part.labels.tolist() == [1, 0]
    assert part.class_counts() == {"NORMAL": 1, "PNEUMONIA": 1}
    assert not any(tmp_path.rglob("*.pt"))  # cache_dir=None writes no cache


def test_resolve_dataset_falls_back_to_a_loud_synthetic_sample(tmp_path, monkeypatch, capsys):
    """No CXR_DATA_DIR and nothing at the default places: the synthetic sample, announced in a banner."""
    monkeypatch.setattr(cxr, "default_data_dirs", lambda: [tmp_path / "nothing"])
    monkeypatch.setattr(cxr, "SYNTHETIC_COUNTS", {"train": (2, 3), "val": (1, 1), "test": (1, 2)})
    root, synthetic = cxr.resolve_dataset(None, tmp_path / "runs", seed=3)
    assert synthetic is True
    assert root.is_relative_to(tmp_path / "runs") and (root / "train" / "PNEUMONIA").is_dir()
    assert "SYNTHETIC DATA" in capsys.readouterr().out


def test_resolve_dataset_uses_real_data_and_never_falls_back_when_dir_is_wrong(tmp_path, capsys):
    """An explicit dataset is used as is; a wrong CXR_DATA_DIR is an error, not a silent synthetic run."""
    for split in cxr.SPLIT_FOLDERS:
        for name in cxr.CLASS_NAMES:
            (tmp_path / "data" / "chest_xray" / split / name).mkdir(parents=True)
    root, synthetic = cxr.resolve_dataset(tmp_path / "data", tmp_path / "runs")
    assert (root, synthetic) == (tmp_path / "data" / "chest_xray", False)
    with pytest.raises(cxr.DataError, match="wrong-place"):
        cxr.resolve_dataset(tmp_path / "wrong-place", tmp_path / "runs")
    assert not (tmp_path / "runs" / "synthetic").exists()
