"""Tests for cxr_utils' data layer: finding, listing, splitting, decoding, caching and loading.

Every input is built small under ``tmp_path``; no real dataset and nothing outside the test's
temporary folders is read or written.
"""


from __future__ import annotations

import json
import os
import re
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    SIZE,
    TINY_LAYOUT,
    kaggle_samples,
    lesson,
    make_tree,
    snapshot,
    write_fake_jpeg,
    write_jpeg,
    write_truncated_jpeg,
)

import cxr_utils as cxr
from cxr_support import dataset, pixel_cache, synthetic
from cxr_support.dataset import (
    find_dataset,
    list_split,
    load_or_make_split,
    resolve_dataset,
    stratified_subset,
)
from cxr_support.download import locate_dataset_root
from cxr_support.errors import DataError
from cxr_support.images import decode_resized
from cxr_support.names import SPLIT_FOLDERS
from cxr_support.pixel_cache import load_pixels

notebook01 = lesson("01_data_preview")  # helpers it keeps in its cells, not in cxr_utils

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
    ],
)
def test_patient_id_reads_kaggle_names(name, patient):
    """Every Kaggle file-name pattern maps to its patient, with or without a folder.

    Unknown names are tested in tests/test_own_folder.py.
    """
    assert cxr.patient_id(name) == patient
    assert cxr.patient_id(Path("/some/folder") / name) == patient


def test_patient_id_does_not_merge_different_patients():
    """Patients whose numbers share a prefix stay apart.

    For example person1 vs person12, and IM-0011 vs IM-0012.
    """
    assert cxr.patient_id("person1_virus_1.jpeg") != cxr.patient_id("person12_virus_1.jpeg")
    assert cxr.patient_id("IM-0011-0001.jpeg") != cxr.patient_id("IM-0012-0001.jpeg")
    assert cxr.patient_id("IM-0123-0001.jpeg") != cxr.patient_id("NORMAL2-IM-0123-0001.jpeg")


# ----------------------------------------------------------------------------- patient split


def test_patient_split_keeps_patients_on_one_side(tmp_path):
    """No patient has images on both sides, and every index appears exactly once."""
    samples = kaggle_samples(tmp_path)
    train, val = cxr.patient_split(samples, val_fraction=0.2, seed=1)
    assert notebook01.patients_on_both_sides(samples, train, val) == 0
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
    """Each class puts about val_fraction of its images in val.

    Whole patients move, so val is at most 3 images over.
    """
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
    """The blog post's image-level split puts the same patient on both sides.

    This is the pitfall it shows.
    """
    samples = kaggle_samples(tmp_path)
    train, val = notebook01.random_image_split(len(samples), val_fraction=0.2, seed=1)
    assert sorted(train + val) == list(range(len(samples)))
    assert len(val) == int(0.2 * len(samples))
    assert notebook01.patients_on_both_sides(samples, train, val) > 0


def test_load_or_make_split_saves_and_keeps_a_matching_split(tmp_path):
    """The split is saved as split-seed<N>.json in run_dir; the same split leaves the file alone."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    samples = kaggle_samples(root)
    first = load_or_make_split(
        samples, root, run_dir, seed=3, make_split=cxr.patient_split, val_fraction=0.2
    )
    saved = run_dir / "split-seed3.json"
    assert saved.is_file()
    assert first == cxr.patient_split(samples, 0.2, seed=3)
    before = saved.stat().st_mtime_ns, saved.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to announce
        again = load_or_make_split(
            samples, root, run_dir, seed=3, make_split=cxr.patient_split, val_fraction=0.2
        )
    assert again == first and (saved.stat().st_mtime_ns, saved.read_text()) == before
    # no temporary files left
    assert sorted(p.name for p in run_dir.iterdir()) == ["split-seed3.json"]


def test_a_saved_split_of_another_patient_rule_is_replaced_with_a_warning(tmp_path):
    """A new pattern in PATIENT_PATTERNS changes the split; the saved one is not silently reused."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    samples = kaggle_samples(root)
    load_or_make_split(samples, root, run_dir, seed=3, make_split=cxr.patient_split)

    def every_file_its_own_patient(samples, val_fraction, seed):  # another rule, same files
        return notebook01.random_image_split(len(samples), val_fraction, seed)

    with pytest.warns(UserWarning, match="another patient rule"):
        train, val = load_or_make_split(
            samples, root, run_dir, seed=3, make_split=every_file_its_own_patient
        )
    assert (train, val) == notebook01.random_image_split(len(samples), 0.1, 3)
    saved = json.loads((run_dir / "split-seed3.json").read_text())
    rel = [str(p.relative_to(root)) for p, _ in samples]
    assert sorted(saved["val"]) == sorted(rel[i] for i in val)


