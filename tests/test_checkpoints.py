"""Unit tests for saving and loading checkpoints and for atomic writes.

They cover notebook 2, notebook 3 and cxr_support.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import IMAGE_SIZE, make_images, state_equal

import cxr_utils as cxr
from cxr_support import atomic_files
from cxr_support.atomic_files import atomic_write_bytes
from cxr_support.checkpoints import CHECKPOINT_FORMAT, CheckpointError, latest_checkpoint

CPU = torch.device("cpu")

# ----------------------------------------------------------------------------- checkpoints


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory, base_model):
    """A checkpoint written by save_checkpoint.

    Module-scoped: written once, read by several tests.
    """
    path = tmp_path_factory.mktemp("ckpt") / "checkpoints" / "run-1.pt"
    cxr.save_checkpoint(
        path,
        base_model,
        {
            "image_size": IMAGE_SIZE,
            "threshold": 0.37,
            "run_id": "run-1",
            "metrics": {"val_loss": 0.5},
        },
    )
    return path


def rewrite_checkpoint(source: Path, target: Path, change) -> Path:
    """Load a checkpoint's payload, let ``change`` edit it, and torch.save it to ``target``."""
    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, target)
    return target


def test_checkpoint_round_trip(saved_checkpoint, base_model):
    """save_checkpoint then load_checkpoint gives the same tensors.

    It also gives the metadata, with plain-string versions.
    """
    assert os.listdir(saved_checkpoint.parent) == ["run-1.pt"]  # no temporary files left beside it
    # load_checkpoint builds a fresh model: its random init must be overwritten
    torch.manual_seed(123)
    model, meta = cxr.load_checkpoint(saved_checkpoint)
    assert state_equal(model.state_dict(), base_model.state_dict())
    assert model.pos_weight.item() == 2.0
    assert not model.training
    assert (
        meta["threshold"] == 0.37 and meta["image_size"] == IMAGE_SIZE and meta["run_id"] == "run-1"
    )
    assert meta["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert meta["metrics"] == {"val_loss": 0.5}
    assert (
        meta["format"] == CHECKPOINT_FORMAT
        and meta["arch"] == "resnet50"
        and "architecture" not in meta
    )
    # what the model expects, for a reader of the file
    assert (
        "1 grey channel" in meta["input"]
        and "[0, 1]" in meta["input"]
        and "1 logit" in meta["input"]
    )
    assert meta["mean"] == list(cxr.IMAGENET_MEAN) and meta["std"] == list(cxr.IMAGENET_STD)
    images = make_images(2, seed=5)
    with torch.no_grad():
        # same predictions on (N, 1, H, W) input
        assert torch.equal(model(images), base_model(images))
    assert {"torch", "torchvision", "python"} <= set(meta["versions"])
    assert all(type(v) is str for v in meta["versions"].values())


def test_save_checkpoint_without_image_size_raises(tmp_path, base_model):
    """save_checkpoint refuses metadata without image_size and writes nothing."""
    with pytest.raises(ValueError, match="image_size"):
        cxr.save_checkpoint(tmp_path / "c.pt", base_model, {"threshold": 0.5})
    assert list(tmp_path.iterdir()) == []


def test_load_checkpoint_missing_path_names_notebook_02(tmp_path):
    """A missing checkpoint raises CheckpointError.

    The error names the path and the notebook that writes one.
    """
    with pytest.raises(CheckpointError, match="02_training_on_gpu") as info:
        cxr.load_checkpoint(tmp_path / "nope.pt")
    assert "nope.pt" in str(info.value)


@pytest.mark.parametrize("change", ["drop_key", "fc_shape"])
def test_load_checkpoint_state_dict_that_does_not_fit(tmp_path, saved_checkpoint, change):
    """A state dict with a missing key or a wrong fc shape raises CheckpointError.

    Not a raw RuntimeError.
    """

    def edit(payload):
        state = payload["state_dict"]
        if change == "drop_key":
            del state["network.layer1.0.conv1.weight"]
        else:
            state["network.fc.weight"], state["network.fc.bias"] = (
                torch.zeros(2, 2048),
                torch.zeros(2),
            )

    path = rewrite_checkpoint(saved_checkpoint, tmp_path / "bad.pt", edit)
    with pytest.raises(CheckpointError, match="does not fit"):
        cxr.load_checkpoint(path)


def test_load_checkpoint_wrong_format_raises(tmp_path, saved_checkpoint):
    """A checkpoint of another format version raises CheckpointError naming the format."""
    path = rewrite_checkpoint(
        saved_checkpoint, tmp_path / "old.pt", lambda p: p["metadata"].update(format=99)
    )
    with pytest.raises(CheckpointError, match="format 99"):
        cxr.load_checkpoint(path)


def test_load_checkpoint_of_format_1_raises(tmp_path, saved_checkpoint):
    """A checkpoint of format 1 raises CheckpointError naming the formats.

    Format 1 named its model 'resnet50-gray-1logit'.
    """
    old_metadata = {"format": 1, "architecture": "resnet50-gray-1logit"}
    path = rewrite_checkpoint(
        saved_checkpoint, tmp_path / "format1.pt", lambda p: p["metadata"].update(old_metadata)
    )
    with pytest.raises(CheckpointError, match="format 1 / arch 'resnet50'") as info:
        cxr.load_checkpoint(path)
    assert (
        f"reads format {CHECKPOINT_FORMAT}" in str(info.value)
        and "Re-run notebook 02" in str(info.value)
    )


@pytest.mark.parametrize("arch", ["resnet18", "resnet34"])
def test_another_resnet_round_trips_through_its_checkpoint(tmp_path, arch):
    """A ResNet18 or ResNet34 model is saved as such (metadata 'arch').

    load_checkpoint rebuilds that network.
    """
    torch.manual_seed(0)
    original = cxr.PneumoniaCnnModel(pos_weight=0.5, arch=arch).eval()
    path = cxr.save_checkpoint(
        tmp_path / f"{arch}.pt", original, {"image_size": IMAGE_SIZE, "run_id": arch}
    )
    loaded, meta = cxr.load_checkpoint(path)
    assert (loaded.arch, meta["arch"]) == (arch, arch)
    assert loaded.network.fc.in_features == 512 and state_equal(
        loaded.state_dict(), original.state_dict()
    )
    images = make_images(2, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(images), original(images))


def test_an_unknown_arch_is_refused_when_building_the_model():
    """PneumoniaCnnModel accepts the three ResNets the series knows.

    It names them when given another.
    """
    with pytest.raises(
        ValueError, match=r"resnet18, resnet34, resnet50 \(CXR_ARCH\), got 'resnet101'"
    ):
        cxr.PneumoniaCnnModel(arch="resnet101")


def test_a_checkpoint_of_an_unknown_architecture_names_the_ones_this_code_reads(
    tmp_path, saved_checkpoint
):
    """A checkpoint claiming another network is refused before any model is built.

    The error lists every readable architecture.
    """
    path = rewrite_checkpoint(
        saved_checkpoint, tmp_path / "vgg.pt", lambda p: p["metadata"].update(arch="vgg16")
    )
    with pytest.raises(CheckpointError, match="arch 'vgg16'") as info:
        cxr.load_checkpoint(path)
    assert all(f"'{arch}'" in str(info.value) for arch in ("resnet18", "resnet34", "resnet50"))


def test_weights_of_one_resnet_in_a_checkpoint_labelled_another_name_the_mismatch(
    tmp_path, saved_checkpoint
):
    """ResNet50 weights in a file that says resnet18 raise CheckpointError.

    The error says they do not fit; it is not a raw RuntimeError.
    """
    path = rewrite_checkpoint(
        saved_checkpoint,
        tmp_path / "mislabelled.pt",
        lambda p: p["metadata"].update(arch="resnet18"),
    )
    with pytest.raises(CheckpointError, match="does not fit PneumoniaCnnModel"):
        cxr.load_checkpoint(path)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"weights": torch.zeros(1)}, id="no-metadata"),
        pytest.param([1, 2, 3], id="a-list"),
        pytest.param(
            {"metadata": "resnet50", "state_dict": {}},
            id="metadata-not-a-dict",
        ),
        pytest.param(
            {"metadata": {"format": CHECKPOINT_FORMAT, "arch": "resnet50"}, "state_dict": [1, 2]},
            id="state-dict-not-a-dict",
        ),
    ],
)
def test_load_checkpoint_malformed_payload_raises_checkpoint_error(tmp_path, payload):
    """A plain-data file that is not shaped like this series' checkpoint raises CheckpointError."""
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError):
        cxr.load_checkpoint(path)


