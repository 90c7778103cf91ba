"""Notebook 02's check that training learned something (issue 27: sound on every machine).

It compares the kept model's validation loss with the best constant prediction's, so that no
single image of a small validation split decides it, and a model that learned nothing fails it.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import run_series_notebook
from nbclient.exceptions import CellExecutionError

from cxr_utils import constant_loss


@pytest.mark.parametrize(("positives", "total", "pos_weight"),
                         [(33, 45, 12 / 33), (390, 624, 1.0), (3, 10, 2.5)])
def test_constant_loss_is_the_lowest_loss_of_any_constant_logit(positives, total, pos_weight):
    """The closed form equals the minimum, over a fine grid of constant logits, of the loss that
    training uses (binary cross-entropy on logits with pos_weight)."""
    labels = torch.tensor([1.0] * positives + [0.0] * (total - positives))
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    losses = torch.stack([
        F.binary_cross_entropy_with_logits(c.expand(total), labels.double(),
                                           pos_weight=torch.tensor(pos_weight, dtype=torch.float64))
        for c in grid
    ])
    assert constant_loss(labels, pos_weight) == pytest.approx(losses.min().item(), rel=1e-6)


def test_constant_loss_of_a_single_class_is_zero():
    assert constant_loss(torch.ones(5), 0.4) == 0.0
    assert constant_loss(torch.zeros(5), 0.4) == 0.0


def test_a_model_that_learned_nothing_fails_notebook_02s_check(tmp_path, monkeypatch):
    """At a peak learning rate of 1e-8 the weights barely move in 3 epochs: the check must stop
    the notebook, naming the ratio to the constant prediction."""
    settings = {"CXR_QUICK": "1", "CXR_IMAGE_SIZE": "32", "CXR_MAX_IMAGES": "64", "CXR_EPOCHS": "3",
                "CXR_MAX_LR": "1e-8", "CXR_RUN_DIR": str(tmp_path / "runs"),
                "CXR_PRETRAINED": "0", "CXR_JOVIAN": "0"}
    for var, value in settings.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(CellExecutionError, match="of what a constant prediction scores"):
        run_series_notebook("02_training_on_gpu.ipynb")
    assert not list((tmp_path / "runs").glob("checkpoints/*.pt")), "a failed run saved a model"