def test_load_or_make_split_recomputes_for_a_new_file_list(tmp_path):
    """Adding a file changes the fingerprint: the split is recomputed and the file rewritten."""
    root, run_dir = tmp_path / "data", tmp_path / "run"
    samples = kaggle_samples(root)
    load_or_make_split(samples, root, run_dir, seed=3, make_split=cxr.patient_split)
    before = (run_dir / "split-seed3.json").read_text()
    added = (root / "train" / "PNEUMONIA" / "person999_virus_999.jpeg", 1)
    train, val = load_or_make_split(
        [*samples, added], root, run_dir, seed=3, make_split=cxr.patient_split
    )
    assert sorted(train + val) == list(range(len(samples) + 1))
    after = (run_dir / "split-seed3.json").read_text()
    assert after != before
    assert "person999_virus_999.jpeg" in after


def test_a_split_saved_by_the_earlier_patient_ids_is_made_again(tmp_path):
    """A split file of format 1 is not reused, whatever its fingerprint says.

    Format 1 did not yet make patient ids per class, so its split could leak.
    """
    root, run_dir = tmp_path / "data", tmp_path / "run"
    samples = kaggle_samples(root)
    load_or_make_split(samples, root, run_dir, seed=3, make_split=cxr.patient_split)
    path = run_dir / "split-seed3.json"
    old = json.loads(path.read_text())
    old["format"] = 1
    old["val"] = old["val"][:1]  # what an earlier rule might have chosen
    path.write_text(json.dumps(old))
    train, val = load_or_make_split(samples, root, run_dir, seed=3, make_split=cxr.patient_split)
    assert (train, val) == cxr.patient_split(samples, 0.1, seed=3)
    assert json.loads(path.read_text())["format"] == 2


# ----------------------------------------------------------------------------- finding the dataset


def test_find_dataset_wrong_explicit_dir_names_it(tmp_path):
    """A CXR_DATA_DIR without the dataset is an error naming that folder.

    It never silently falls back.
    """
    wrong = tmp_path / "downloads" / "not-the-dataset"
    wrong.mkdir(parents=True)
    (wrong / "train").mkdir()  # train/ alone is not enough
    with pytest.raises(DataError, match=re.escape(str(wrong))):
        find_dataset(wrong)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing"))):
        find_dataset(tmp_path / "missing")


def test_find_dataset_wrong_explicit_dir_given_as_str(tmp_path):
    """A wrong folder given as a string is the same DataError.

    A notebook parameter passes it that way.
    """
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "missing"))):
        find_dataset(str(tmp_path / "missing"))


def test_find_dataset_handles_the_kaggle_zip_nesting(tmp_path):
    """The Kaggle zip's chest_xray/chest_xray/{train,test,val} is found.

    The __MACOSX copy beside it is not.
    """
    download = tmp_path / "download"
    inner = download / "chest_xray" / "chest_xray"
    for split in ("train", "test", "val"):
        (inner / split / "NORMAL").mkdir(parents=True)
    for split in ("train", "test"):  # macOS resource-fork mirror beside the real folder
        (download / "chest_xray" / "__MACOSX" / split).mkdir(parents=True)
        (download / "__MACOSX" / "chest_xray" / split).mkdir(parents=True)
    assert locate_dataset_root(download) == inner
    assert locate_dataset_root(download / "chest_xray") == inner
    assert locate_dataset_root(inner) == inner
    assert find_dataset(download) == inner


