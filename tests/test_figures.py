"""Figures of notebooks 2-4.

Grad-CAM's layer and how alike its heatmaps are, the loss plots' axis, and progress bars in
saved notebooks.
"""

from __future__ import annotations

import matplotlib
import nbformat
import numpy as np
import pytest
import torch
from helpers import ROOT, execute_notebook

import cxr_utils as cxr
from cxr_support import plots
from cxr_support.progress import progress_bar

matplotlib.use("Agg")

# ----------------------------------------------------------------------------- Grad-CAM


@pytest.mark.parametrize(
    ("size", "stage"), [(224, "layer4"), (128, "layer3"), (64, "layer2"), (32, "layer1")]
)
def test_gradcam_layer_is_the_deepest_block_with_at_least_7_cells_a_side(base_model, size, stage):
    """224 px: layer4 (7 x 7).

    64 px, quick mode: layer2 (8 x 8), where layer4 would have 2 x 2 cells.
    """
    assert cxr.gradcam_layer(base_model, size) is getattr(base_model.network, stage)[-1]


def test_gradcam_heatmaps_have_the_image_size_and_follow_the_chosen_layer(model):
    """Heatmaps are N x H x W in [0, 1].

    At 64 px the default (layer2) map has more distinct values than layer4's 2 x 2 grid.
    """
    torch.manual_seed(0)
    images = torch.rand(3, 1, 64, 64)
    default = cxr.gradcam(model, images)
    last_block = cxr.gradcam(model, images, layer=model.network.layer4[-1])
    assert default.shape == last_block.shape == (3, 64, 64)
    assert default.min() >= 0 and default.max() <= 1
    assert not np.allclose(default, last_block)


def test_heatmap_agreement_is_one_for_identical_maps_and_low_for_unrelated_ones():
    """The same map shifted in brightness correlates fully; independent noise maps hardly at all.

    One map, or constant maps, give NaN.
    """
    rng = np.random.default_rng(0)
    blob = rng.random((8, 8))
    assert plots.heatmap_agreement([blob, blob * 0.5 + 0.2, blob]) == pytest.approx(1.0)
    assert abs(plots.heatmap_agreement(list(rng.random((6, 16, 16))))) < 0.2
    # a row with no images
    assert np.isnan(plots.heatmap_agreement([blob])) and np.isnan(plots.heatmap_agreement([]))
    assert np.isnan(plots.heatmap_agreement([np.zeros((8, 8)), np.ones((8, 8))]))
    # a constant map is left out
    assert plots.heatmap_agreement([blob, blob, np.zeros((8, 8))]) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- loss plots


@pytest.mark.parametrize(
    ("losses", "scale"),
    [([0.6, 0.4, 0.3], "linear"), ([0.6, 40.0, 0.3], "log"), ([0.5, float("nan"), 0.4], "linear")],
)
def test_loss_axis_turns_logarithmic_when_one_loss_spikes(losses, scale):
    """A loss more than 10 times another gets a log axis.

    So one diverging run does not flatten the others.
    """
    assert plots.loss_scale(losses) == scale


def test_run_curves_use_a_log_axis_when_one_run_spikes():
    """plot_run_curves sets the log scale and says why in the axis label."""
    records = [
        {
            "run_id": "calm",
            "history": [
                {"epoch": 0, "val_loss": 0.5, "val_acc": 0.7},
                {"epoch": 1, "val_loss": 0.4, "val_acc": 0.8},
            ],
        },
        {
            "run_id": "max_lr 1e-2",
            "history": [
                {"epoch": 0, "val_loss": 35.0, "val_acc": 0.3},
                {"epoch": 1, "val_loss": 0.6, "val_acc": 0.7},
            ],
        },
    ]
    plots.plot_run_curves(records)
    axis = matplotlib.pyplot.gcf().axes[0]
    assert axis.get_yscale() == "log" and "log scale" in axis.get_ylabel()
    matplotlib.pyplot.close("all")


# ----------------------------------------------------------------------------- progress bars


def test_progress_bar_outside_jupyter_yields_every_item():
    """In a terminal (or a test) it is plain tqdm and passes every item through, in order."""
    assert list(progress_bar(range(5), desc="x", disable=True)) == list(range(5))
    assert list(progress_bar(iter("abc"), total=3, desc="x")) == ["a", "b", "c"]


def test_a_saved_notebook_shows_the_finished_bar_not_0_percent(tmp_path):
    """In a notebook kernel the widget's 0 % text is replaced by the final line.

    A bar with leave=False leaves nothing.
    """
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from cxr_support.progress import progress_bar\n"
            "items = list(progress_bar(range(7), desc='decode', unit='image'))\n"
            "hidden = list(progress_bar(range(3), desc='epoch 0', leave=False))\n"
            "print(len(items), len(hidden))")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    execute_notebook(notebook, tmp_path, timeout=60)
    outputs = notebook.cells[0].outputs
    texts = [
        o.get("data", {}).get("text/plain", "")
        for o in outputs
        if o.output_type == "display_data"
    ]
    assert any("decode: 100%" in t and "7/7" in t for t in texts), outputs
    assert not any("0%|" in t and "100%" not in t for t in texts), outputs
    assert not any("epoch 0" in t for t in texts), outputs
    assert any(o.output_type == "stream" and "7 3" in o.text for o in outputs)
