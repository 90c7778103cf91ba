"""Edge cases of the settings (issue 11, class 1).

Every CXR_* value is range-checked where it is read.

Each bad value must fail at ``load_config`` with one line that names the variable, the value
and what is allowed; the run dir is checked writable up front, without writing anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from helpers import snapshot

from cxr_support import config as config_module
from cxr_support.config import _ENV, load_config
from cxr_support.paths import PROJECT_ROOT

QUICK = {"CXR_QUICK": "1"}

# variable -> (bad text, words the message must contain besides the variable and the value)
BAD_ENV = [
    ("CXR_IMAGE_SIZE", "100000", "32 to 1024"),
    ("CXR_IMAGE_SIZE", "1025", "32 to 1024"),
    ("CXR_IMAGE_SIZE", "31", "32 to 1024"),
    ("CXR_MAX_LR", "-0.001", "above 0"),
    ("CXR_MAX_LR", "0", "above 0"),
    ("CXR_MAX_LR", "nan", "finite"),
    ("CXR_MAX_LR", "inf", "finite"),
    ("CXR_MAX_LR", "5", "at most 1"),
    ("CXR_SEED", "-1", "0 to 4294967295"),
    ("CXR_SEED", str(2**32), "0 to 4294967295"),
    ("CXR_BATCH_SIZE", "0", "1 to 4096"),
    ("CXR_BATCH_SIZE", "100000", "1 to 4096"),
    ("CXR_EPOCHS", "0", "1 to 1000"),
    ("CXR_EPOCHS", "1000000", "1 to 1000"),
    ("CXR_MAX_IMAGES", "0", "positive"),
    ("CXR_MAX_IMAGES", "99999999999", "'all'"),
    ("CXR_QUICK", "2", "1/0/true/false"),
    ("CXR_PRETRAINED", "yes", "auto, 1, 0"),
    ("CXR_TRAIN_MODE", "linear", "finetune"),
    ("CXR_ARCH", "resnet152", "resnet18, resnet34, resnet50"),
    ("CXR_PRECISION", "half", "auto, bf16, fp16, fp32"),
    ("CXR_POSITIVE_CLASS", "a/b", "one class folder"),
]
# checked in the tests further down
PATH_VARIABLES = {"CXR_DATA_DIR", "CXR_EXTERNAL_DIR", "CXR_WEIGHTS_FILE", "CXR_RUN_DIR"}
# checked against the machine by cxr_support.devices (tests/test_config.py)
OTHER_CHECKS = {"CXR_DEVICE"}


@pytest.mark.parametrize(
    ("var", "text", "allowed"), BAD_ENV, ids=[f"{v}={t}" for v, t, _ in BAD_ENV]
)
def test_out_of_range_env_value_fails_in_one_line_naming_variable_value_and_range(
    var, text, allowed
):
    """A value that would fail much later (or never) fails at load_config.

    It fails in one line with the variable, the value and the range.
    """
    with pytest.raises(ValueError) as caught:
        load_config(environ={**QUICK, var: text})
    message = str(caught.value)
    assert var in message and text in message and allowed in message, message
    assert "\n" not in message


def test_every_variable_has_a_rejected_value_in_these_tests():
    """No CXR_* setting is left without a range check.

    Each one has a bad value above or a path test below.
    """
    tested = {var for var, _, _ in BAD_ENV} | PATH_VARIABLES | OTHER_CHECKS
    assert {var for var, _ in _ENV.values()} <= tested


@pytest.mark.parametrize(
    ("name", "value", "var"),
    [
        ("image_size", 100000, "CXR_IMAGE_SIZE"),
        ("image_size", 64.5, "CXR_IMAGE_SIZE"),
        ("batch_size", True, "CXR_BATCH_SIZE"),
        ("max_lr", float("nan"), "CXR_MAX_LR"),
        ("max_lr", -1e-3, "CXR_MAX_LR"),
        ("seed", -5, "CXR_SEED"),
        ("epochs", 0, "CXR_EPOCHS"),
        ("max_images", 0, "CXR_MAX_IMAGES"),
        ("quick", 2, "CXR_QUICK"),
        ("pretrained", True, "CXR_PRETRAINED"),
        ("run_dir", 42, "CXR_RUN_DIR"),
    ],
)
def test_out_of_range_notebook_parameter_fails_naming_variable_and_notebook(name, value, var):
    """Notebook parameters get the same checks as the environment.

    The message says a notebook set the value.
    """
    with pytest.raises(ValueError) as caught:
        load_config(environ=QUICK, **{name: value})
    message = str(caught.value)
    assert var in message and "notebook parameter" in message and "not allowed" in message, message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("env", "attribute", "expected"),
    [
        ({"CXR_IMAGE_SIZE": "32"}, "image_size", 32),
        ({"CXR_IMAGE_SIZE": "1024"}, "image_size", 1024),
        ({"CXR_MAX_LR": "1"}, "max_lr", 1.0),
        ({"CXR_MAX_LR": "1e-6"}, "max_lr", 1e-6),
        ({"CXR_SEED": "0"}, "seed", 0),
        ({"CXR_SEED": str(2**32 - 1)}, "seed", 2**32 - 1),
        ({"CXR_BATCH_SIZE": "1"}, "batch_size", 1),
        ({"CXR_MAX_IMAGES": "1"}, "max_images", 1),
    ],
)
def test_values_at_the_edges_of_the_ranges_are_accepted(env, attribute, expected):
    """The ranges are inclusive: their end points are valid settings."""
    assert getattr(load_config(environ={**QUICK, **env}), attribute) == expected


def test_numpy_and_int_notebook_parameters_are_normalised():
    """A numpy integer or 1/0 from a notebook becomes a plain int or bool in the config.

    This keeps the records JSON-friendly.
    """
    config = load_config(
        environ={}, quick=1, image_size=np.int64(96), max_lr=np.float32(0.5), seed=np.uint8(3)
    )
    assert config.quick is True
    assert type(config.image_size) is int and config.image_size == 96
    assert type(config.max_lr) is float and config.max_lr == 0.5
    assert type(config.seed) is int and config.seed == 3


# ---------------------------------------------------------------------------- paths and the run dir


def test_run_dir_that_is_a_file_fails_up_front(tmp_path):
    """CXR_RUN_DIR pointing at an existing file fails at load_config.

    The message names the variable, the path and the problem.
    """
    target = tmp_path / "runs"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="CXR_RUN_DIR") as caught:
        load_config(environ={**QUICK, "CXR_RUN_DIR": str(target)})
    assert str(target) in str(caught.value) and "is a file" in str(caught.value)
    assert target.read_text() == "not a folder"


def test_run_dir_below_a_file_cannot_be_created(tmp_path):
    """A run dir whose parent is a file cannot be created: the message names the file in the way."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="cannot be created") as caught:
        load_config(environ={**QUICK, "CXR_RUN_DIR": str(blocker / "runs")})
    assert "CXR_RUN_DIR" in str(caught.value) and str(blocker) in str(caught.value)


