"""Notebook 06's helpers and support: the lung box and blanking, the Grad-CAM share, outcomes,
subtype sensitivity, net benefit (checked against dcurves), the model card, the external folder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from dcurves import dca
from helpers import IMAGE_SIZE, lesson, make_split, snapshot, write_fake_jpeg, write_jpeg

import cxr_utils as cxr
from cxr_support import external, model_card, synthetic
from cxr_support.errors import DataError

notebook06 = lesson("06_trusting_the_model")  # helpers it keeps in its cells, not in cxr_utils

# ------------------------------------------------------------------------- the box and blanking


def test_the_lung_mask_is_the_box_in_fractions_of_the_film():
    box = {"top": 0.25, "bottom": 0.75, "left": 0.1, "right": 0.5}
    mask = notebook06.lung_mask(20, box)
    assert mask.shape == (20, 20) and mask.dtype == torch.bool
    assert mask[5:15, 2:10].all() and mask.sum() == 10 * 8  # rows 5-14, columns 2-9
    assert abs(notebook06.lung_mask(224).float().mean().item() - 0.65 * 0.70) < 0.01


@pytest.mark.parametrize("keep", ["outside", "inside"])
def test_blanking_touches_exactly_the_box_and_leaves_the_split_as_it_was(keep):
    split = make_split([0, 1, 0, 1, 1])
    original = split.pixels.clone()
    mask = notebook06.lung_mask(IMAGE_SIZE)
    blanked = notebook06.blank(split, mask, keep)
    zeroed = mask if keep == "outside" else ~mask  # "outside": keep the outside, blank the box
    assert (blanked.pixels[..., zeroed] == 0).all()
    assert torch.equal(blanked.pixels[..., ~zeroed], original[..., ~zeroed])
    assert torch.equal(split.pixels, original), "blanking changed the split it was given"
    assert torch.equal(blanked.labels, split.labels) and blanked.paths == split.paths


def test_box_share_of_uniform_inside_and_outside_maps():
    mask = notebook06.lung_mask(10, {"top": 0.0, "bottom": 0.5, "left": 0.0, "right": 1.0})
    uniform, inside, outside = np.ones((10, 10)), mask.numpy() * 1.0, (~mask).numpy() * 1.0
    shares = notebook06.box_share(np.stack([uniform, inside, outside, np.zeros((10, 10))]), mask)
    np.testing.assert_allclose(shares, [0.5, 1.0, 0.0, 0.0])


def test_outcomes_follow_the_taught_rule_at_the_threshold():
    labels, probs = torch.tensor([1, 1, 0, 0, 1]), torch.tensor([0.9, 0.2, 0.6, 0.1, 0.5])
    assert notebook06.outcome_names(labels, probs, 0.5) == ["TP", "FN", "FP", "TN", "TP"]


# ------------------------------------------------------------------------------ who it misses


def test_subtypes_are_read_from_kaggle_names():
    assert notebook06.pneumonia_subtype("person12_bacteria_3.jpeg") == "bacteria"
    assert notebook06.pneumonia_subtype(Path("x/PERSON7_VIRUS_1.JPEG")) == "virus"
    assert notebook06.pneumonia_subtype("IM-0001-0001.jpeg") is None


def test_subtype_intervals_resample_patients_not_films():
    """One bacterial patient with 10 missed films and 10 patients with one caught film each:
    resampling patients gives a far wider interval than resampling the 20 films would."""
    paths = [Path(f"person1_bacteria_{k}.jpeg") for k in range(10)]
    paths += [Path(f"person{p}_bacteria_1.jpeg") for p in range(2, 12)]
    paths += [Path(f"person{p}_virus_1.jpeg") for p in range(20, 26)]
    paths += [Path(f"IM-00{n}-0001.jpeg") for n in range(10, 14)]
    labels = torch.tensor([1] * 26 + [0] * 4)
    probs = torch.tensor([0.1] * 10 + [0.9] * 10 + [0.9, 0.9, 0.9, 0.2, 0.9, 0.9] + [0.1] * 4)
    result = notebook06.subtype_sensitivity(paths, labels, probs, 0.5, n_boot=500, seed=0)
    bacteria = result["bacteria"]
    assert (bacteria["n"], bacteria["patients"], bacteria["sensitivity"]) == (20, 11, 0.5)
    assert result["virus"]["n"] == 6 and result["virus"]["sensitivity"] == pytest.approx(5 / 6)
    by_film = cxr.bootstrap_ci(labels[:20], probs[:20], 0.5, 500, 0)["sensitivity"]
    low, high = bacteria["ci"]
    assert high - low > 1.8 * (by_film[1] - by_film[0])
    assert low <= 0.5 <= high


# ------------------------------------------------------------------------------- net benefit


def test_net_benefit_on_a_hand_computed_example():
    labels, probs = [1, 1, 0, 0, 1], [0.9, 0.4, 0.6, 0.1, 0.7]
    # t=0.5: TP 2, FP 1 -> 2/5 - 1/5 * 1; t=0.25: TP 3, FP 1 -> 3/5 - 1/5 * 1/3;
    # t=0.6: the film at 0.6 counts as positive (>=) -> TP 2, FP 1 -> 2/5 - 1/5 * 1.5
    expected = [0.4 - 0.2, 0.6 - 0.2 / 3, 0.4 - 0.2 * 1.5]
    np.testing.assert_allclose(notebook06.net_benefit(labels, probs, [0.5, 0.25, 0.6]), expected)
    treat_all = notebook06.net_benefit(labels, np.ones(5), [0.5, 0.25])
    np.testing.assert_allclose(treat_all, [0.6 - 0.4, 0.6 - 0.4 / 3])


def test_net_benefit_agrees_with_dcurves():
    """The maintained implementation (dcurves, Vickers' group's package) on random predictions."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(0.35 * labels + rng.random(300) * 0.65, 0.001, 0.999)
    grid = np.round(np.arange(0.01, 1.0, 0.01), 2)
    table = dca(data=pd.DataFrame({"y": labels, "model": probs}), outcome="y",
                modelnames=["model"], thresholds=grid)
    for name, ours in (("model", notebook06.net_benefit(labels, probs, grid)),
                       ("all", notebook06.net_benefit(labels, np.ones(300), grid))):
        theirs = table[table["model"] == name].sort_values("threshold")["net_benefit"].to_numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-9)


