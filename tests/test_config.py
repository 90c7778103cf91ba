"""Tests for the run config: ``load_config`` and ``Config`` (cxr_utils, config section).

Every test passes an explicit ``environ`` dict, so the CXR_* variables set by the root
conftest.py (CXR_QUICK, CXR_RUN_DIR) or by the user's shell never leak in.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cxr_support import tables
from cxr_support.config import (
    _ENV,
    FULL_DEFAULTS,
    QUICK_DEFAULTS,
    Config,
    load_config,
)
from cxr_support.paths import PROJECT_ROOT

FIELD_NAMES = [f.name for f in dataclasses.fields(Config) if f.name != "sources"]


@pytest.fixture
def quick_env() -> dict[str, str]:
    """An environment that only switches quick mode on (so the result does not depend on CUDA)."""
    return {"CXR_QUICK": "1"}


@pytest.fixture
def full_env(tmp_path: Path) -> dict[str, str]:
    """An environment that sets every CXR_* variable to a non-default value."""
    return {
        "CXR_DATA_DIR": str(tmp_path / "data"),
        "CXR_EXTERNAL_DIR": str(tmp_path / "other-hospital"),
        "CXR_DEVICE": " CPU ",
        "CXR_QUICK": "false",
        "CXR_SEED": "7",
        "CXR_IMAGE_SIZE": "128",
        "CXR_BATCH_SIZE": "16",
        "CXR_EPOCHS": "3",
        "CXR_MAX_LR": "0.01",
        "CXR_PRETRAINED": "0",
        "CXR_TRAIN_MODE": " FineTune ",
        "CXR_MAX_IMAGES": "250",
        "CXR_WEIGHTS_FILE": str(tmp_path / "resnet50.pth"),
        "CXR_RUN_DIR": str(tmp_path / "runs"),
        "CXR_ARCH": " ResNet34 ",
        "CXR_POSITIVE_CLASS": " COVID ",
        "CXR_PRECISION": " FP16 ",
    }


# ----------------------------------------------------------------------------- defaults and sources


def test_defaults_and_their_sources(quick_env):
    """With only CXR_QUICK set, every other setting is a default and says which kind."""
    config = load_config(environ=quick_env)
    assert config.data_dir is None
    assert config.seed == 42
    assert config.pretrained == "auto"
    assert config.train_mode == "auto"
    assert config.weights_file is None
    assert config.run_dir == PROJECT_ROOT / "runs"
    assert config.sources["quick"] == "env CXR_QUICK"
    for name in ("data_dir", "seed", "pretrained", "train_mode", "weights_file", "run_dir"):
        assert config.sources[name] == "default", name
    for name in QUICK_DEFAULTS:
        assert config.sources[name] == "quick default", name
    assert set(config.sources) == set(FIELD_NAMES)


@pytest.mark.parametrize(
    ("quick", "defaults", "label"),
    [(True, QUICK_DEFAULTS, "quick default"), (False, FULL_DEFAULTS, "full default")],
)
def test_quick_flag_picks_its_defaults(quick, defaults, label):
    """quick=True takes QUICK_DEFAULTS, quick=False FULL_DEFAULTS, each labelled as such."""
    config = load_config(environ={}, quick=quick)
    assert config.quick is quick
    assert config.sources["quick"] == "notebook parameter"
    for name, value in defaults.items():
        assert getattr(config, name) == value, name
        assert config.sources[name] == label, name


def test_a_notebook_quick_default_gives_way_to_the_environment():
    """quick_defaults replaces a quick-mode default only: the environment and overrides win, and
    a full run keeps its own defaults (notebook 5 trains 2 epochs in quick mode)."""
    two = {"epochs": 2}
    quick = load_config(environ={"CXR_QUICK": "1"}, quick_defaults=two)
    assert quick.epochs == 2 and quick.sources["epochs"] == "quick default"
    from_env = load_config(environ={"CXR_QUICK": "1", "CXR_EPOCHS": "4"}, quick_defaults=two)
    assert from_env.epochs == 4
    assert load_config(environ={"CXR_QUICK": "1"}, quick_defaults=two, epochs=3).epochs == 3
    full = load_config(environ={"CXR_QUICK": "0"}, quick_defaults=two)
    assert full.epochs == FULL_DEFAULTS["epochs"]


@pytest.mark.parametrize(("environ", "arch", "source"), [
    ({"CXR_QUICK": "1"}, "resnet18", "auto (quick mode)"),
    ({"CXR_QUICK": "0"}, "resnet50", "auto (full run)"),
    ({"CXR_QUICK": "1", "CXR_ARCH": "auto"}, "resnet18", "auto (quick mode)"),
    ({"CXR_QUICK": "1", "CXR_ARCH": "resnet50"}, "resnet50", "env CXR_ARCH"),
    ({"CXR_QUICK": "0", "CXR_ARCH": "resnet18"}, "resnet18", "env CXR_ARCH"),
])
def test_arch_is_resnet18_in_quick_mode_resnet50_otherwise_unless_set(environ, arch, source):
    """CXR_ARCH 'auto' (the default) resolves to ResNet18 in quick mode and ResNet50 otherwise.

    A set value always wins.
    """
    config = load_config(environ=environ)
    assert (config.arch, config.sources["arch"]) == (arch, source)


def test_arch_from_a_notebook_parameter_is_checked():
    """ARCH in notebook 02's parameters cell is validated like CXR_ARCH.

    The error is one line naming the choices.
    """
    assert load_config(environ={"CXR_QUICK": "1"}, arch="resnet34").arch == "resnet34"
    with pytest.raises(
        ValueError,
        match=r"arch='densenet121' is not valid: "
        r"expected one of auto, resnet18, resnet34, resnet50",
    ):
        load_config(environ={"CXR_QUICK": "1"}, arch="densenet121")


def test_quick_and_full_defaults_differ():
    """The two default sets really differ (a quick run is smaller than a full one)."""
    quick = load_config(environ={"CXR_QUICK": "1"})
    full = load_config(environ={"CXR_QUICK": "0"})
    assert quick.image_size < full.image_size
    assert quick.max_images is not None and full.max_images is None


# ---------------------------------------------------------------------------- environment variables


def test_env_values_are_parsed_and_sourced(full_env, tmp_path):
    """Every CXR_* variable is parsed to its type and recorded as 'env CXR_...'."""
    config = load_config(environ=full_env)
    assert config.data_dir == tmp_path / "data"
    assert config.external_dir == tmp_path / "other-hospital"
    assert config.quick is False
    assert config.seed == 7
    assert config.image_size == 128
    assert config.batch_size == 16
    assert config.epochs == 3
    assert config.max_lr == pytest.approx(0.01)
    assert config.pretrained == "0"
    assert config.train_mode == "finetune"  # stripped and lower-cased
    assert config.max_images == 250
    assert config.weights_file == tmp_path / "resnet50.pth"
    assert config.run_dir == tmp_path / "runs"
    assert config.arch == "resnet34"  # stripped and lower-cased
    assert config.positive_class == "COVID"  # stripped, case kept: folder names are case-sensitive
    assert config.precision == "fp16"  # stripped and lower-cased
    assert isinstance(config.data_dir, Path) and isinstance(config.run_dir, Path)
    for name, (var, _) in _ENV.items():
        assert config.sources[name] == f"env {var}", name


@pytest.mark.parametrize("text", ["1", "true", "YES", "on"])
def test_quick_accepts_true_spellings(text):
    """CXR_QUICK accepts the usual spellings of true."""
    assert load_config(environ={"CXR_QUICK": text}).quick is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off"])
def test_quick_accepts_false_spellings(text):
    """CXR_QUICK accepts the usual spellings of false."""
    assert load_config(environ={"CXR_QUICK": text}).quick is False


def test_blank_env_value_counts_as_unset(quick_env):
    """A variable set to blanks is ignored, and the default applies."""
    config = load_config(environ={**quick_env, "CXR_SEED": "  ", "CXR_IMAGE_SIZE": ""})
    assert config.seed == 42 and config.sources["seed"] == "default"
    assert config.image_size == QUICK_DEFAULTS["image_size"]
    assert config.sources["image_size"] == "quick default"


@pytest.mark.parametrize("text", ["all", "ALL", "none"])
def test_max_images_all_means_no_cap(quick_env, text):
    """CXR_MAX_IMAGES=all (or none) means every image.

    That is None, from the environment, not the quick cap.
    """
    config = load_config(environ={**quick_env, "CXR_MAX_IMAGES": text})
    assert config.max_images is None
    assert config.sources["max_images"] == "env CXR_MAX_IMAGES"


def test_notebook_overrides_win_over_env(full_env):
    """A notebook parameter beats the environment variable for the same setting."""
    config = load_config(
        environ=full_env, seed=5, quick=True, image_size=96, train_mode="feature_extractor"
    )
    assert (config.seed, config.quick, config.image_size, config.train_mode) == (
        5, True, 96, "feature_extractor"
    )
    for name in ("seed", "quick", "image_size", "train_mode"):
        assert config.sources[name] == "notebook parameter", name
    # the others still come from env
    assert config.epochs == 3 and config.sources["epochs"] == "env CXR_EPOCHS"


def test_none_override_falls_through_to_env(full_env):
    """An override of None is 'not given': the environment value is used."""
    config = load_config(environ=full_env, seed=None)
    assert config.seed == 7 and config.sources["seed"] == "env CXR_SEED"


def test_quick_override_false_beats_env_quick(quick_env):
    """quick=False from the notebook gives full defaults even when CXR_QUICK=1."""
    config = load_config(environ=quick_env, quick=False)
    assert config.image_size == FULL_DEFAULTS["image_size"]
    assert config.sources["image_size"] == "full default"


# ----------------------------------------------------------------------------- invalid values


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CXR_QUICK", "maybe"),
        ("CXR_IMAGE_SIZE", "abc"),
        ("CXR_IMAGE_SIZE", "8"),
        ("CXR_IMAGE_SIZE", "0"),
        ("CXR_BATCH_SIZE", "0"),
        ("CXR_EPOCHS", "-1"),
        ("CXR_SEED", "4.5"),
        ("CXR_MAX_LR", "fast"),
        ("CXR_PRETRAINED", "yes"),
        ("CXR_TRAIN_MODE", "linear"),
        ("CXR_MAX_IMAGES", "many"),
        ("CXR_ARCH", "resnet101"),
        ("CXR_ARCH", "vgg16"),
        ("CXR_POSITIVE_CLASS", "train/PNEUMONIA"),
        ("CXR_POSITIVE_CLASS", ".."),
    ],
)
def test_invalid_env_value_raises_naming_the_variable(var, value):
    """A bad value raises ValueError whose message names the variable."""
    # for CXR_QUICK itself, the bad value replaces the good one
    environ = {"CXR_QUICK": "1", var: value}
    with pytest.raises(ValueError, match=var):
        load_config(environ=environ)


def test_invalid_value_message_quotes_the_value():
    """The message also shows the offending value, so the user can find it."""
    with pytest.raises(ValueError, match="maybe"):
        load_config(environ={"CXR_QUICK": "maybe"})


def test_too_small_image_size_from_notebook_is_rejected(quick_env):
    """The size check applies to notebook parameters too, not only to the environment."""
    with pytest.raises(ValueError, match="CXR_IMAGE_SIZE"):
        load_config(environ=quick_env, image_size=16)


# ------------------------------------------------------------------- the config's table / as_dict


def test_show_prints_every_field(full_env, capsys):
    """The config's rows, shown as the notebooks show them, have every setting, value, source."""
    tables.show_table(load_config(environ=full_env).rows())
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len(lines) == len(FIELD_NAMES) + 1  # header + one row per setting
    for name in FIELD_NAMES:
        row = next((line for line in lines if line.split()[0] == name), None)
        assert row is not None, f"{name} missing from the table"
        assert row.rstrip().endswith(f"env {_ENV[name][0]}"), row
    assert "sources" not in out


