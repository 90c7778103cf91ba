"""Support code: which accelerators this machine has, and what to call each (lessons need not read this).

PyTorch 2.6 and later put every kind of accelerator (NVIDIA and AMD GPUs as ``cuda``,
Apple silicon as ``mps``, Intel GPUs as ``xpu``, ...) behind ``torch.accelerator``; older
releases are asked backend by backend. The lesson's ``get_default_device`` (notebook 2)
makes the same choice; ``load_config`` uses these helpers to switch quick mode on only
when there is no accelerator at all, and to check ``CXR_DEVICE``.
"""

from __future__ import annotations

import platform

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps", "xpu")


def backend_available(kind: str) -> bool:
    """Whether torch's backend for ``kind`` ("cpu", "cuda", "mps", "xpu") reports a usable device."""
    if kind == "cpu":
        return True
    backend = torch.backends.mps if kind == "mps" else getattr(torch, kind, None)
    return bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())


def accelerator_kind() -> str | None:
    """The type of this machine's current accelerator ("cuda", "mps", "xpu", ...), or None when it has none."""
    if hasattr(torch, "accelerator"):  # torch 2.6 and later
        try:
            found = torch.accelerator.current_accelerator(check_available=True)  # the argument came in torch 2.7
        except TypeError:  # torch 2.6: the build's accelerator, which this machine may lack
            found = torch.accelerator.current_accelerator()
            found = found if found is not None and backend_available(found.type) else None
        return found.type if found is not None else None
    return next((kind for kind in DEVICE_CHOICES[2:] if backend_available(kind)), None)


def check_device_choice(text: str) -> str:
    """The device asked for ("auto" or one this machine has), or a ValueError saying what it has instead."""
    choice = text.strip().lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"expected one of {', '.join(DEVICE_CHOICES)}, got {text!r}")
    if choice != "auto" and not backend_available(choice):
        have = ", ".join(kind for kind in DEVICE_CHOICES[1:] if backend_available(kind))
        raise ValueError(f"this machine has no {choice} device (it has: {have}); unset CXR_DEVICE or set it to auto")
    return choice


def device_name(device: torch.device) -> str:
    """A readable name for a device: the GPU's model, "Apple MPS", or the CPU's architecture."""
    if device.type in ("cuda", "xpu"):
        return getattr(torch, device.type).get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"CPU ({platform.machine()}, {platform.processor() or 'unknown model'})"
