"""The checkpoint notebook 02 saves is the model `fit` kept.

Reloaded, it gives its own recorded validation loss.
"""

from __future__ import annotations

import json
import math

import torch
from helpers import run_series_notebook

import cxr_utils as cxr
from cxr_support.config import load_config


def test_reloaded_checkpoint_gives_its_recorded_val_loss(tmp_path, monkeypatch):
    """Fine-tuning (batch norm in training mode) in quick mode.

    Nothing between `fit` and the save may change the model.
    """
    run_dir = tmp_path / "runs"
    settings = {"CXR_QUICK": "1", "CXR_IMAGE_SIZE": "32", "CXR_MAX_IMAGES": "64", "CXR_EPOCHS": "2",
                "CXR_BATCH_SIZE": "16", "CXR_RUN_DIR": str(run_dir), "CXR_PRETRAINED": "0"}
    for var, value in settings.items():
        monkeypatch.setenv(var, value)
    outputs = run_series_notebook("02_training_on_gpu.ipynb")
    assert '"output_type": "error"' not in outputs and "training mode: finetune" in outputs
    (checkpoint,) = (run_dir / "checkpoints").glob("*.pt")
    model, meta = cxr.load_checkpoint(checkpoint, "cpu")
    config = load_config()
    splits = cxr.load_data(config.data_dir, config.run_dir, meta["image_size"],
                           meta["split_seed"], config.max_images, meta["class_names"][-1],
                           progress=False).splits
    val_dl = cxr.CachedBatchLoader(splits["val"], config.batch_size * 2, torch.device("cpu"))
    reloaded = cxr.evaluate(model, val_dl)
    recorded = meta["metrics"]["val_loss"]
    assert math.isclose(reloaded["val_loss"], recorded, rel_tol=1e-5, abs_tol=1e-7), (
        reloaded,
        recorded,
    )
    assert math.isclose(reloaded["val_acc"], meta["metrics"]["val_acc"])
    # the precision it trained in, chosen for the device (the CPU: float32), is on record
    (record_path,) = (run_dir / "records").glob("*.json")
    record = json.loads(record_path.read_text())
    assert meta["precision"] == record["hyperparams"]["precision"] == "fp32"
    assert record["config"]["precision"] == "auto" and "training precision: fp32" in outputs
