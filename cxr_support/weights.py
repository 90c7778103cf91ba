"""Support code: loading torchvision's ImageNet ResNet weights (lessons need not read this).

It falls back loudly when offline.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import torch
from torchvision import models

from cxr_support.errors import error_summary


def imagenet_weights_enum(arch: str = "resnet50") -> models.WeightsEnum:
    """torchvision's default ImageNet weights for ``arch``.

    ResNet50_Weights.DEFAULT for resnet50.
    """
    return models.get_model_weights(arch).DEFAULT


def weights_on_disk(weights_file: Path | None = None, arch: str = "resnet50") -> bool:
    """True when ImageNet weights load without the network.

    From CXR_WEIGHTS_FILE, or torchvision's earlier download.
    """
    if weights_file is not None:
        return Path(weights_file).is_file()
    name = imagenet_weights_enum(arch).url.rsplit("/", 1)[-1]  # e.g. resnet50-11ad3fa6.pth
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    # a damaged download does not count: it would fall back to random weights, at full size,
    # on a CPU
    try:
        # mmap: maps the file, reads little
        torch.load(cached, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return True


class PretrainedWeightsUnavailable(RuntimeError):
    """ImageNet weights were asked for (CXR_PRETRAINED=1) but could not be loaded."""


def load_imagenet_weights(pretrained: str = "auto", weights_file: Path | None = None,
                          timeout_s: float = 20.0, arch: str = "resnet50"):
    """Return (ImageNet state dict of ``arch`` or None, description).

    Loud when it falls back to random init. ``pretrained``: "1" insists (error when
    unavailable), "auto" tries and falls back loudly, "0" skips. ``weights_file``
    (CXR_WEIGHTS_FILE) is a local copy of torchvision's weights file for ``arch`` (CXR_ARCH),
    for offline machines.
    """

    weights = imagenet_weights_enum(arch)
    if pretrained == "0":
        return None, "random init (CXR_PRETRAINED=0)"
    if weights_file is not None:
        path = Path(weights_file)
        if not path.is_file():
            raise PretrainedWeightsUnavailable(
                f"CXR_WEIGHTS_FILE={path} does not exist. "
                f"Point it at the {arch} weights file ({weights.url}).")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            models.get_model(arch, weights=None).load_state_dict(state)
        except Exception as err:  # damaged file, HTML error page, another model's weights
            raise PretrainedWeightsUnavailable(
                f"CXR_WEIGHTS_FILE={path} is not torchvision's {arch} weights file "
                f"({error_summary(err)}), which CXR_ARCH={arch} needs. "
                f"Download it again from {weights.url}."
            ) from None
        return state, f"ImageNet weights from {path}"
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        state = weights.get_state_dict(progress=False)
        return state, f"ImageNet weights {weights} ({weights.url.rsplit('/', 1)[-1]})"
    except Exception as err:  # offline, proxy, corrupt download: all mean "no weights"
        reason = f"{type(err).__name__}: {err}"
    finally:
        socket.setdefaulttimeout(previous)
    fix = (
        "To fix: run once on a machine that is online (torchvision caches the file in "
        f"{torch.hub.get_dir()}/checkpoints), "
        f"or download {weights.url} and set CXR_WEIGHTS_FILE to its path."
    )
    if pretrained == "1":
        raise PretrainedWeightsUnavailable(
            f"CXR_PRETRAINED=1 but the ImageNet weights could not be loaded ({reason}). {fix}")
    banner = "!" * 78
    print(
        f"{banner}\nNO PRETRAINED WEIGHTS: the ImageNet weights could not be loaded ({reason}).\n"
        f"This run trains a {arch} from RANDOM INITIALISATION, which is NOT transfer learning\n"
        f"and is expected to score below a pretrained model "
        f"(this project has not measured by how much). {fix}\n"
        f"Set CXR_PRETRAINED=1 to make this an error instead.\n{banner}"
    )
    warnings.warn("ImageNet weights unavailable: training from random initialisation",
                  stacklevel=2)
    return None, f"random init (ImageNet weights unavailable: {reason})"
