"""A binary X-ray folder of your own.

Patient ids per class, class names from the folders, notebook 01 end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import lesson, make_tree, run_series_notebook, snapshot, write_jpeg

import cxr_utils as cxr
from cxr_support.dataset import find_class_names, list_split
from cxr_support.errors import DataError
from cxr_support.pixel_cache import load_pixels

notebook01 = lesson("01_data_preview")  # helpers it keeps in its cells, not in cxr_utils


def numbered_layout(
    classes: tuple[str, str], n_train: tuple[int, int] = (12, 24)
) -> dict[str, dict[str, list[str]]]:
    """A Kaggle layout whose classes both number their files from img_001.

    So the same names are on both sides.
    """
    names = {"train": n_train, "val": (2, 2), "test": (5, 8)}
    return {
        split: {c: [f"img_{i:03d}.jpeg" for i in range(1, n + 1)] for c, n in zip(classes, counts)}
        for split, counts in names.items()
    }


# ----------------------------------------------------------------------------- patient ids


def test_a_name_without_a_patient_pattern_is_its_own_patient_within_its_class():
    """NORMAL/img_001 and PNEUMONIA/img_001 are two patients.

    So are img_001.jpeg and img_001.png of one class.
    """
    assert cxr.patient_id("data/train/NORMAL/img_001.jpeg") == "NORMAL/img_001.jpeg"
    assert cxr.patient_id("data/train/NORMAL/img_001.jpeg") != cxr.patient_id(
        "data/train/PNEUMONIA/img_001.jpeg"
    )
    assert cxr.patient_id("NORMAL/img_001.jpeg") != cxr.patient_id("NORMAL/img_001.png")


def test_a_kaggle_name_names_its_patient_in_whichever_class_folder():
    """The name says who the patient is, so the id does not depend on the folder."""
    assert (
        cxr.patient_id("train/NORMAL/IM-0011-0001.jpeg")
        == cxr.patient_id("train/PNEUMONIA/IM-0011-0001-0002.jpeg")
        == "IM-0011"
    )


def test_patient_split_of_shared_names_keeps_both_classes_and_leaks_nothing(tmp_path):
    """With img_001... in both classes, the split is stratified and no patient is on both sides.

    It used to report a leak.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("NORMAL", "PNEUMONIA"), (30, 60)))
    samples, _ = list_split(root, "train")
    train_idx, val_idx = cxr.patient_split(samples, val_fraction=0.2, seed=1)
    assert notebook01.patients_on_both_sides(samples, train_idx, val_idx) == 0
    assert sorted(train_idx + val_idx) == list(range(len(samples)))
    val_labels = [samples[i][1] for i in val_idx]
    # 20 % of each class: one film per patient
    assert val_labels.count(0) == 6 and val_labels.count(1) == 12


def test_a_patient_with_films_in_both_classes_goes_to_one_side_whole():
    """When the names tie films of two classes to one patient, its films stay together.

    All of that patient's films land on the same side.
    """
    samples = [(Path(f"train/NORMAL/IM-{p:04d}-0001.jpeg"), 0) for p in range(1, 21)]
    # patients 1-10 in both
    samples += [(Path(f"train/PNEUMONIA/IM-{p:04d}-0001-0002.jpeg"), 1) for p in range(1, 11)]
    for seed in range(10):
        train_idx, val_idx = cxr.patient_split(samples, val_fraction=0.3, seed=seed)
        assert notebook01.patients_on_both_sides(samples, train_idx, val_idx) == 0
        assert val_idx  # something was held out


# --------------------------------------------------------------------- class names from the folders


def test_class_names_default_to_kaggle_order(tmp_path):
    """On the Kaggle layout the classes are (NORMAL, PNEUMONIA): PNEUMONIA is label 1."""
    assert find_class_names(make_tree(tmp_path / "kaggle")) == ("NORMAL", "PNEUMONIA")


def test_class_names_come_from_the_folders_with_the_positive_class_last(tmp_path):
    """Another binary folder works: the class named by CXR_POSITIVE_CLASS is label 1.

    This holds whatever the alphabet says.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("COVID", "HEALTHY")))
    (root / "train" / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    assert find_class_names(root, "COVID") == ("HEALTHY", "COVID")
    assert find_class_names(root, "HEALTHY") == ("COVID", "HEALTHY")


def test_the_positive_class_matches_a_folder_whatever_its_case(tmp_path):
    """Lower-case folders (normal/, pneumonia/) work with the default CXR_POSITIVE_CLASS=PNEUMONIA.

    The folder's own spelling is kept.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("normal", "pneumonia")))
    assert find_class_names(root) == ("normal", "pneumonia")