def test_show_marks_auto_data_dir(quick_env, capsys):
    """An unset data_dir shows as '(auto)' (it is searched for), not 'None'."""
    tables.show_table(load_config(environ=quick_env).rows())
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("data_dir"))
    assert "(auto)" in row and "None" not in row


def test_as_dict_is_json_serialisable(full_env, tmp_path):
    """as_dict gives plain JSON values (paths as strings) for every setting, and no sources."""
    config = load_config(environ=full_env)
    data = config.as_dict()
    assert sorted(data) == sorted(FIELD_NAMES)
    assert json.loads(json.dumps(data)) == data
    assert data["run_dir"] == str(tmp_path / "runs")
    assert data["data_dir"] == str(tmp_path / "data")
    assert data["seed"] == 7 and data["quick"] is False


def test_as_dict_keeps_none_values(quick_env):
    """Unset optional settings stay None (JSON null), not the string 'None'."""
    data = load_config(environ={**quick_env, "CXR_MAX_IMAGES": "all"}).as_dict()
    assert data["data_dir"] is None and data["weights_file"] is None and data["max_images"] is None
    assert json.loads(json.dumps(data))["max_images"] is None


def test_relative_paths_are_taken_from_the_project_folder():
    """Notebooks run in notebooks/, scripts elsewhere.

    A relative CXR_RUN_DIR/CXR_DATA_DIR must mean the same place for both.
    """
    config = load_config(
        environ={"CXR_QUICK": "1", "CXR_RUN_DIR": "runs/elsewhere", "CXR_DATA_DIR": "data/x"}
    )
    assert config.run_dir == (PROJECT_ROOT / "runs" / "elsewhere").resolve()
    assert config.data_dir == (PROJECT_ROOT / "data" / "x").resolve()
    assert (
        load_config(environ={"CXR_QUICK": "1", "CXR_RUN_DIR": "/tmp/abs"}).run_dir
        == Path("/tmp/abs")
    )
