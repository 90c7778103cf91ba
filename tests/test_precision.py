"""Mixed precision that fits the GPU (notebook 2, 'Training'); GPUs a PyTorch build cannot drive.

This machine has no GPU, so the tests make torch report one: a compute capability, a name and
the build's list of GPU architectures.
"""

from __future__ import annotations

import pytest
import torch
from helpers import make_images

import cxr_utils as cxr
from cxr_support import devices
from cxr_support.config import load_config

CUDA = torch.device("cuda")


@pytest.fixture
def gpu(monkeypatch):
    """Make torch report one NVIDIA GPU of this name and compute capability; returns the setter."""

    def have(name: str, capability: tuple[int, int], archs: list[str] | None = None) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        built = archs or ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"]
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: built)
        monkeypatch.setattr(torch.accelerator, "current_accelerator",
                            lambda check_available=False: CUDA)

    return have


@pytest.mark.parametrize("name, capability, expected", [
    ("Tesla P100-PCIE-16GB", (6, 0), "fp32"),
    ("Tesla T4", (7, 5), "fp16"),
    ("Tesla V100-SXM2-16GB", (7, 0), "fp16"),
    ("NVIDIA A100-SXM4-40GB", (8, 0), "bf16"),
    ("NVIDIA H100 80GB HBM3", (9, 0), "bf16"),
])
def test_native_precision_follows_the_compute_capability(monkeypatch, name, capability, expected):
    """bf16 only where the GPU computes it natively (8.0 and up), fp16 on 7.x, else fp32."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    # what a T4 answers by default: emulated bf16 counts
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert cxr.native_precision(CUDA) == expected
    assert cxr.resolve_precision(CUDA) == expected and cxr.resolve_precision(CUDA, "fp32") == "fp32"
    assert cxr.autocast_settings(CUDA) == {"dtype": cxr.PRECISION_DTYPES[expected],
                                           "enabled": expected != "fp32"}


def test_the_cpu_and_apple_mps_train_in_float32_unless_told():
    """Auto is float32 off CUDA and Intel GPUs; a forced precision is used as given."""
    def settings(*args):
        kwargs = cxr.autocast_settings(*args)
        return kwargs["enabled"], kwargs["dtype"]

    assert settings(torch.device("cpu")) == (False, torch.float32)
    assert settings(torch.device("mps")) == (False, torch.float32)
    assert settings(torch.device("cpu"), "fp16") == (True, torch.float16)
    assert settings(torch.device("cpu"), "bf16") == (True, torch.bfloat16)


@pytest.mark.parametrize("text, expected",
                         [("auto", "auto"), ("BF16", "bf16"), (" fp16 ", "fp16"), ("fp32", "fp32")])
def test_cxr_precision_is_read_and_checked(text, expected):
    """CXR_PRECISION takes auto, bf16, fp16 or fp32, and says so when given anything else."""
    assert load_config(environ={"CXR_PRECISION": text}).precision == expected
    expected_message = r"CXR_PRECISION='half' is not valid: expected one of auto, bf16, fp16, fp32"
    with pytest.raises(ValueError, match=expected_message):
        load_config(environ={"CXR_PRECISION": "half"})


class TinyNet(cxr.BinaryClassificationBase):
    """A small convolutional one-logit classifier, quick to train on the CPU."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(8, 1))
        self.register_buffer("pos_weight", torch.tensor(1.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images).squeeze(1)


def test_fit_trains_in_float16_with_a_gradient_scaler(monkeypatch):
    """fp16 autocast and the scaler, for real (PyTorch supports both on the CPU): the loss falls,
    and the scaler, which skips a step when a gradient overflows, does not skip them all."""
    made = []

    class RecordingScaler(torch.amp.GradScaler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps, self.skipped = 0, 0
            made.append(self)

        def update(self, new_scale=None):
            before = self.get_scale() if self.is_enabled() else 1.0
            super().update(new_scale)
            self.steps += 1
            self.skipped += self.is_enabled() and self.get_scale() < before

    monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)
    torch.manual_seed(0)
    images = make_images(32, seed=1)
    labels = (images.mean(dim=(1, 2, 3)) > images.mean()).float()  # a learnable rule: brighter ones
    images = images + labels.view(-1, 1, 1, 1) * 0.5
    batches = [(images[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    model = TinyNet()
    history = [cxr.evaluate(model, batches, "fp16")]
    history += cxr.fit(8, 0.05, model, batches, batches, opt_func=torch.optim.Adam,
                       precision="fp16", progress=False)
    (scaler,) = made
    assert scaler.is_enabled() and scaler.steps == 8 * len(batches)
    assert scaler.skipped < scaler.steps / 2 and scaler.get_scale() >= 1.0
    assert history[-1]["train_loss"] < 0.8 * history[1]["train_loss"]
    assert cxr.best_epoch(history)["val_loss"] < history[0]["val_loss"]


def test_float32_and_bfloat16_need_no_scaler(monkeypatch):
    """The gradient scaler is switched on for fp16 only."""
    made = []
    real = torch.amp.GradScaler
    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(torch.amp, "GradScaler", recording)
    batches = [(make_images(4, seed=2), torch.tensor([0.0, 1.0, 0.0, 1.0]))]
    for precision in ("fp32", "bf16", "fp16"):
        cxr.fit(1, 0.01, TinyNet(), batches, batches, precision=precision, progress=False,
                keep_best=False)
    assert [s.is_enabled() for s in made] == [False, False, True]


def test_a_gpu_the_build_cannot_drive_stops_the_config_cell_with_one_line(gpu):
    """A P100 (6.0), a build whose kernels start at sm_75: load_config names GPU, build, fix."""
    gpu("Tesla P100-PCIE-16GB", (6, 0))
    with pytest.raises(RuntimeError) as info:
        load_config(environ={})
    message = str(info.value)
    assert "\n" not in message
    assert "Tesla P100-PCIE-16GB" in message and "compute capability 6.0" in message
    assert torch.__version__ in message and "sm_75" in message and "T4" in message


@pytest.mark.parametrize("capability, archs", [
    ((7, 5), None),  # a T4: sm_75 kernels
    ((8, 9), None),  # an L4: sm_86 kernels run on 8.9 (same major version, higher minor)
    ((12, 1), ["sm_80", "sm_90", "compute_90"]),  # newer than any kernel: PTX is compiled for it
])
def test_gpus_the_build_can_drive_pass(gpu, capability, archs):
    """Kernels of the same major version and a lower or equal minor one run; so does older PTX."""
    gpu("some GPU", capability, archs)
    assert devices.unsupported_gpu() is None
    assert load_config(environ={}).quick is False


def test_no_gpu_nothing_to_check(monkeypatch):
    """Without CUDA there is nothing to check."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.unsupported_gpu() is None
