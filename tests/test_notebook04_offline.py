"""Notebook 04 end to end with Jovian credentials that point at a service that is down."""

import json
import time

from helpers import run_series_notebook

API_KEY = "sk-test-SECRET-0000"


def fake_record(run_id: str) -> dict:
    return {
        "run_id": run_id,
        "dataset": {"synthetic": True, "root": "synthetic"},
        "model": {"pretrained": False, "train_mode": "finetune", "weights": "random init"},
        "config": {"image_size": 64},
        "hyperparams": {
            "arch": "resnet50",
            "epochs": 2,
            "max_lr": 1e-3,
            "scheduler": "one-cycle",
            "weight_decay": 1e-4,
            "grad_clip": 0.1,
            "opt": "Adam",
        },
        "history": [
            {"epoch": 0, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.7},
            {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "val_acc": 0.8},
        ],
        "test": {
            "chosen_threshold": {
                "accuracy": 0.8,
                "sensitivity": 0.9,
                "specificity": 0.6,
                "roc_auc": 0.85,
                "threshold": 0.4,
            }
        },
    }


def test_notebook_04_with_unreachable_jovian(tmp_path, monkeypatch):
    """Credentials present, service down: the notebook finishes quickly and says why.

    It keeps the record and never shows the key.
    """
    home, run_dir = tmp_path / "home", tmp_path / "runs"
    (home / ".jovian").mkdir(parents=True)
    (home / ".jovian" / "credentials.json").write_text(
        json.dumps({"API_KEY": API_KEY, "API_URL": "http://127.0.0.1:9/"})
    )
    (run_dir / "records").mkdir(parents=True)
    record_file = run_dir / "records" / "20260101-000000-abcd.json"
    record_file.write_text(json.dumps(fake_record("20260101-000000-abcd")))
    before = record_file.read_bytes()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CXR_RUN_DIR", str(run_dir))
    start = time.perf_counter()
    text = run_series_notebook("04_jovian_logging.ipynb", timeout=120)
    elapsed = time.perf_counter() - start
    assert "did not answer" in text and "nothing was uploaded" in text
    assert "Traceback" not in text and '"output_type": "error"' not in text
    assert API_KEY not in text
    assert record_file.read_bytes() == before
    assert elapsed < 90
