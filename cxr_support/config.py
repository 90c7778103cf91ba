"""Support code: the one config of a run, read from CXR_* environment variables (lessons need not read this).

``load_config`` builds a frozen ``Config`` from the environment, notebook overrides and
defaults, and remembers where each value came from; ``Config.show`` prints it as a table.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from cxr_support import devices

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run, with where each value came from (notebooks print it first thing)."""

    data_dir: Path | None
    device: str
    quick: bool
    seed: int
    image_size: int
    batch_size: int
    epochs: int
    max_lr: float
    pretrained: str
    train_mode: str
    max_images: int | None
    weights_file: Path | None
    run_dir: Path
    sources: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One row per setting: name, value, where the value came from."""
        return [
            {
                "setting": field.name,
                "value": "(auto)" if field.name == "data_dir" and self.data_dir is None else str(getattr(self, field.name)),
                "source": self.sources.get(field.name, "default"),
            }
            for field in dataclasses.fields(self)
            if field.name != "sources"
        ]

    def show(self) -> None:
        """Display the config as a table: setting, value, source."""
        from cxr_support.tables import show_table

        show_table(self.rows())

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-friendly values (paths as strings)."""
        out = {}
        for field in dataclasses.fields(self):
            if field.name != "sources":
                value = getattr(self, field.name)
                out[field.name] = str(value) if isinstance(value, Path) else value
        return out


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected 1/0/true/false, got {text!r}")


def _parse_choice(*choices: str):
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def _parse_path(text: str) -> Path:
    """A path from the environment; relative ones are taken from the project folder, as notebooks run in notebooks/."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def _parse_optional_int(text: str) -> int | None:
    if text.strip().lower() in {"", "none", "all"}:
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive number or 'all', got {text!r}")
    return value


_ENV = {
    "data_dir": ("CXR_DATA_DIR", _parse_path),
    "device": ("CXR_DEVICE", devices.check_device_choice),
    "quick": ("CXR_QUICK", _parse_bool),
    "seed": ("CXR_SEED", int),
    "image_size": ("CXR_IMAGE_SIZE", int),
    "batch_size": ("CXR_BATCH_SIZE", int),
    "epochs": ("CXR_EPOCHS", int),
    "max_lr": ("CXR_MAX_LR", float),
    "pretrained": ("CXR_PRETRAINED", _parse_choice("auto", "1", "0")),
    "train_mode": ("CXR_TRAIN_MODE", _parse_choice("auto", "finetune", "feature_extractor")),
    "max_images": ("CXR_MAX_IMAGES", _parse_optional_int),
    "weights_file": ("CXR_WEIGHTS_FILE", _parse_path),
    "run_dir": ("CXR_RUN_DIR", _parse_path),
}


FULL_DEFAULTS = {"image_size": 224, "batch_size": 64, "epochs": 8, "max_lr": 3e-4, "max_images": None}


QUICK_DEFAULTS = {"image_size": 64, "batch_size": 32, "epochs": 6, "max_lr": 2e-3, "max_images": 400}


def load_config(environ: dict[str, str] | None = None, **overrides: Any) -> Config:
    """Build the run's config from CXR_* environment variables, notebook overrides and defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name, (var, parse) in _ENV.items():
        if overrides.get(name) is not None:
            value = overrides[name]
            try:
                values[name] = parse(value) if isinstance(value, str) else value
            except ValueError as err:
                raise ValueError(f"{name}={value!r} is not valid: {err}") from None
            sources[name] = "notebook parameter"
        elif env.get(var, "").strip():
            try:
                values[name] = parse(env[var])
            except ValueError as err:
                raise ValueError(f"{var}={env[var]!r} is not valid: {err}") from None
            sources[name] = f"env {var}"
    if "device" not in values:
        values["device"], sources["device"] = "auto", "default"
    if "quick" not in values:  # quick only when training would run on the CPU
        accelerator = devices.accelerator_kind() if values["device"] == "auto" else values["device"]
        accelerator = None if accelerator == "cpu" else accelerator
        values["quick"] = accelerator is None
        sources["quick"] = "auto (no accelerator)" if accelerator is None else f"auto ({accelerator} device)"
    defaults = QUICK_DEFAULTS if values["quick"] else FULL_DEFAULTS
    for name, value in {
        **defaults,
        "data_dir": None,
        "seed": 42,
        "pretrained": "auto",
        "train_mode": "auto",
        "weights_file": None,
        "run_dir": PROJECT_ROOT / "runs",
    }.items():
        if name not in values:
            values[name] = value
            sources[name] = ("quick default" if values["quick"] else "full default") if name in defaults else "default"
    for name in ("image_size", "batch_size", "epochs"):
        if values[name] < 1:
            raise ValueError(f"{_ENV[name][0]} must be a positive integer, got {values[name]}")
    if values["image_size"] < 32:
        raise ValueError(f"CXR_IMAGE_SIZE must be at least 32 for a ResNet50, got {values['image_size']}")
    return Config(**values, sources=sources)