# -------------------------------------------------------------------------------- model card


def card_record() -> dict:
    """A run record with every section the card reads, its numbers chosen to be recognisable."""
    metrics = {"n": 624, "sensitivity": 0.9871, "specificity": 0.6239, "precision": 0.8141,
               "accuracy": 0.8526, "roc_auc": 0.9312, "ci_resamples": "patients",
               "ci": {"sensitivity": [0.9741, 0.9962], "specificity": [0.5593, 0.6844],
                      "precision": [0.7815, 0.8442], "accuracy": [0.8212, 0.8807],
                      "roc_auc": [0.9101, 0.9514]}}
    return {
        "run_id": "20261207-101010-000000-abcdefabcdef",
        "dataset": {"synthetic": False, "counts": {"train": {"NORMAL": 1207, "PNEUMONIA": 3488}}},
        "model": {"arch": "resnet50", "train_mode": "finetune", "weights": "ImageNet"},
        "hyperparams": {"image_size": 224, "epochs": 8, "max_lr": 0.0003, "opt": "Adam",
                        "precision": "bf16"},
        "threshold": {"value": 0.4321, "method": "youden", "chosen_on": "validation split"},
        "test": {"chosen_threshold": metrics},
        "calibration": {"validation": {"n": 523, "brier": 0.0414, "ece": 0.0297},
                        "test": {"n": 624, "brier": 0.1616, "ece": 0.1392}},
        "trust": {
            "lung_box_text": "top 0.15, bottom 0.80, left 0.15, right 0.85",
            "shortcut_probe": {"full film": {"roc_auc": 0.9312, "ci": [0.9101, 0.9514]},
                               "no lungs": {"roc_auc": 0.7777, "ci": [0.7311, 0.8222]}},
            "gradcam_share": {"uniform": 0.455, "by_outcome": {
                "TP": {"n": 385, "median": 0.6123, "q1": 0.5511, "q3": 0.6677}}},
            "subtypes": {"bacteria": {"n": 242, "patients": 191, "sensitivity": 0.9917,
                                      "ci": [0.9787, 1.0]}},
            "decision_curve": {"prevalence": 0.625, "model_at_threshold": 0.5544,
                               "treat_all_at_threshold": 0.3401},
            "external": None,
        },
    }


