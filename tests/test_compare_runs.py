"""compare_runs and the checkpoint metadata, read from run records (notebooks 02, 04 and 05).

Split from test_records.py, which holds the records' own tests and Jovian's.
"""

from __future__ import annotations

import json

from test_records import make_record

import cxr_utils as cxr
from cxr_utils import compare_runs


def test_compare_runs_tells_apart_runs_that_differ_only_in_learning_rate_or_class_weight():
    """Two runs alike but for max_lr (or pos_weight) give rows that differ.

    Those settings are columns.
    """
    base = make_record("run-a")
    other_lr, other_weight = make_record("run-b"), make_record("run-c")
    other_lr["hyperparams"]["max_lr"] = 1e-2
    other_weight["model"]["pos_weight"] = 1.0
    rows = [
        {k: v for k, v in row.items() if k != "run_id"}
        for row in compare_runs([base, other_lr, other_weight])
    ]
    assert rows[0] != rows[1] and rows[0] != rows[2]
    assert (rows[1]["max_lr"], rows[2]["pos_weight"]) == (1e-2, 1.0)


def test_the_checkpoint_metadata_is_read_from_the_run_record(tmp_path):
    """run_record writes the recipe from RECIPE, the batch per step a caller gives and the time
    of every epoch; checkpoint_metadata takes the checkpoint's metadata from that record alone,
    so the two cannot disagree; the record is plain JSON."""
    import torch
    from helpers import make_split

    split = make_split([0, 1, 1, 1])
    split.paths = [tmp_path / path for path in split.paths]  # files of the data's folder
    data = cxr.XrayData(tmp_path, True, ("NORMAL", "PNEUMONIA"), {"train": split, "val": split})
    info = {"arch": "resnet18", "weights": "random initialisation", "pretrained": False,
            "train_mode": "finetune", "pos_weight": 0.5, "class_names": ["NORMAL", "PNEUMONIA"],
            "mean": list(cxr.IMAGENET_MEAN), "std": list(cxr.IMAGENET_STD)}
    history = [{"epoch": 0, "val_loss": 0.7, "val_acc": 0.5, "seconds": 1.0},
               {"epoch": 1, "val_loss": 0.6, "val_acc": 0.75, "seconds": 2.0}]
    settings = {"image_size": 32, "seed": 7, "max_lr": 1e-3, "batch_size": 8}
    record = cxr.run_record("r1", "a test", settings, data, info, "fp32", history,
                            torch.device("cpu"), hyperparams={"batch_size": 16},
                            distributed={"processes": 2})
    hp = record["hyperparams"]
    assert (hp["opt"], hp["weight_decay"], hp["grad_clip"]) == (
        cxr.RECIPE["opt_func"].__name__, cxr.RECIPE["weight_decay"], cxr.RECIPE["grad_clip"])
    assert hp["batch_size"] == 16 and hp["epochs"] == 2 and hp["weights"] == "random-init"
    assert record["timings"]["fit_seconds"] == 3.0 and record["made_by"] == "a test"
    assert record["dataset"]["synthetic"] is True and record["config"] == settings
    assert cxr.checkpoint_metadata(record) == {
        "run_id": "r1", "made_by": "a test", "processes": 2, "image_size": 32, "split_seed": 7,
        "synthetic_data": True, "precision": "fp32", "weights": "random initialisation",
        "train_mode": "finetune", "pos_weight": 0.5, "class_names": ["NORMAL", "PNEUMONIA"],
        "mean": list(cxr.IMAGENET_MEAN), "std": list(cxr.IMAGENET_STD),
        "metrics": {"val_loss": 0.6, "val_acc": 0.75}}
    assert json.loads(json.dumps(record, default=str))["run_id"] == "r1"


def test_compare_runs_shows_the_processes_and_the_batch_of_a_step():
    """A notebook 5 run shows its processes and its global batch; a notebook 2 run, 1 process."""
    one = {"run_id": "one", "hyperparams": {"batch_size": 32}, "history": []}
    two = {"run_id": "two", "hyperparams": {"batch_size": 64}, "history": [],
           "distributed": {"processes": 2, "batch_size_per_process": 32}}
    rows = compare_runs([one, two])
    assert [(r["processes"], r["batch_per_step"]) for r in rows] == [(1, 32), (2, 64)]