def test_locate_dataset_root_returns_none_without_dataset(tmp_path):
    """A folder with no train/ and test/ at any of the searched depths gives None."""
    (tmp_path / "chest_xray" / "chest_xray" / "train").mkdir(parents=True)
    assert locate_dataset_root(tmp_path) is None
    assert locate_dataset_root(tmp_path / "nothing-here") is None


def test_find_dataset_none_without_defaults(tmp_path, monkeypatch):
    """With no CXR_DATA_DIR and no default folder holding the data, the answer is None.

    None means the synthetic sample.
    """
    monkeypatch.setattr(dataset, "default_data_dirs", lambda: [tmp_path / "nothing"])
    assert find_dataset(None) is None


def test_find_dataset_none_uses_first_default_with_data(tmp_path, monkeypatch):
    """With no CXR_DATA_DIR, the first default folder that holds the dataset is used."""
    make_tree(tmp_path / "data" / "chest_xray")
    monkeypatch.setattr(
        dataset, "default_data_dirs", lambda: [tmp_path / "nothing", tmp_path / "data"]
    )
    assert find_dataset(None) == tmp_path / "data" / "chest_xray"


# ---------------------------------------------------------------------------- listing split folders


def test_list_split_lists_labels_in_order(tiny_root):
    """NORMAL files get label 0, PNEUMONIA label 1, in sorted order, with nothing skipped."""
    samples, skipped = list_split(tiny_root, "train")
    assert skipped == []
    expected = [
        (tiny_root / "train" / c / n, label)
        for label, c in enumerate(cxr.CLASS_NAMES)
        for n in sorted(TINY_LAYOUT["train"][c])
    ]
    assert samples == expected


def test_list_split_missing_split_folder(tiny_root):
    """A missing split folder is a DataError that names it."""
    missing = tiny_root / "holdout"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        list_split(tiny_root, "holdout")


def test_list_split_missing_class_folder(tiny_root):
    """A split without one of its class folders is a DataError that names the missing folder."""
    for path in (tiny_root / "test" / "PNEUMONIA").iterdir():
        path.unlink()
    (tiny_root / "test" / "PNEUMONIA").rmdir()
    with pytest.raises(DataError, match=re.escape(str(tiny_root / "test" / "PNEUMONIA"))):
        list_split(tiny_root, "test")


@pytest.mark.parametrize("junk", [[], [".DS_Store", "notes.txt"]])
def test_list_split_empty_class_folder(tiny_root, junk):
    """A class folder with no images (empty, or junk only) is a DataError that names it."""
    folder = tiny_root / "val" / "NORMAL"
    for path in folder.iterdir():
        path.unlink()
    for name in junk:
        (folder / name).write_text("x")
    with pytest.raises(DataError, match=re.escape(str(folder))):
        list_split(tiny_root, "val")


def test_list_split_skips_and_reports_junk(tiny_root):
    """System files, non-images, empty files and sub-folders are skipped with a reason.

    They are never counted.
    """
    folder = tiny_root / "train" / "NORMAL"
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "Thumbs.db").write_bytes(b"thumbs")
    (folder / "notes.txt").write_text("labels checked by hand")
    (folder / "IM-0999-0001.jpeg").touch()  # zero bytes
    (folder / "extra").mkdir()
    write_jpeg(folder / "extra" / "IM-0998-0001.jpeg")
    samples, skipped = list_split(tiny_root, "train")
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


# ---------------------------------------------------------------------- prepare_data with bad files


def _messages(records) -> str:
    return "\n".join(str(r.message) for r in records)


