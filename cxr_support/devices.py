"""Support code: this machine's accelerators and what to call each (lessons need not read this).

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
    """Whether torch's backend for ``kind`` ("cpu", "cuda", "mps", "xpu") has a usable device."""
    if kind == "cpu":
        return True
    backend = torch.backends.mps if kind == "mps" else getattr(torch, kind, None)
    return bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())


def accelerator_kind() -> str | None:
    """The type of this machine's current accelerator ("cuda", "mps", "xpu", ...).

    None when it has none.
    """
    if hasattr(torch, "accelerator"):  # torch 2.6 and later
        try:
            # the argument came in torch 2.7
            found = torch.accelerator.current_accelerator(check_available=True)
        except TypeError:  # torch 2.6: the build's accelerator, which this machine may lack
            found = torch.accelerator.current_accelerator()
            found = found if found is not None and backend_available(found.type) else None
        return found.type if found is not None else None
    return next((kind for kind in DEVICE_CHOICES[2:] if backend_available(kind)), None)


def xpu_has_native_bf16() -> bool:
    """Whether the Intel GPU computes bfloat16 natively (not emulated), across torch releases."""
    try:
        return bool(torch.xpu.is_bf16_supported(including_emulation=False))
    except TypeError:  # releases before the argument: they did not count emulation
        return bool(torch.xpu.is_bf16_supported())


def _runs_on(capability: tuple[int, int], arch: str) -> bool:
    """Whether a kernel built for ``arch`` ('sm_75', or PTX 'compute_90') runs on ``capability``."""
    kind, _, number = arch.partition("_")
    if not number.isdigit():
        return False
    built = (int(number) // 10, int(number) % 10)
    if kind == "sm":  # a binary runs on its own major version, from its minor version up
        return built[0] == capability[0] and built[1] <= capability[1]
    return kind == "compute" and built <= capability  # PTX is compiled for any newer GPU


def unsupported_gpu() -> str | None:
    """One line naming an NVIDIA GPU this PyTorch build has no kernels for, the build, and the fix.

    None when there is no such GPU (no CUDA, an AMD GPU, or kernels that run on it).
    """
    if not torch.cuda.is_available() or getattr(torch.version, "hip", None):
        return None
    archs = torch.cuda.get_arch_list()
    for index in range(torch.cuda.device_count()):
        capability = tuple(torch.cuda.get_device_capability(index))
        if archs and not any(_runs_on(capability, arch) for arch in archs):
            return (f"{torch.cuda.get_device_name(index)} (compute capability {capability[0]}."
                    f"{capability[1]}) cannot run this PyTorch build ({torch.__version__}, kernels "
                    f"for {', '.join(archs)}): every CUDA operation would fail. On Kaggle choose "
                    "the 'GPU T4 x2' accelerator; elsewhere install a PyTorch build that lists "
                    "this compute capability (pytorch.org, 'Previous versions'), or set "
                    "CXR_DEVICE=cpu.")
    return None


def check_device_choice(text: str) -> str:
    """The device asked for ("auto" or one this machine has).

    Otherwise a ValueError saying what it has instead.
    """
    choice = text.strip().lower()
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"expected one of {', '.join(DEVICE_CHOICES)}, got {text!r}")
    if choice != "auto" and not backend_available(choice):
        have = ", ".join(kind for kind in DEVICE_CHOICES[1:] if backend_available(kind))
        raise ValueError(f"this machine has no {choice} device (it has: {have}); "
                         "unset CXR_DEVICE or set it to auto")
    return choice


def device_name(device: torch.device) -> str:
    """A readable name for a device: the GPU's model, "Apple MPS", or the CPU's architecture."""
    if device.type in ("cuda", "xpu"):
        return getattr(torch, device.type).get_device_name(device)
    if device.type == "mps":
        return f"Apple MPS ({platform.machine()})"
    return f"CPU ({platform.machine()}, {platform.processor() or 'unknown model'})"
