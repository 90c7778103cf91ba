"""Support code: the one config of a run (lessons need not read this).

The config is read from CXR_* environment variables. ``load_config`` builds a frozen
``Config`` from the environment, notebook overrides and defaults, and remembers where each
value came from; ``Config.rows`` lists it for a table (``tables.show_table(config.rows())``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cxr_support import devices, weights
from cxr_support.paths import PROJECT_ROOT
from cxr_support.switches import parse_bool

# torchvision ResNets the series can build, load weights for and checkpoint
ARCHS = ("resnet18", "resnet34", "resnet50")
DEFAULT_POSITIVE_CLASS = "PNEUMONIA"


def resolve_arch(arch: str, quick: bool) -> str:
    """CXR_ARCH as a network: 'auto' is ResNet18 in quick mode, else ResNet50.

    ResNet18 does about 1.8 billion multiply-adds per 224-px image, ResNet50 about 4.1.
    """
    if arch != "auto":
        return arch
    return "resnet18" if quick else "resnet50"


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of a run, with where each value came from (notebooks print it first thing)."""

    data_dir: Path | None
    external_dir: Path | None
    device: str
    quick: bool
    seed: int
    image_size: int
    batch_size: int
    epochs: int
    max_lr: float
    pretrained: str
    train_mode: str
    arch: str
    precision: str
    positive_class: str
    max_images: int | None
    weights_file: Path | None
    run_dir: Path
    sources: dict[str, str] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """One row per setting: name, value, where the value came from."""
        return [
            {
                "setting": field.name,
                "value": ("(auto)" if field.name == "data_dir" and self.data_dir is None
                          else str(getattr(self, field.name))),
                "source": self.sources.get(field.name, "default"),
            }
            for field in dataclasses.fields(self)
            if field.name != "sources"
        ]

    def as_dict(self) -> dict[str, Any]:
        """The settings as JSON-friendly values (paths as strings)."""
        out = {}
        for field in dataclasses.fields(self):
            if field.name != "sources":
                value = getattr(self, field.name)
                out[field.name] = str(value) if isinstance(value, Path) else value
        return out


def _parse_choice(*choices: str):
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return value

    return parse


def _parse_path(text: str) -> Path:
    """A path from the environment.

    Relative ones are taken from the project folder, as notebooks run in notebooks/.
    """
    path = Path(text).expanduser()
    return path if path.is_absolute() else (PROJECT_ROOT / path).resolve()