def test_a_positive_class_that_is_not_a_folder_names_the_folders_and_the_fix(tmp_path):
    """The default PNEUMONIA on a COVID/HEALTHY folder fails in one line.

    The line lists the folders and names CXR_POSITIVE_CLASS.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("COVID", "HEALTHY")))
    with pytest.raises(
        DataError,
        match=r"CXR_POSITIVE_CLASS=PNEUMONIA is not a class folder .*found COVID, HEALTHY",
    ):
        find_class_names(root)


def test_train_must_hold_exactly_two_class_folders(tmp_path):
    """Three class folders (or one) are refused with the count and the names found."""
    root = make_tree(tmp_path / "own", numbered_layout(("A", "B")))
    write_jpeg(root / "train" / "C" / "x.jpeg")
    with pytest.raises(DataError, match=r"exactly two class folders .*found 3: A, B, C"):
        find_class_names(root, "A")


def test_prepare_data_labels_follow_the_positive_class(tmp_path):
    """Each image's label is its folder's place in ``class_names``.

    Swapping the positive class swaps every label.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("COVID", "HEALTHY")))
    before = snapshot(root)
    run_dir = tmp_path / "runs"
    first = cxr.prepare_data(
        root, run_dir, 32, seed=0, class_names=("HEALTHY", "COVID"), progress=False
    )
    swapped = cxr.prepare_data(
        root, run_dir, 32, seed=0, class_names=("COVID", "HEALTHY"), progress=False
    )
    assert first["train"].class_names == ("HEALTHY", "COVID")
    totals = {
        c: first["train"].class_counts()[c] + first["val"].class_counts()[c]
        for c in ("HEALTHY", "COVID")
    }
    assert totals == {"HEALTHY": 24, "COVID": 12}
    for name in ("train", "val", "test"):
        assert [p.parent.name for p in first[name].paths] == [
            first[name].class_names[k] for k in first[name].labels.tolist()
        ]
        assert [p.parent.name for p in swapped[name].paths] == [
            swapped[name].class_names[k] for k in swapped[name].labels.tolist()
        ]
    assert snapshot(root) == before  # nothing written next to the user's data


def test_cached_pixels_take_their_labels_from_the_caller(tmp_path, decode_calls):
    """The pixel cache is keyed by the files, not the labels.

    A warm cache still gives the labels of this call's folders.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("COVID", "HEALTHY")))
    samples, _ = list_split(root, "test", ("HEALTHY", "COVID"))
    first = load_pixels("test", samples, 32, tmp_path / "cache", progress=False)
    flipped = load_pixels(
        "test",
        [(path, 1 - label) for path, label in samples],
        32,
        tmp_path / "cache",
        progress=False,
        class_names=("COVID", "HEALTHY"),
    )
    assert len(decode_calls) == 1  # the second call read the cache
    assert (
        torch.equal(flipped.labels, 1 - first.labels)
        and flipped.class_names == ("COVID", "HEALTHY")
    )


def test_kaggle_val_folder_is_optional(tmp_path):
    """A folder with only train/ and test/ works.

    Kaggle's val/ is not used, so its absence gives an empty split.
    """
    layout = numbered_layout(("NORMAL", "PNEUMONIA"))
    del layout["val"]
    root = make_tree(tmp_path / "own", layout)
    splits = cxr.prepare_data(root, tmp_path / "runs", 32, progress=False)
    assert len(splits["kaggle_val"]) == 0 and len(splits["train"]) + len(splits["val"]) == 36


def test_quick_mode_caps_validation_in_proportion_to_training(tmp_path):
    """max_images caps training and test; validation keeps its share of train/.

    It used to get as many images as training.
    """
    root = make_tree(tmp_path / "own", numbered_layout(("NORMAL", "PNEUMONIA"), (40, 80)))
    splits = cxr.prepare_data(root, tmp_path / "runs", 32, seed=0, max_images=30, progress=False)
    full = cxr.prepare_data(root, tmp_path / "runs", 32, seed=0, progress=False)
    assert len(splits["train"]) == 30 and len(splits["test"]) == 13  # test/ holds only 13
    expected_val = -(-30 * len(full["val"]) // len(full["train"]))  # ceil
    assert len(splits["val"]) == expected_val < 30


# ------------------------------------------------------------------- notebook 01 on your own folder


@pytest.mark.parametrize(
    ("classes", "positive"),
    [(("NORMAL", "PNEUMONIA"), None), (("COVID", "HEALTHY"), "COVID")],
    ids=["kaggle-classes-shared-names", "other-classes"],
)
def test_notebook_01_runs_on_a_folder_whose_classes_share_file_names(
    tmp_path, monkeypatch, classes, positive
):
    """Notebook 01 runs clean on a Kaggle-layout folder numbered img_001... in both classes.

    It uses the folders' class names.
    """
    root = make_tree(tmp_path / "own" / "chest_xray", numbered_layout(classes, (20, 40)))
    monkeypatch.setenv("CXR_DATA_DIR", str(root))
    monkeypatch.setenv("CXR_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("CXR_QUICK", "1")
    monkeypatch.setenv("CXR_IMAGE_SIZE", "32")
    if positive:
        monkeypatch.setenv("CXR_POSITIVE_CLASS", positive)
    text = run_series_notebook("01_data_preview.ipynb", timeout=300)
    assert '"output_type": "error"' not in text
    assert "SYNTHETIC" not in text and "patients on both sides: 0" in text
    expected = (classes[1], classes[0]) if positive == classes[0] else classes
    assert f"classes: {expected!r}" in text