def numbers_of(value) -> set[str]:
    """Every number in a record section, as the card formats numbers."""
    if isinstance(value, dict):
        return set().union(*(numbers_of(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(numbers_of(v) for v in value)) if value else set()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {model_card.num(value), model_card.num(value, 6)}
    return set(re.findall(r"\d+(?:\.\d+)?", value)) if isinstance(value, str) else set()


def test_every_number_in_the_card_is_read_from_the_record(tmp_path):
    record = card_record()
    path = model_card.write_model_card(tmp_path, record)
    card = path.read_text()
    assert path == tmp_path / "model_cards" / f"{record['run_id']}.md"
    static = " ".join([*model_card.EVIDENCE, model_card.INTENDED, *model_card.OUT_OF_SCOPE,
                       *model_card.DATA_LIMITS])
    allowed = numbers_of(record) | set(re.findall(r"\d+(?:\.\d+)?", static)) | {"95"}
    found = set(re.findall(r"(?<![\w.-])\d+(?:\.\d+)?", card.replace(record["run_id"], "")))
    assert found <= allowed, f"numbers not read from the record: {sorted(found - allowed)}"
    for shown in ("0.987", "[0.974, 0.996]", "0.432", "0.778", "[0.731, 0.822]", "0.612",
                  "0.992", "0.554", "0.340", "0.139"):
        assert shown in card, shown
    assert "has not been tested on films from another hospital" in card
    record["trust"]["shortcut_probe"]["no lungs"]["roc_auc"] = 0.5012
    assert "0.501" in model_card.model_card_markdown(record)


def test_a_card_made_before_notebook_03_says_what_is_missing_and_how_to_get_it():
    """Without notebook 3's sections the card names the notebook to run, not rows of n/a."""
    record = card_record()
    del record["test"], record["threshold"], record["calibration"]
    card = model_card.model_card_markdown(record)
    assert model_card.NOT_MEASURED in card and "notebook 03" in model_card.NOT_MEASURED
    assert "## Metrics on the test split\n" not in card and "| metric | estimate |" not in card
    assert "0.992" in card  # notebook 06's own sections stay: the subtype sensitivity


# ----------------------------------------------------------------------------- external check


def class_folders(root: Path, names: tuple[str, str] = ("NORMAL", "PNEUMONIA")) -> Path:
    for label, name in enumerate(names):
        for k in range(2):
            write_jpeg(root / name / f"film{k}.jpeg", seed=10 * label + k)
    return root


def test_an_external_folder_is_read_in_either_layout_and_never_written(tmp_path):
    for root in (class_folders(tmp_path / "flat"), class_folders(tmp_path / "nested" / "test")):
        before = snapshot(root)
        split = external.load_external(root if root.name != "test" else root.parent,
                                       ("NORMAL", "PNEUMONIA"), 32, tmp_path / "cache")
        assert len(split) == 4 and split.labels.tolist() == [0, 0, 1, 1]
        assert snapshot(root) == before


@pytest.mark.parametrize("case", ["missing", "other classes", "no images", "unreadable"])
def test_a_bad_external_folder_gets_one_line_naming_the_problem(tmp_path, case):
    root = tmp_path / "other"
    if case == "other classes":
        class_folders(root, ("healthy", "sick"))
    elif case == "no images":
        class_folders(root)
        for path in (root / "PNEUMONIA").iterdir():
            path.unlink()
    elif case == "unreadable":
        class_folders(root)
        write_fake_jpeg(root / "PNEUMONIA" / "broken.jpeg")
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as caught:
        external.load_external(root, ("NORMAL", "PNEUMONIA"), 32, None)
    message = str(caught.value)
    assert "\n" not in message
    expected = {"missing": "is not a folder", "other classes": "found healthy, sick",
                "no images": "has no images", "unreadable": "do not decode"}[case]
    assert expected in message
    assert snapshot(tmp_path) == before, "a failed external check wrote files"


def test_the_other_hospital_differs_in_exposure_only(tmp_path):
    other = synthetic.make_other_hospital(tmp_path, patients=(3, 3))
    assert sorted(p.name for p in other.iterdir() if p.is_dir()) == ["NORMAL", "PNEUMONIA"]
    assert json.loads((other / "SYNTHETIC.json").read_text())["exposure"] == [0.6, 20]
    split = external.load_external(other, ("NORMAL", "PNEUMONIA"), 64, None)
    main = synthetic.make_synthetic_dataset(tmp_path / "main", seed=1,
                                            counts={"train": (3, 3), "val": (1, 1),
                                                    "test": (1, 1)})
    files = sorted((main / "train").rglob("*.jpeg"))
    reference = external.load_external(main / "train", ("NORMAL", "PNEUMONIA"), 64, None)
    assert len(files) == len(reference)
    assert split.pixels.float().std() < 0.8 * reference.pixels.float().std()  # lower contrast
    assert synthetic.make_other_hospital(tmp_path, patients=(3, 3)) == other  # reused