def test_prepare_data_skips_truncated_jpeg_and_leaves_data_alone(tiny_root, tmp_path):
    """A truncated JPEG is skipped with a warning naming it, left out of the counts.

    The data folder is untouched.
    """
    bad = write_truncated_jpeg(tiny_root / "train" / "NORMAL" / "IM-0005-0001.jpeg")
    before = snapshot(tiny_root)
    with pytest.warns(UserWarning) as records:
        splits = cxr.prepare_data(
            tiny_root, tmp_path / "run", image_size=SIZE, seed=0, progress=False
        )
    assert str(bad) in _messages(records)
    assert snapshot(tiny_root) == before
    good_train = sum(len(names) for names in TINY_LAYOUT["train"].values())
    assert len(splits["train"]) + len(splits["val"]) == good_train
    counts = Counter()
    for name in ("train", "val"):
        counts.update(splits[name].class_counts())
        assert bad not in splits[name].paths
    assert counts == {
        "NORMAL": len(TINY_LAYOUT["train"]["NORMAL"]),
        "PNEUMONIA": len(TINY_LAYOUT["train"]["PNEUMONIA"]),
    }
    skipped = [path for name in ("train", "val") for path, _ in splits[name].skipped]
    assert skipped == [str(bad)]
    assert len(splits["test"]) == 4 and len(splits["kaggle_val"]) == 2


def test_prepare_data_skips_truncated_and_fake_jpegs(tiny_root, tmp_path):
    """A truncated JPEG and a fake .jpeg are both skipped with a warning listing them.

    Neither is counted.
    """
    truncated = write_truncated_jpeg(tiny_root / "train" / "NORMAL" / "IM-0005-0001.jpeg")
    fake = write_fake_jpeg(tiny_root / "train" / "PNEUMONIA" / "person7_virus_7.jpeg")
    before = snapshot(tiny_root)
    with pytest.warns(UserWarning) as records:
        splits = cxr.prepare_data(
            tiny_root, tmp_path / "run", image_size=SIZE, seed=0, progress=False
        )
    assert str(truncated) in _messages(records) and str(fake) in _messages(records)
    assert snapshot(tiny_root) == before
    assert len(splits["train"]) + len(splits["val"]) == sum(
        len(names) for names in TINY_LAYOUT["train"].values()
    )
    skipped = sorted(path for name in ("train", "val") for path, _ in splits[name].skipped)
    assert skipped == sorted([str(truncated), str(fake)])


def test_prepare_data_writes_only_into_run_dir(tiny_root, tmp_path):
    """prepare_data keeps its split file and cache in run_dir.

    It leaves the data folder unchanged.
    """
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
    assert (
        notebook01.patients_on_both_sides(together, range(n_train), range(n_train, n_train + n_val))
        == 0
    )


# ----------------------------------------------------------------------------- decode-once cache


@pytest.fixture
def cache_samples(tiny_root) -> list[tuple[Path, int]]:
    """The tiny dataset's training files as (path, label)."""
    return list_split(tiny_root, "train")[0]


