"""CXR_ARCH end to end: notebooks 02 and 03 train, save, reload and evaluate a ResNet18.

They say so in the checkpoint and the record.
"""

from __future__ import annotations

import json

import torch
from helpers import run_series_notebook


def test_cxr_arch_resnet18_runs_notebooks_02_and_03_and_is_recorded(tmp_path, monkeypatch):
    """A full-mode run with CXR_ARCH=resnet18 (not the quick default).

    The checkpoint and the record name resnet18, and notebook 03 rebuilds it.
    """
    run_dir = tmp_path / "runs"
    for var, value in {
        "CXR_ARCH": "resnet18",
        "CXR_QUICK": "0",
        "CXR_IMAGE_SIZE": "32",
        "CXR_MAX_IMAGES": "48",
        "CXR_EPOCHS": "1",
        "CXR_BATCH_SIZE": "16",
        "CXR_RUN_DIR": str(run_dir),
    }.items():
        monkeypatch.setenv(var, value)
    text_02 = run_series_notebook("02_training_on_gpu.ipynb")
    assert (
        '"output_type": "error"' not in text_02
        and "env CXR_ARCH" in text_02
        and "network: resnet18" in text_02
    )
    (checkpoint,) = (run_dir / "checkpoints").glob("*.pt")
    meta = torch.load(checkpoint, weights_only=True)["metadata"]
    assert (
        (meta["arch"], meta["class_names"]) == ("resnet18", ["NORMAL", "PNEUMONIA"])
        and "architecture" not in meta
    )
    (record_path,) = (run_dir / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    assert record["model"]["arch"] == "resnet18" and record["hyperparams"]["arch"] == "resnet18"
    assert record["hyperparams"]["weights"] == "random-init"
    assert record["config"]["arch"] == "resnet18"
    text_03 = run_series_notebook("03_test_predictions.ipynb")
    assert '"output_type": "error"' not in text_03 and "| resnet18 |" in text_03
    # notebook 03 added its test metrics to the same record
    assert "test" in json.loads(record_path.read_text())