def _write_marker(path: str) -> str:
    """Called by unpickling a _CodeOnLoad object: proof that the file ran code."""
    Path(path).write_text("code from the checkpoint ran")
    return "pwned"


class _CodeOnLoad:
    """An object whose unpickling calls _write_marker (what a malicious checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def test_tampered_checkpoint_is_refused_without_running_code(tmp_path, saved_checkpoint):
    """A checkpoint carrying an arbitrary Python object raises CheckpointError.

    Its code never runs.
    """
    marker = tmp_path / "marker.txt"
    path = rewrite_checkpoint(
        saved_checkpoint, tmp_path / "tampered.pt", lambda p: p.update(extra=_CodeOnLoad(marker))
    )
    with pytest.raises(CheckpointError, match="Refusing to load") as info:
        cxr.load_checkpoint(path)
    assert "tampered.pt" in str(info.value)
    assert not marker.exists()
    # control: the same kind of file really runs code when loaded unsafely,
    # so the check above can fail
    control_marker = tmp_path / "control.txt"
    torch.save({"extra": _CodeOnLoad(control_marker)}, tmp_path / "control.pt")
    torch.load(tmp_path / "control.pt", weights_only=False)
    assert control_marker.exists()


def test_raw_pickle_file_is_refused_without_running_code(tmp_path):
    """A .pt file that is a bare pickle with code raises CheckpointError and does not run it."""
    marker = tmp_path / "marker.txt"
    path = tmp_path / "pickle.pt"
    path.write_bytes(pickle.dumps({"metadata": {}, "state_dict": _CodeOnLoad(marker)}, protocol=2))
    with pytest.raises(CheckpointError):
        cxr.load_checkpoint(path)
    assert not marker.exists()


def test_random_bytes_checkpoint_raises(tmp_path):
    """A file of random bytes raises CheckpointError."""
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError, match="noise.pt"):
        cxr.load_checkpoint(path)


def test_latest_checkpoint_is_the_newest_run_not_the_newest_write(tmp_path):
    """latest_checkpoint picks the .pt file of the newest run (names start with the run's time).

    A checkpoint rewritten later (notebook 03 stores a threshold) does not become the newest,
    and other files are ignored.
    """
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    runs = [("20260101-120000-000000-aaaa.pt", 1_000), ("20260102-090000-000000-bbbb.pt", 2_000),
            ("20251231-235959-999999-cccc.pt", 3_000), ("notes.txt", 9_000)]
    for name, mtime in runs:  # the oldest run's file was written last
        (folder / name).write_bytes(b"x")
        os.utime(folder / name, (mtime, mtime))
    assert latest_checkpoint(tmp_path) == folder / "20260102-090000-000000-bbbb.pt"


def test_the_newest_checkpoint_says_where_it_came_from(tmp_path, capsys):
    """Picking the newest checkpoint prints its run, the notebook or script that made it, its
    processes, whether it learned from the synthetic sample, and its threshold; a checkpoint of
    notebook 5's script is named as such, also one written before checkpoints said who made them."""
    from cxr_support.checkpoints import origin, write_checkpoint

    state = {"w": torch.zeros(1)}
    ddp = {"run_id": "20260102-090000-000000-bbbb", "made_by": "train_ddp.py (notebook 05)",
           "processes": 2, "synthetic_data": True}
    write_checkpoint(tmp_path / "checkpoints" / f"{ddp['run_id']}.pt", state, ddp)
    write_checkpoint(tmp_path / "checkpoints" / "20260101-120000-000000-aaaa.pt", state,
                     {"run_id": "20260101-120000-000000-aaaa", "made_by": "notebook 02"})
    assert latest_checkpoint(tmp_path).stem == ddp["run_id"]
    shown = capsys.readouterr().out
    assert "run 20260102-090000-000000-bbbb, made by train_ddp.py (notebook 05) in 2 " in shown
    assert "SYNTHETIC sample" in shown and "threshold 0.500 (none chosen yet" in shown
    older = origin({"run_id": "r", "processes": 2, "synthetic_data": False, "threshold": 0.31,
                    "threshold_method": "youden on validation split"})
    assert older == ("run r, made by train_ddp.py (notebook 05) in 2 process(es), trained on "
                     "real X-rays; threshold 0.310 (youden on validation split)")


@pytest.mark.parametrize("make_folder", [True, False])
def test_latest_checkpoint_none_names_notebook_02(tmp_path, make_folder):
    """With no checkpoint (empty or missing folder) latest_checkpoint raises CheckpointError.

    The error names notebook 02.
    """
    if make_folder:
        (tmp_path / "checkpoints").mkdir()
        (tmp_path / "checkpoints" / "readme.txt").write_text("no weights here")
    with pytest.raises(CheckpointError, match="02_training_on_gpu"):
        latest_checkpoint(tmp_path)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_bytes_writes_and_creates_folders(tmp_path):
    """atomic_write_bytes creates missing folders and replaces the content.

    It leaves only the target file.
    """
    path = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert os.listdir(path.parent) == ["file.bin"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_atomic_write_bytes_failure_keeps_old_content(tmp_path, monkeypatch, failing):
    """If the write fails midway (fsync or the final rename), the old content is intact.

    No temp file remains.
    """
    path = tmp_path / "file.bin"
    path.write_bytes(b"old content")

    def boom(*args, **kwargs):
        raise OSError(f"simulated {failing} failure")

    monkeypatch.setattr(atomic_files.os, failing, boom)
    with pytest.raises(OSError, match="simulated"):
        atomic_write_bytes(path, b"new content that must not appear")
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["file.bin"]