def _parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _parse_float(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(f"expected a number such as 3e-4, got {text!r}") from None


def _parse_class_name(text: str) -> str:
    """A class folder's name: one folder of train/, such as PNEUMONIA.

    Kept as written: folder names are case-sensitive.
    """
    name = text.strip()
    if not name or name in {".", ".."} or "/" in name or "\\" in name:
        raise ValueError("expected the name of one class folder in train/, such as PNEUMONIA, "
                         f"got {text!r}")
    return name


def _parse_optional_int(text: str) -> int | None:
    if text.strip().lower() in {"", "none", "all"}:
        return None
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive number or 'all', got {text!r}")
    return value


_ENV = {
    "data_dir": ("CXR_DATA_DIR", _parse_path),
    "external_dir": ("CXR_EXTERNAL_DIR", _parse_path),
    "device": ("CXR_DEVICE", devices.check_device_choice),
    "quick": ("CXR_QUICK", parse_bool),
    "seed": ("CXR_SEED", _parse_int),
    "image_size": ("CXR_IMAGE_SIZE", _parse_int),
    "batch_size": ("CXR_BATCH_SIZE", _parse_int),
    "epochs": ("CXR_EPOCHS", _parse_int),
    "max_lr": ("CXR_MAX_LR", _parse_float),
    "pretrained": ("CXR_PRETRAINED", _parse_choice("auto", "1", "0")),
    "train_mode": ("CXR_TRAIN_MODE", _parse_choice("auto", "finetune", "feature_extractor")),
    "arch": ("CXR_ARCH", _parse_choice("auto", *ARCHS)),
    "precision": ("CXR_PRECISION", _parse_choice("auto", "bf16", "fp16", "fp32")),
    "positive_class": ("CXR_POSITIVE_CLASS", _parse_class_name),
    "max_images": ("CXR_MAX_IMAGES", _parse_optional_int),
    "weights_file": ("CXR_WEIGHTS_FILE", _parse_path),
    "run_dir": ("CXR_RUN_DIR", _parse_path),
}


FULL_DEFAULTS = {"image_size": 224, "batch_size": 64, "epochs": 8, "max_lr": 3e-4,
                 "max_images": None}


QUICK_DEFAULTS = {"image_size": 64, "batch_size": 32, "epochs": 6, "max_lr": 2e-3,
                  "max_images": 400}


# A CPU with ImageNet weights on disk: every image at full size, the backbone run once, 20 epochs
# of the head alone.
CPU_FEATURE_DEFAULTS = {**FULL_DEFAULTS, "epochs": 20, "max_lr": 1e-3}


def _features_on_cpu(values: dict[str, Any]) -> bool:
    """Whether a CPU run would train only the head (fixed feature extractor).

    True when it would load ImageNet weights without the network and train only the head on them.
    """
    weights_file = values.get("weights_file")
    if weights_file is not None and not isinstance(weights_file, (str, os.PathLike)):
        return False  # check_settings reports it
    pretrained, train_mode = (str(values.get(name, "auto")).strip().lower()
                              for name in ("pretrained", "train_mode"))
    wants_features = pretrained != "0" and train_mode in ("auto", "feature_extractor")
    arch = resolve_arch(values.get("arch", "auto"), quick=False)  # the features run at full size
    weights_path = None if weights_file is None else _parse_path(os.fspath(weights_file))
    return wants_features and weights.weights_on_disk(weights_path, arch)


KAGGLE_WORKING = Path("/kaggle/working")  # what Kaggle keeps (up to 20 GB) in a saved version


def default_run_dir(env: Mapping[str, str]) -> Path:
    """runs/ in the project folder; on Kaggle, in its working folder unless the project is there."""
    in_working = KAGGLE_WORKING in (PROJECT_ROOT, *PROJECT_ROOT.parents)
    if env.get("KAGGLE_KERNEL_RUN_TYPE") and not in_working:
        return KAGGLE_WORKING / "runs"
    return PROJECT_ROOT / "runs"


def load_config(environ: dict[str, str] | None = None,
                quick_defaults: Mapping[str, Any] | None = None, **overrides: Any) -> Config:
    """Build the run's config from CXR_* environment variables, notebook overrides and defaults.

    ``quick_defaults`` replaces some of QUICK_DEFAULTS for one notebook (notebook 5 trains 2
    epochs in quick mode); the environment and the overrides still come first.
    """
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
    if values["device"] in ("auto", "cuda") and (problem := devices.unsupported_gpu()):
        raise RuntimeError(problem)
    # a CPU with ImageNet weights on disk: full size, head trained on precomputed features
    cpu_features = False
    # quick only when training would run on the CPU without ImageNet weights at hand
    if "quick" not in values:
        accelerator = devices.accelerator_kind() if values["device"] == "auto" else values["device"]
        accelerator = None if accelerator == "cpu" else accelerator
        cpu_features = accelerator is None and _features_on_cpu(values)
        values["quick"] = accelerator is None and not cpu_features
        sources["quick"] = (
            f"auto ({accelerator} device)" if accelerator
            else "auto (no accelerator; ImageNet weights on disk: "
                 "fixed feature extractor at full size)" if cpu_features
            else "auto (no accelerator)"
        )
    defaults = ({**QUICK_DEFAULTS, **(quick_defaults or {})} if values["quick"]
                else CPU_FEATURE_DEFAULTS if cpu_features else FULL_DEFAULTS)
    for name, value in {
        **defaults,
        "data_dir": None,
        "external_dir": None,
        "seed": 42,
        "pretrained": "auto",
        "train_mode": "auto",
        "arch": "auto",
        "precision": "auto",
        "positive_class": DEFAULT_POSITIVE_CLASS,
        "weights_file": None,
        "run_dir": default_run_dir(env),
    }.items():
        if name not in values:
            values[name] = value
            label = ("quick default" if values["quick"]
                     else "CPU feature-extractor default" if cpu_features else "full default")
            sources[name] = label if name in defaults else "default"
    # every value, wherever it came from: ranges, types, a writable run dir
    check_settings(values, sources)
    if values["arch"] == "auto":
        values["arch"] = resolve_arch("auto", values["quick"])
        sources["arch"] = f"auto ({'quick mode' if values['quick'] else 'full run'})"
    return Config(**values, sources=sources)


# ----------------------------------------------------------------------------- validation

INT_RANGES = {  # whole-number settings: inclusive range, and what the number counts
    "seed": (0, 2**32 - 1, ""),
    "image_size": (32, 1024, " pixels per side (a ResNet halves the image 5 times: at 32 px its"
                             " last block is already 1 x 1 and its 3 x 3 convolutions see mostly"
                             " zero padding; smaller images shrink the earlier blocks too)"),
    "batch_size": (1, 4096, " images"),
    "epochs": (1, 1000, ""),
    "max_images": (1, 10_000_000, " images per split, or 'all'"),
}
MAX_LR_LIMIT = 1.0


def _invalid(name: str, value: Any, allowed: str, sources: dict[str, str]) -> ValueError:
    """A one-line error naming the variable, the value, and what is allowed.

    It also says where the value came from if a notebook set it.
    """
    via = " (set by a notebook parameter)" if sources.get(name) == "notebook parameter" else ""
    shown = str(value) if isinstance(value, Path) else repr(value)
    return ValueError(f"{_ENV[name][0]}={shown}{via} is not allowed: {allowed}.")


def check_settings(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Check every setting's type and range; raise one-line ValueErrors.

    Works in place, normalising e.g. 1 to True.
    """
    quick = values["quick"]
    if not (isinstance(quick, bool) or (isinstance(quick, numbers.Integral) and quick in (0, 1))):
        raise _invalid("quick", quick, "1/0/true/false", sources)
    values["quick"] = bool(quick)
    for name, (low, high, unit) in INT_RANGES.items():
        value = values[name]
        if name == "max_images" and value is None:
            continue
        if (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                or not low <= value <= high):
            raise _invalid(name, value, f"a whole number from {low} to {high}{unit}", sources)
        values[name] = int(value)
    lr = values["max_lr"]
    if (isinstance(lr, bool) or not isinstance(lr, numbers.Real)
            or not (math.isfinite(lr) and 0 < lr <= MAX_LR_LIMIT)):
        raise _invalid("max_lr", lr, f"a finite number above 0 and at most {MAX_LR_LIMIT:g} "
                       "(defaults: 3e-4; quick mode 2e-3; CPU feature extractor 1e-3)", sources)
    values["max_lr"] = float(lr)
    # choices, re-checked when a notebook passed a non-string
    for name in ("device", "pretrained", "train_mode", "arch", "precision", "positive_class"):
        try:
            values[name] = _ENV[name][1](str(values[name]))
        except ValueError as err:
            raise _invalid(name, values[name], str(err).split(", got")[0], sources) from None
    _check_paths(values, sources)


def _check_paths(values: dict[str, Any], sources: dict[str, str]) -> None:
    """Paths as absolute Paths.

    The data dirs not files, the weights file not a folder, the run dir writable.
    """
    for name in ("data_dir", "external_dir", "weights_file", "run_dir"):
        value = values[name]
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise _invalid(name, value, "a path", sources)
        values[name] = None if value is None else _parse_path(os.fspath(value))
    if (values["data_dir"] is not None and values["data_dir"].exists()
            and not values["data_dir"].is_dir()):
        raise _invalid("data_dir", values["data_dir"],
                       "a folder (the unpacked chest_xray folder), not a file", sources)
    if (values["external_dir"] is not None and values["external_dir"].exists()
            and not values["external_dir"].is_dir()):
        raise _invalid("external_dir", values["external_dir"],
                       "a folder (with one folder of images per class), not a file", sources)
    if values["weights_file"] is not None and values["weights_file"].is_dir():
        raise _invalid("weights_file", values["weights_file"],
                       "a file (torchvision's weights file, e.g. resnet50-11ad3fa6.pth), "
                       "not a folder", sources)
    problem = run_dir_problem(values["run_dir"])
    if problem:
        raise _invalid("run_dir", values["run_dir"],
                       f"a folder you can write to (made if missing), but {problem}", sources)


def run_dir_problem(path: Path) -> str | None:
    """Why ``path`` cannot be the run dir, or None; leaves nothing behind.

    The reasons: it is a file, cannot be created or is not writable.
    """
    existing = path
    while not os.path.lexists(existing) and existing.parent != existing:
        # the nearest existing folder above: the run dir would be made inside it
        existing = existing.parent
    if not existing.is_dir():
        if existing == path:
            return "it is a file" if path.is_file() else "it is a broken link or not a folder"
        return f"it cannot be created: {existing} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        where = "it is" if existing == path else f"it cannot be created: {existing} is"
        return f"{where} not writable ({err.strerror or err})"
    return None
