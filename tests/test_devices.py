"""One device rule for every accelerator: CUDA, Apple MPS, Intel XPU or the CPU.

The rule is taught in notebook 2 and lives in cxr_support.devices.

This machine has no accelerator, so the tests make torch report one: they patch
``torch.accelerator`` (torch 2.6 and later) or, for older releases, the backends' own
``is_available`` checks.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import cxr_utils as cxr
from cxr_support import devices
from cxr_support.config import load_config
from cxr_support.records import environment_summary

KINDS = ("cuda", "mps", "xpu")


@pytest.fixture
def machine(monkeypatch):
    """Make torch report the accelerators listed; returns the setter.

    They are reported through torch.accelerator and through each backend.
    """

    def have(*kinds: str) -> None:
        for kind in KINDS:
            backend = torch.backends.mps if kind == "mps" else getattr(torch, kind)
            monkeypatch.setattr(backend, "is_available", lambda kind=kind: kind in kinds)
        current = torch.device(kinds[0]) if kinds else None
        monkeypatch.setattr(
            torch.accelerator, "current_accelerator", lambda check_available=False: current
        )

    return have


@pytest.mark.parametrize(
    "kinds, expected", [((), "cpu"), (("mps",), "mps"), (("cuda",), "cuda"), (("xpu",), "xpu")]
)
def test_default_device_follows_torch_accelerator(machine, kinds, expected):
    """get_default_device picks the accelerator torch reports, else the CPU.

    The config's helper agrees.
    """
    machine(*kinds)
    assert cxr.get_default_device() == torch.device(expected)
    assert (devices.accelerator_kind() or "cpu") == expected


@pytest.mark.parametrize(
    "kinds, expected",
    [((), "cpu"), (("mps",), "mps"), (("xpu",), "xpu"), (("cuda", "mps"), "cuda")],
)
def test_default_device_without_torch_accelerator_asks_each_backend(
    machine, monkeypatch, kinds, expected
):
    """On a torch without torch.accelerator, the backends are asked in the order CUDA, MPS, XPU."""
    machine(*kinds)
    monkeypatch.delattr(torch, "accelerator")
    assert cxr.get_default_device() == torch.device(expected)
    assert (devices.accelerator_kind() or "cpu") == expected


@pytest.mark.parametrize(
    "built_for, usable, expected",
    [("cuda", True, "cuda"), ("cuda", False, "cpu"), (None, False, "cpu")],
)
def test_torch_2_6_accelerator_api_without_check_available(
    machine, monkeypatch, built_for, usable, expected
):
    """torch 2.6's current_accelerator() takes no argument.

    It names the build's accelerator, usable or not.
    """
    machine(*(("cuda",) if usable else ()))

    def current_accelerator():  # the 2.6 signature: passing check_available raises TypeError
        return torch.device(built_for) if built_for else None

    monkeypatch.setattr(torch.accelerator, "current_accelerator", current_accelerator)
    assert cxr.get_default_device() == torch.device(expected)
    assert load_config(environ={}).quick is (expected == "cpu")


def test_mps_without_cuda_turns_quick_mode_off(machine):
    """A Mac with Apple silicon trains on its GPU: full mode, and the source names the device."""
    machine("mps")
    config = load_config(environ={})
    assert config.device == "auto" and config.quick is False
    assert config.sources["quick"] == "auto (mps device)"
    assert cxr.get_default_device(config.device) == torch.device("mps")


def test_no_accelerator_means_cpu_and_quick_mode(machine):
    """With nothing available: the CPU, and quick mode on."""
    machine()
    config = load_config(environ={})
    assert config.quick is True and config.sources["quick"] == "auto (no accelerator)"
    assert cxr.get_default_device(config.device) == torch.device("cpu")


def test_cxr_device_is_honoured(machine):
    """CXR_DEVICE picks the device even when another would be the default.

    cpu switches quick mode on.
    """
    machine("cuda", "mps")
    config = load_config(environ={"CXR_DEVICE": "mps"})
    assert (
        config.device == "mps"
        and config.sources["device"] == "env CXR_DEVICE"
        and config.quick is False
    )
    assert cxr.get_default_device(config.device) == torch.device("mps")
    on_cpu = load_config(environ={"CXR_DEVICE": "CPU"})
    assert on_cpu.device == "cpu" and on_cpu.quick is True
    assert cxr.get_default_device(on_cpu.device) == torch.device("cpu")
    # a notebook parameter wins
    assert (
        load_config(environ={"CXR_DEVICE": "xpu", "CXR_QUICK": "1"}, device="cuda").device
        == "cuda"
    )


@pytest.mark.parametrize(
    "value, message",
    [("tpu", r"CXR_DEVICE='tpu' is not valid: expected one of auto, cpu, cuda, mps, xpu"),
     ("xpu", r"CXR_DEVICE='xpu' is not valid: this machine has no xpu device "
             r"\(it has: cpu, mps\); unset CXR_DEVICE or set it to auto")],
)
def test_cxr_device_is_validated(machine, value, message):
    """An unknown device, or one this machine does not have, is a one-line error.

    The error names the variable and the fix.
    """
    machine("mps")
    with pytest.raises(ValueError, match=message):
        load_config(environ={"CXR_DEVICE": value})


@pytest.mark.parametrize(
    "device_type, bf16, expected",
    [("cpu", False, (False, torch.float32)), ("mps", False, (False, torch.float32)),
     ("cuda", True, (True, torch.bfloat16)), ("cuda", False, (True, torch.float16)),
     ("xpu", True, (True, torch.bfloat16)), ("xpu", False, (False, torch.float32))],
)
def test_autocast_settings_are_valid_for_each_device_type(monkeypatch, device_type, bf16, expected):
    """bf16 where the GPU has it natively, fp16 on older NVIDIA GPUs, float32 on the CPU and MPS.

    Every pair builds an autocast. (NVIDIA GPUs are told apart by compute capability: 8.0 for
    native bf16, 7.5 for a T4; Intel GPUs by their own answer, without emulation.)
    """
    capability = (8, 0) if bf16 else (7, 5)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *args, **kwargs: capability)
    monkeypatch.setattr(torch.xpu, "is_bf16_supported",
                        lambda including_emulation=True: bf16 and not including_emulation)
    settings = cxr.autocast_settings(torch.device(device_type))
    assert (settings["enabled"], settings["dtype"]) == expected
    if settings["enabled"]:
        assert torch.amp.is_autocast_available(device_type)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "device not available, disabling" on this machine
            torch.autocast(device_type, **settings)


@pytest.mark.parametrize("device_type", KINDS)
def test_synchronize_waits_on_the_devices_own_backend(monkeypatch, device_type):
    """synchronize calls torch.cuda / torch.mps / torch.xpu .synchronize.

    It calls nothing for the CPU.
    """
    calls = []
    for kind in KINDS:
        monkeypatch.setattr(
            getattr(torch, kind), "synchronize", lambda *args, kind=kind: calls.append(kind)
        )
    cxr.synchronize(torch.device("cpu"))
    assert calls == []
    cxr.synchronize(torch.device(device_type))
    assert calls == [device_type]


@pytest.mark.parametrize(
    "device_type, expected",
    [("cpu", "feature_extractor"), ("mps", "finetune"), ("xpu", "finetune")],
)
def test_auto_train_mode_fine_tunes_on_any_accelerator(device_type, expected):
    """With ImageNet weights, 'auto' fine-tunes on every accelerator.

    It freezes the backbone only on the CPU.
    """
    assert (
        cxr.resolve_train_mode("auto", torch.device(device_type), pretrained_loaded=True)
        == expected
    )


def test_device_names_for_records(monkeypatch):
    """Records and notebooks name the device: the GPU model, Apple MPS, or the CPU."""
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda *args: "Intel Arc A770")
    assert devices.device_name(torch.device("xpu")) == "Intel Arc A770"
    assert devices.device_name(torch.device("mps")).startswith("Apple MPS")
    assert devices.device_name(torch.device("cpu")).startswith("CPU (")
    summary = environment_summary(torch.device("mps"))
    assert summary["device"] == "mps" and summary["gpu"].startswith("Apple MPS")
    assert "gpu" not in environment_summary(torch.device("cpu"))


def test_a_device_passed_by_a_notebook_is_checked_too(machine):
    """A notebook parameter that is a torch.device is accepted for a device the machine has.

    It is refused otherwise.
    """
    machine("mps")
    assert load_config(environ={}, device=torch.device("mps")).device == "mps"
    with pytest.raises(
        ValueError,
        match=r"CXR_DEVICE=.*\(set by a notebook parameter\) is not allowed: "
        r"this machine has no cuda device",
    ):
        load_config(environ={}, device=torch.device("cuda"))