def test_cache_is_reused_without_decoding(cache_samples, tmp_path, monkeypatch):
    """A second load_pixels of the same files reads the cache file and decodes nothing."""
    cache_dir = tmp_path / "cache"
    first = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    assert len(list(cache_dir.glob("train-*.pt"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decode_files called although the cache matches")

    monkeypatch.setattr(pixel_cache, "decode_files", no_decoding)
    second = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    assert torch.equal(second.pixels, first.pixels)
    assert torch.equal(second.labels, first.labels)
    assert second.paths == first.paths
    assert (
        second.original_sizes == first.original_sizes
        and second.original_modes == first.original_modes
    )


def test_cached_pixels_equal_decode_resized(cache_samples, tmp_path):
    """Fresh and cached pixels are exactly decode_resized's, in order, with the right labels."""
    cache_dir = tmp_path / "cache"
    fresh = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    cached = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    for split in (fresh, cached):
        assert (
            split.pixels.shape == (len(cache_samples), 1, SIZE, SIZE)
            and split.pixels.dtype == torch.uint8
        )
        assert split.labels.tolist() == [label for _, label in cache_samples]
        for i, (path, _) in enumerate(cache_samples):
            expected, size, mode = decode_resized(path, SIZE)
            assert np.array_equal(split.pixels[i, 0].numpy(), expected), path
            assert split.original_sizes[i] == size and split.original_modes[i] == mode


def test_cache_rebuilds_when_a_file_changes(cache_samples, tmp_path, decode_calls):
    """Replacing one file (new content, new mtime) gives a new cache file and the new pixels."""
    cache_dir = tmp_path / "cache"
    load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    old_files = set(cache_dir.glob("*.pt"))
    changed = cache_samples[0][0]
    write_jpeg(changed, seed=999)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    split = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    new_files = set(cache_dir.glob("*.pt")) - old_files
    assert len(new_files) == 1 and len(decode_calls) == 2
    assert np.array_equal(split.pixels[0, 0].numpy(), decode_resized(changed, SIZE)[0])


def test_cache_key_depends_on_image_size(cache_samples, tmp_path, decode_calls):
    """Another image size is another cache file, decoded afresh at that size."""
    cache_dir = tmp_path / "cache"
    load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    other = load_pixels("train", cache_samples, 40, cache_dir, progress=False)
    assert other.pixels.shape[-2:] == (40, 40)
    assert len(list(cache_dir.glob("*.pt"))) == 2 and len(decode_calls) == 2


def test_cache_write_leaves_no_temporary_files(cache_samples, tmp_path):
    """The cache is written atomically: only the finished .pt file is left in the cache folder."""
    cache_dir = tmp_path / "cache"
    load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    load_pixels("val", cache_samples[:3], SIZE, cache_dir, progress=False)
    names = sorted(p.name for p in cache_dir.iterdir())
    assert len(names) == 2
    assert all(re.fullmatch(r"(train|val)-[0-9a-f]{20}\.pt", name) for name in names), names


def test_corrupt_cache_is_ignored_and_rebuilt(cache_samples, tmp_path, decode_calls):
    """A damaged cache file is reported with a warning, decoded afresh and rewritten."""
    cache_dir = tmp_path / "cache"
    first = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    (cache_file,) = cache_dir.glob("*.pt")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="Ignoring unreadable cache"):
        again = load_pixels("train", cache_samples, SIZE, cache_dir, progress=False)
    assert len(decode_calls) == 2
    assert torch.equal(again.pixels, first.pixels)
    # rewritten whole
    assert torch.equal(torch.load(cache_file, weights_only=True)["pixels"], first.pixels)


def test_cache_remembers_skipped_files(tiny_root, tmp_path, decode_calls):
    """A split loaded from the cache still lists and warns about the unreadable files."""
    bad = write_truncated_jpeg(tiny_root / "train" / "NORMAL" / "IM-0005-0001.jpeg")
    samples = list_split(tiny_root, "train")[0]
    cache_dir = tmp_path / "cache"
    for _ in range(2):
        with pytest.warns(UserWarning, match=re.escape(str(bad))):
            split = load_pixels("train", samples, SIZE, cache_dir, progress=False)
        assert [path for path, _ in split.skipped] == [str(bad)]
        assert len(split) == len(samples) - 1 and bad not in split.paths
    assert len(decode_calls) == 1


# ----------------------------------------------------------------------------- stratified subset


def _labelled(n_normal: int, n_pneumonia: int) -> list[tuple[Path, int]]:
    return [(Path(f"n{i}.jpeg"), 0) for i in range(n_normal)] + [
        (Path(f"p{i}.jpeg"), 1) for i in range(n_pneumonia)
    ]


def test_stratified_subset_keeps_class_proportions():
    """Capping 30 NORMAL + 90 PNEUMONIA at 40 keeps about 10 + 30.

    All are distinct and come from the given indices.
    """
    samples = _labelled(30, 90)
    indices = list(range(0, 120))
    kept = stratified_subset(samples, indices, cap=40, seed=0)
    assert len(kept) == 40 and len(set(kept)) == 40 and set(kept) <= set(indices)
    assert Counter(samples[i][1] for i in kept) == {0: 10, 1: 30}  # the exact shares of 40


def test_stratified_subset_is_deterministic():
    """The same seed gives the same subset; another seed another one."""
    samples = _labelled(30, 90)
    indices = list(range(120))
    assert stratified_subset(samples, indices, 40, seed=1) == stratified_subset(
        samples, indices, 40, seed=1
    )
    assert stratified_subset(samples, indices, 40, seed=1) != stratified_subset(
        samples, indices, 40, seed=2
    )


def test_stratified_subset_without_cap_keeps_everything():
    """No cap, or a cap above the size, returns the indices unchanged."""
    samples = _labelled(3, 5)
    assert stratified_subset(samples, [1, 4, 6], None, seed=0) == [1, 4, 6]
    assert stratified_subset(samples, [1, 4, 6], 3, seed=0) == [1, 4, 6]


@pytest.mark.parametrize(
    ("n_normal", "n_pneumonia", "cap"), [(5, 5, 3), (1, 99, 10), (7, 13, 9), (50, 50, 1)]
)
def test_stratified_subset_returns_exactly_the_cap(n_normal, n_pneumonia, cap):
    """Exactly ``cap`` distinct indices, each class within one of its proportional share.

    This holds also when the shares round badly.
    """
    samples = _labelled(n_normal, n_pneumonia)
    kept = stratified_subset(samples, list(range(n_normal + n_pneumonia)), cap=cap, seed=0)
    assert len(kept) == cap and len(set(kept)) == cap
    share = cap * n_normal / (n_normal + n_pneumonia)
    assert abs(Counter(samples[i][1] for i in kept)[0] - share) < 1


def test_split_subset_and_class_counts(cache_samples, tmp_path):
    """XraySplit.subset keeps the chosen samples' pixels, labels and paths.

    class_counts counts per class.
    """
    split = load_pixels("train", cache_samples, SIZE, None, progress=False)
    assert split.class_counts() == {"NORMAL": 4, "PNEUMONIA": 4}
    part = split.subset([5, 0], name="part")
    assert part.name == "part" and len(part) == 2
    assert part.paths == [split.paths[5], split.paths[0]]
    assert torch.equal(part.pixels[0], split.pixels[5]) and part.labels.tolist() == [1, 0]
    assert part.class_counts() == {"NORMAL": 1, "PNEUMONIA": 1}
    assert not any(tmp_path.rglob("*.pt"))  # cache_dir=None writes no cache


def test_resolve_dataset_falls_back_to_a_loud_synthetic_sample(tmp_path, monkeypatch, capsys):
    """No CXR_DATA_DIR and nothing at the default places: the synthetic sample.

    It is announced in a banner.
    """
    monkeypatch.setattr(dataset, "default_data_dirs", lambda: [tmp_path / "nothing"])
    monkeypatch.setattr(
        synthetic, "SYNTHETIC_COUNTS", {"train": (2, 3), "val": (1, 1), "test": (1, 2)}
    )
    root, is_synthetic = resolve_dataset(None, tmp_path / "runs", seed=3)
    assert is_synthetic is True
    assert root.is_relative_to(tmp_path / "runs") and (root / "train" / "PNEUMONIA").is_dir()
    assert "SYNTHETIC DATA" in capsys.readouterr().out


def test_resolve_dataset_uses_real_data_and_never_falls_back_when_dir_is_wrong(tmp_path, capsys):
    """An explicit dataset is used as is.

    A wrong CXR_DATA_DIR is an error, not a silent synthetic run.
    """
    for split in SPLIT_FOLDERS:
        for name in cxr.CLASS_NAMES:
            (tmp_path / "data" / "chest_xray" / split / name).mkdir(parents=True)
    root, synthetic = resolve_dataset(tmp_path / "data", tmp_path / "runs")
    assert (root, synthetic) == (tmp_path / "data" / "chest_xray", False)
    with pytest.raises(DataError, match="wrong-place"):
        resolve_dataset(tmp_path / "wrong-place", tmp_path / "runs")
    assert not (tmp_path / "runs" / "synthetic").exists()


def test_the_default_places_are_each_named_once(monkeypatch):
    """Run from the project folder (a by-hand torchrun launch), data/ there is the project's
    data/: it is searched, and named in the synthetic sample's banner, once."""
    from cxr_support.paths import PROJECT_ROOT

    monkeypatch.chdir(PROJECT_ROOT)
    places = dataset.default_data_dirs()
    assert places[0] == PROJECT_ROOT / "data" and len(places) == len({p.resolve() for p in places})
    monkeypatch.chdir(PROJECT_ROOT / "notebooks")
    assert PROJECT_ROOT / "notebooks" / "data" in dataset.default_data_dirs()