def test_run_dir_that_cannot_be_written_fails_up_front(tmp_path, monkeypatch):
    """When the write probe fails, load_config says the run dir is not writable.

    The probe fails on a read-only disk or without permission.
    """
    run_dir = tmp_path / "runs"
    run_dir.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(config_module.tempfile, "TemporaryFile", refuse)
    with pytest.raises(ValueError, match="not writable") as caught:
        load_config(environ={**QUICK, "CXR_RUN_DIR": str(run_dir)})
    assert (
        "CXR_RUN_DIR" in str(caught.value)
        and str(run_dir) in str(caught.value)
        and "Permission denied" in str(caught.value)
    )


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions that bind (not root)"
)
def test_read_only_run_dir_fails_up_front(tmp_path):
    """A real read-only folder (mode 0o500) is reported as not writable."""
    run_dir = tmp_path / "runs"
    run_dir.mkdir()
    run_dir.chmod(0o500)
    try:
        with pytest.raises(ValueError, match="not writable"):
            load_config(environ={**QUICK, "CXR_RUN_DIR": str(run_dir)})
    finally:
        run_dir.chmod(0o700)


def test_run_dir_check_writes_nothing(tmp_path):
    """Checking a missing run dir leaves the disk as it was: nothing is created or left behind."""
    before = snapshot(tmp_path)
    config = load_config(environ={**QUICK, "CXR_RUN_DIR": str(tmp_path / "new" / "runs")})
    assert config.run_dir == tmp_path / "new" / "runs"
    assert snapshot(tmp_path) == before


def test_relative_path_parameter_is_taken_from_the_project_folder():
    """A relative Path given by a notebook means the same place as the same text in CXR_RUN_DIR."""
    config = load_config(environ=QUICK, run_dir=Path("runs") / "from-notebook")
    assert config.run_dir == (PROJECT_ROOT / "runs" / "from-notebook").resolve()


def test_data_dir_that_is_a_file_fails(tmp_path):
    """CXR_DATA_DIR pointing at a file (a zip, say) fails at once.

    The message names the variable and the path.
    """
    archive = tmp_path / "chest-xray-pneumonia.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(ValueError, match="CXR_DATA_DIR") as caught:
        load_config(environ={**QUICK, "CXR_DATA_DIR": str(archive)})
    assert str(archive) in str(caught.value) and "not a file" in str(caught.value)


def test_external_dir_that_is_a_file_fails(tmp_path):
    """CXR_EXTERNAL_DIR (notebook 06's other hospital) pointing at a file fails at once."""
    archive = tmp_path / "nih-children.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(ValueError, match="CXR_EXTERNAL_DIR") as caught:
        load_config(environ={**QUICK, "CXR_EXTERNAL_DIR": str(archive)})
    assert str(archive) in str(caught.value) and "not a file" in str(caught.value)


def test_weights_file_that_is_a_folder_fails(tmp_path):
    """CXR_WEIGHTS_FILE pointing at a folder fails at once.

    The message names the variable and the file it expects.
    """
    with pytest.raises(ValueError, match="CXR_WEIGHTS_FILE") as caught:
        load_config(environ={**QUICK, "CXR_WEIGHTS_FILE": str(tmp_path)})
    assert "resnet50" in str(caught.value) and "not a folder" in str(caught.value)
