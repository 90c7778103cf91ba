"""The helpers the lessons teach, each written, explained and run first in a notebook cell (d2l's way).

Each docstring names that notebook and section; ``tests/test_literate.py`` keeps the two copies identical.
Support code that a learner need not read lives in ``cxr_support``. Nothing runs at import time."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from sklearn import metrics as skm
from torchvision import models
from torchvision import transforms as T

from cxr_support import checkpoints, dataset, devices, jovian_transport
from cxr_support.config import ARCHS
from cxr_support.dataset import CLASS_NAMES
from cxr_support.images import decode_resized, read_xray, to_grayscale
from cxr_support.pixel_cache import XraySplit, load_pixels
from cxr_support.progress import progress_bar
from cxr_support.records import best_epoch

# ----------------------------------------------------------------------------- 01_data_preview

PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_(?:bacteria|virus)_\d+", re.IGNORECASE),
    re.compile(r"^(NORMAL2-IM-\d+)-\d+", re.IGNORECASE),
    re.compile(r"^(IM-\d+)-\d+", re.IGNORECASE),
)


def patient_id(filename: str | Path) -> str:
    """The patient a file belongs to: read from a Kaggle name, else the file is its own patient, within its class (01, 'The patient split')."""
    path = Path(filename)
    for pattern in PATIENT_PATTERNS:
        match = pattern.match(path.stem)
        if match:
            return match.group(1)  # the name says who the patient is, in whichever class folder
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name  # NORMAL/img_1.png is not PNEUMONIA/img_1.png


def patient_split(samples: Sequence[tuple[Path, int]], val_fraction: float = 0.1, seed: int = 42) -> tuple[list[int], list[int]]:
    """Split sample indices into (train, val) by whole patients, per class, deterministic in the seed (01, 'The patient split')."""
    by_patient: dict[str, list[int]] = defaultdict(list)
    for index, (path, _) in enumerate(samples):
        by_patient[patient_id(path)].append(index)
    by_class: dict[int, list[str]] = defaultdict(list)
    for patient, members in by_patient.items():
        by_class[max(samples[i][1] for i in members)].append(patient)  # a patient with films of both classes counts as positive
    val: list[int] = []
    rng = random.Random(seed)
    for label in sorted(by_class):
        patients = sorted(by_class[label])
        rng.shuffle(patients)
        target = val_fraction * sum(len(by_patient[patient]) for patient in patients)
        taken = 0
        for patient in patients:
            if taken >= target:
                break
            val.extend(by_patient[patient])
            taken += len(by_patient[patient])
    val_set = set(val)
    return [i for i in range(len(samples)) if i not in val_set], sorted(val)


def random_image_split(n: int, val_fraction: float = 0.1, seed: int = 42) -> tuple[list[int], list[int]]:
    """The blog post's split: images at random, ignoring patients; shown only to expose the leak (01, 'The patient split')."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = int(val_fraction * n)
    return sorted(order[n_val:]), sorted(order[:n_val])


def patients_on_both_sides(samples: Sequence[tuple[Path, int]], train_idx: Iterable[int], val_idx: Iterable[int]) -> int:
    """Count the patients with images on both sides of a split: the leak (01, 'The patient split')."""
    train_patients = {patient_id(samples[i][0]) for i in train_idx}
    return len(train_patients & {patient_id(samples[i][0]) for i in val_idx})


def prepare_data(root: Path, run_dir: Path, image_size: int, seed: int = 42, max_images: int | None = None, val_fraction: float = 0.1,
                 progress: bool = True, class_names: Sequence[str] = CLASS_NAMES) -> dict[str, XraySplit]:
    """Train/val (a patient split of Kaggle's train/), test and Kaggle's val/, each decoded once (01, 'Decoding once')."""
    run_dir = Path(run_dir)
    train_samples, train_junk = dataset.list_split(root, "train", class_names)
    test_samples, test_junk = dataset.list_split(root, "test", class_names)
    kaggle_val_samples, val_junk = dataset.list_split(root, "val", class_names, required=False)  # unused; may be absent
    dataset.warn_skipped(train_junk + test_junk + val_junk, "non-image files")
    train_idx, val_idx = dataset.load_or_make_split(train_samples, root, run_dir, seed, patient_split, val_fraction)
    val_cap = None if max_images is None else math.ceil(max_images * len(val_idx) / max(len(train_idx), 1))  # in proportion
    plan = {
        "train": [train_samples[i] for i in dataset.stratified_subset(train_samples, train_idx, max_images, seed)],
        "val": [train_samples[i] for i in dataset.stratified_subset(train_samples, val_idx, val_cap, seed)],
        "test": [test_samples[i] for i in dataset.stratified_subset(test_samples, list(range(len(test_samples))), max_images, seed)],
        "kaggle_val": kaggle_val_samples,
    }
    return {name: load_pixels(name, samples, image_size, run_dir / "cache", progress, class_names) for name, samples in plan.items()}


def make_transforms(image_size: int, train: bool):
    """Resize to a square, plus augmentation when ``train`` (no flips); gives 1-channel tensors in [0, 1] (01, 'Transforms')."""
    steps = [T.Resize((image_size, image_size), interpolation=T.InterpolationMode.BILINEAR, antialias=True)]
    if train:
        steps += [T.RandomAffine(degrees=7, translate=(0.05, 0.05), scale=(0.9, 1.1)), T.ColorJitter(brightness=0.2, contrast=0.2)]
    steps.append(T.ToTensor())
    return T.Compose(steps)


def to_model_input(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 grey pixels (N, 1, H, W) to the model's input: float in [0, 1] (01, 'Transforms')."""
    if pixels.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {pixels.dtype}")
    return pixels.float().div_(255)


def augment_batch(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random small rotation, shift, zoom, brightness and contrast for a whole batch on its device (01, 'Transforms')."""
    n, _, height, width = images.shape
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=device) * (high - low) + low).view(n, 1, 1)

    angle, scale = torch.deg2rad(uniform(-7, 7)), uniform(0.9, 1.1)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    shift_x, shift_y = uniform(-0.1, 0.1), uniform(-0.1, 0.1)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=device).view(1, 1, width)
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=device).view(1, height, 1)
    grid = torch.empty(n, height, width, 2, device=device)  # F.affine_grid's sampling grid, by broadcasting (faster on a CPU)
    torch.add(cos * xs, shift_x - sin * ys, out=grid[..., 0])
    torch.add(sin * xs, shift_y + cos * ys, out=grid[..., 1])
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    brightness, contrast = uniform(0.8, 1.2).unsqueeze(1), uniform(0.8, 1.2).unsqueeze(1)
    # brightness then contrast around the image mean, fused: x*b*c + mean(x*b)*(1-c)
    mean = out.mean(dim=(1, 2, 3), keepdim=True) * brightness
    return torch.addcmul(mean * (1 - contrast), out, brightness * contrast).clamp_(0, 1)


def decode_label(label_number: int, class_names: Sequence[str] = CLASS_NAMES) -> str:
    """Turn a label number (0 or 1) into its class name, as in the blog post (01, 'One image')."""
    return class_names[int(label_number)]


class XrayFileDataset(torch.utils.data.Dataset):
    """The classic dataset: decode and transform each image from disk every time it is read (01, 'One image')."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], transform, draft_size: int | None = None):
        self.paths, self.labels, self.transform, self.draft_size = list(paths), list(labels), transform, draft_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_xray(self.paths[index], self.draft_size)), self.labels[index]


def show_image(img_tuple: tuple[torch.Tensor, int], class_names: Sequence[str] = CLASS_NAMES) -> None:
    """Show one (image, label) pair with its label, as in the blog post (01, 'One image')."""
    import matplotlib.pyplot as plt  # imported here: plotting is not needed to train

    image, label = img_tuple
    plt.imshow(image[0].float().cpu(), cmap="gray", vmin=0, vmax=1)
    plt.axis("off")
    plt.title(f"Label: {decode_label(int(label), class_names)}")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def show_batch(dl: Iterable, invert: bool = False, nrow: int = 8, class_names: Sequence[str] = CLASS_NAMES) -> None:
    """Show the first batch of a loader as a grid, with its labels (01, 'A batch')."""
    import matplotlib.pyplot as plt  # imported here: plotting is not needed to train
    from torchvision.utils import make_grid

    images, labels = next(iter(dl))
    images = images.float().cpu()
    data = 1 - images if invert else images
    fig, ax = plt.subplots(figsize=(2 * nrow, 2 * math.ceil(len(images) / nrow)))
    ax.set(xticks=[], yticks=[])
    ax.imshow(make_grid(data, nrow=nrow).permute(1, 2, 0))
    names = [decode_label(int(x), class_names)[0] for x in labels.cpu()]
    key = ", ".join(f"{name[0]}={name}" for name in class_names)
    ax.set_title(f"labels ({key}): " + " ".join(names), fontsize=9)


# ----------------------------------------------------------------------------- 02_training_on_gpu

def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch so that reruns match (02, 'Settings')."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def get_default_device(preference: str = "auto") -> torch.device:
    """Pick the accelerator (NVIDIA or Intel GPU, Apple MPS) if there is one, else the CPU (02, 'The device')."""
    if preference != "auto":
        return torch.device(preference)  # CXR_DEVICE, which load_config checked against this machine
    if hasattr(torch, "accelerator"):  # torch 2.6 and later: every kind of accelerator behind one API
        return torch.accelerator.current_accelerator(check_available=True) or torch.device("cpu")
    for kind in ("cuda", "mps", "xpu"):  # older releases: ask each backend
        if devices.backend_available(kind):
            return torch.device(kind)
    return torch.device("cpu")


def to_device(data: Any, device: torch.device) -> Any:
    """Move a tensor, or a list/tuple/dict of tensors, to ``device`` (02, 'The device')."""
    if isinstance(data, (list, tuple)):
        return [to_device(x, device) for x in data]
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    return data.to(device, non_blocking=True)


class DeviceDataLoader:
    """Wrap a DataLoader so that every batch arrives on ``device`` (02, 'The device')."""

    def __init__(self, dl: Iterable, device: torch.device):
        self.dl, self.device = dl, device

    def __iter__(self) -> Iterator:
        for batch in self.dl:
            yield to_device(batch, self.device)

    def __len__(self) -> int:
        return len(self.dl)


def make_classic_loader(split: XraySplit, image_size: int, batch_size: int, train: bool, device: torch.device, workers: int = 2) -> DeviceDataLoader:
    """The blog post's pipeline, fixed: decode every file every epoch in DataLoader workers (02, 'The input pipeline')."""
    files = XrayFileDataset(split.paths, split.labels.tolist(), make_transforms(image_size, train), draft_size=image_size)
    loader = torch.utils.data.DataLoader(files, batch_size=batch_size, shuffle=train, num_workers=workers,
                                         pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    return DeviceDataLoader(loader, device)


class CachedBatchLoader:
    """Batches from decoded pixels held on ``device``, augmented there (02, 'The input pipeline')."""

    def __init__(self, split: XraySplit, batch_size: int, device: torch.device, shuffle: bool = False, augment: bool = False,
                 seed: int = 0, drop_last: bool = False):
        pin = device.type == "cuda"  # page-locked memory speeds up copies to an NVIDIA GPU; Apple MPS shares memory
        self.pixels = (split.pixels.pin_memory() if pin else split.pixels).to(device, non_blocking=True)
        self.labels = split.labels.to(device, non_blocking=True)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator, device=self.device) if self.shuffle else None
        for b in range(len(self)):
            index = slice(b * self.batch_size, min((b + 1) * self.batch_size, n))
            chosen = order[index] if order is not None else index
            images = to_model_input(self.pixels[chosen])
            if self.augment:
                images = augment_batch(images, self.generator)
            yield images, self.labels[chosen].float()


def synchronize(device: torch.device) -> None:
    """Wait until the device has finished its queued work, so that a timing covers it (02, 'The input pipeline')."""
    if device.type != "cpu":
        getattr(torch, device.type).synchronize()  # torch.cuda, torch.mps or torch.xpu


def images_per_second(step, batches: Iterable, warmup: int = 2, sync_device: torch.device | None = None, max_batches: int | None = None) -> float:
    """Time ``step(batch)`` over ``batches`` (at most ``max_batches``) after ``warmup`` untimed ones; images/s (02, 'The input pipeline')."""
    iterator = iter(batches) if max_batches is None else itertools.islice(batches, warmup + max_batches)
    for _ in range(warmup):
        step(next(iterator))
    if sync_device is not None:
        synchronize(sync_device)
    count, start = 0, time.perf_counter()
    for batch in iterator:
        step(batch)
        count += len(batch[1])
    if sync_device is not None:
        synchronize(sync_device)
    return count / (time.perf_counter() - start)


class BinaryClassificationBase(nn.Module):
    """Training and validation steps for a one-logit classifier, on logits (02, 'The model')."""

    pos_weight: torch.Tensor

    def training_step(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """Mean loss on one batch."""
        images, targets = batch
        return F.binary_cross_entropy_with_logits(self(images).float(), targets.float(), pos_weight=self.pos_weight)

    def validation_step(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Summed loss, correct count and sample count on one batch (kept on the device: no sync)."""
        images, targets = batch
        logits = self(images).float()
        loss = F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=self.pos_weight, reduction="sum")
        correct = ((logits > 0).float() == targets).sum()
        return {"loss_sum": loss.detach(), "correct": correct, "count": torch.tensor(len(targets), device=logits.device)}

    def validation_epoch_end(self, outputs: Sequence[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Combine batches exactly: totals over all samples, not a mean of batch means."""
        totals = {key: torch.stack([o[key].float() for o in outputs]).sum() for key in ("loss_sum", "correct", "count")}
        count = totals["count"].item()
        return {"val_loss": totals["loss_sum"].item() / count, "val_acc": totals["correct"].item() / count}

    def epoch_end(self, epoch: int, result: dict[str, Any]) -> None:
        """Print one line of progress."""
        print(f"Epoch [{epoch}], train_loss: {result['train_loss']:.4f}, val_loss: {result['val_loss']:.4f}, val_acc: {result['val_acc']:.4f}")


def fold_rgb_conv(conv: nn.Conv2d, mean: Sequence[float], std: Sequence[float]) -> nn.Conv2d:
    """A 1-channel conv equal to: grey image -> 3 equal channels -> normalise -> ``conv`` (02, 'The model')."""
    weight = conv.weight.detach()
    mean_t = torch.tensor(mean, dtype=weight.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=weight.dtype).view(1, 3, 1, 1)
    folded = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=True)
    with torch.no_grad():
        folded.weight.copy_((weight / std_t).sum(dim=1, keepdim=True))
        folded.bias.copy_(-(weight * mean_t / std_t).sum(dim=(1, 2, 3)))
    return folded


class PneumoniaCnnModel(BinaryClassificationBase):
    """A ResNet50 (or the ResNet ``arch`` names) with a new one-logit head, for grey images in [0, 1] (02, 'The model')."""

    def __init__(self, state_dict: dict[str, torch.Tensor] | None = None, pos_weight: float = 1.0, freeze_backbone: bool = False,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD, arch: str = "resnet50"):
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)} (CXR_ARCH), got {arch!r}")
        self.arch, self.network = arch, models.get_model(arch, weights=None)  # the architecture, randomly initialised
        if state_dict is not None:
            self.network.load_state_dict(state_dict)  # the ImageNet weights, when we have them
        self.network.conv1 = fold_rgb_conv(self.network.conv1, mean, std)  # 1 grey channel in, normalisation inside
        self.network.fc = nn.Linear(self.network.fc.in_features, 1)  # the new head: 2048 (ResNet50) or 512 features -> 1 logit
        self.register_buffer("pos_weight", torch.tensor(float(pos_weight)))
        self.frozen = False
        if freeze_backbone:
            self.freeze()

    def forward(self, xb: torch.Tensor) -> torch.Tensor:
        """Logits, shape (N,), for images (N, 1, H, W) in [0, 1]."""
        return self.network(xb).squeeze(1)

    def freeze(self) -> None:
        """Train only the head: the backbone's weights and batch-norm statistics stay fixed."""
        self.frozen = True
        for name, param in self.network.named_parameters():
            param.requires_grad = name.startswith("fc.")

    def unfreeze(self) -> None:
        """Train every layer (fine-tuning)."""
        self.frozen = False
        self.network.requires_grad_(True)

    def train(self, mode: bool = True) -> PneumoniaCnnModel:
        """Like nn.Module.train, but a frozen backbone keeps its batch-norm layers in eval mode."""
        super().train(mode)
        if mode and self.frozen:
            for module in self.network.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


def resolve_train_mode(train_mode: str, device: torch.device, pretrained_loaded: bool) -> str:
    """'finetune' or 'feature_extractor' for 'auto': fine-tune on a GPU, freeze on a CPU, never freeze random weights (02, 'The model')."""
    if train_mode != "auto":
        if train_mode == "feature_extractor" and not pretrained_loaded:
            warnings.warn("Freezing a randomly initialised backbone: only the head will learn, from random features.", stacklevel=2)
        return train_mode
    return "feature_extractor" if pretrained_loaded and device.type == "cpu" else "finetune"


def class_balance_pos_weight(labels: torch.Tensor) -> float:
    """pos_weight for BCE that gives both classes equal total weight: #NORMAL / #PNEUMONIA (02, 'The model')."""
    positives = int(labels.sum())
    return (len(labels) - positives) / max(positives, 1)


def get_lr(optimizer: torch.optim.Optimizer) -> float:
    """The learning rate of the first parameter group, as in the blog post (02, 'Training')."""
    for param_group in optimizer.param_groups:
        return param_group["lr"]
    raise ValueError("optimizer has no parameter groups")


def autocast_settings(device: torch.device) -> tuple[bool, torch.dtype]:
    """(use autocast, dtype): bf16 where the GPU has it, fp16 on older NVIDIA GPUs, float32 elsewhere (02, 'Training')."""
    if device.type == "cuda":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "xpu" and torch.xpu.is_bf16_supported():
        return True, torch.bfloat16
    return False, torch.float32  # the CPU, and Apple MPS: full precision (mixed precision there is not measured yet)


@torch.no_grad()
def evaluate(model: BinaryClassificationBase, val_loader: Iterable) -> dict[str, float]:
    """Validation loss and accuracy over every sample of ``val_loader`` (02, 'Training')."""
    model.eval()
    device = next(model.parameters()).device
    use_amp, dtype = autocast_settings(device)
    with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
        outputs = [model.validation_step(batch) for batch in val_loader]
    return model.validation_epoch_end(outputs)


def fit(
    epochs: int, max_lr: float, model: BinaryClassificationBase, train_loader: Iterable, val_loader: Iterable, weight_decay: float = 0,
    grad_clip: float | None = None, opt_func: type[torch.optim.Optimizer] = torch.optim.SGD, keep_best: bool = True, progress: bool = True,
) -> list[dict[str, Any]]:
    """Train with a one-cycle schedule and return one dict per epoch, as in the blog post (02, 'Training')."""
    device = next(model.parameters()).device
    use_amp, dtype = autocast_settings(device)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and dtype == torch.float16)  # only fp16 needs scaling
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = opt_func(params, max_lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr, epochs=epochs, steps_per_epoch=len(train_loader))
    history, best_loss, best_state = [], math.inf, None
    for epoch in range(epochs):
        model.train()
        train_losses, lrs, seen, start = [], [], 0, time.perf_counter()
        for batch in progress_bar(train_loader, desc=f"epoch {epoch}", disable=not progress, leave=False):
            with torch.autocast(device.type, dtype=dtype, enabled=use_amp):
                loss = model.training_step(batch)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_value_(params, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            train_losses.append(loss.detach())  # stays on the device: no waiting for the GPU inside the loop
            lrs.append(get_lr(optimizer))
            sched.step()
            seen += len(batch[1])
        synchronize(device)
        seconds = time.perf_counter() - start  # training only; validation is not counted
        result = evaluate(model, val_loader)
        result.update(epoch=epoch, train_loss=torch.stack(train_losses).mean().item(), lrs=lrs,
                      seconds=round(seconds, 2), images_per_s=round(seen / seconds, 1))
        model.epoch_end(epoch, result)
        history.append(result)
        if keep_best and result["val_loss"] < best_loss:
            best_loss, best_state = result["val_loss"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
        print(f"Restored the weights of epoch {best_epoch(history)['epoch']} (lowest val_loss {best_loss:.4f}).")
    return history


@torch.no_grad()
def backbone_features(model: PneumoniaCnnModel, images: torch.Tensor) -> torch.Tensor:
    """The pooled features (2048 for ResNet50) that the backbone hands its head, for a batch of images (02, 'Precomputed features')."""
    model.eval()  # batch norm uses its stored statistics, so an image's features never change
    backbone = nn.Sequential(*list(model.network.children())[:-1])  # every layer up to the average pool; not fc
    return backbone(images).flatten(1)


class FeatureHead(BinaryClassificationBase):
    """A model's own head, trained on stored features: training it trains ``model.network.fc`` (02, 'Precomputed features')."""

    def __init__(self, model: PneumoniaCnnModel):
        super().__init__()
        self.fc, self.pos_weight = model.network.fc, model.pos_weight  # shared with the model, not copied

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features).squeeze(1)  # logits (N,), as model(images) gives for the images


def accuracy(outputs: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Fraction of correct predictions over all samples; ``outputs`` are probabilities (02, 'Pitfall: accuracy averaged per batch')."""
    preds = (outputs >= threshold).long()
    return (preds == labels.long()).float().mean()


def per_batch_mean_accuracy(correct: Sequence[bool], batch_size: int) -> float:
    """The blog post's way: the mean of per-batch accuracies, wrong when the last batch is smaller (02, 'Pitfall: accuracy averaged per batch')."""
    batches = [correct[i : i + batch_size] for i in range(0, len(correct), batch_size)]
    return float(np.mean([np.mean(b) for b in batches]))


ARCHITECTURES = {f"{arch}-gray-1logit": arch for arch in ARCHS}  # a checkpoint's "architecture" -> the model to build


def save_checkpoint(path: Path, model: PneumoniaCnnModel, metadata: dict[str, Any]) -> Path:
    """Save the weights with everything needed to use them later, atomically (02, 'Saving the checkpoint')."""
    meta = {"architecture": f"{model.arch}-gray-1logit", "arch": model.arch, "image_size": None, "input": "1 channel, [0, 1]; ImageNet mean/std folded into conv1",
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "class_names": list(CLASS_NAMES), "threshold": 0.5, **metadata}
    if not isinstance(meta["image_size"], int):
        raise ValueError("metadata must include image_size (the size the model was trained at)")
    return checkpoints.write_checkpoint(path, model.state_dict(), meta)  # adds the file format, versions and time


# ----------------------------------------------------------------------------- 03_test_predictions

def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> tuple[PneumoniaCnnModel, dict[str, Any]]:
    """(model in eval mode on ``device``, metadata) from a checkpoint of ``save_checkpoint`` (03, 'Loading the checkpoint')."""
    state_dict, meta = checkpoints.read_checkpoint(path, ARCHITECTURES)  # torch.load(weights_only=True): no code runs
    model = PneumoniaCnnModel(arch=ARCHITECTURES[meta["architecture"]])  # random weights, all overwritten below
    try:
        model.load_state_dict(state_dict)
    except (RuntimeError, TypeError) as err:
        raise checkpoints.CheckpointError(f"{path} does not fit PneumoniaCnnModel: {str(err)[:400]}. Re-run notebook 02.") from None
    return model.to(device).eval(), meta


@torch.no_grad()
def predict_dl(dl: Iterable, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities of PNEUMONIA and the true labels for every sample of a loader (03, 'Predicting a whole split')."""
    model.eval()
    device = next(model.parameters()).device
    use_amp, dtype = autocast_settings(device)
    probs, labels = [], []
    with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=use_amp):
        for xb, yb in dl:
            probs.append(torch.sigmoid(model(xb).float()).cpu())
            labels.append(torch.as_tensor(yb).cpu().long())
    return torch.cat(probs), torch.cat(labels)


def choose_threshold(labels, probs, method: str = "youden", min_sensitivity: float = 0.95) -> float:
    """Pick a decision threshold on VALIDATION predictions: Youden's J or a minimum sensitivity (03, 'Choosing the decision threshold')."""
    y = np.asarray(labels).astype(int)
    if len(set(y.tolist())) < 2:
        raise ValueError("Choosing a threshold needs both classes in the validation labels.")
    fpr, tpr, thresholds = skm.roc_curve(y, np.asarray(probs, dtype=float), drop_intermediate=False)
    finite = np.isfinite(thresholds)
    fpr, tpr, thresholds = fpr[finite], tpr[finite], thresholds[finite]
    if method == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    if method == "sensitivity":
        reaching = np.flatnonzero(tpr >= min_sensitivity)
        return float(thresholds[reaching[0]])
    raise ValueError(f"unknown method {method!r}; use 'youden' or 'sensitivity'")


def binary_metrics(labels: Sequence[int] | np.ndarray, probs: Sequence[float] | np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, precision, F1, ROC AUC and the confusion matrix; NaN where undefined (03, 'Metrics')."""
    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred, labels=[0, 1]).ravel()
    nan = float("nan")
    return {
        "threshold": float(threshold),
        "n": int(len(y)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else nan,
        "specificity": float(tn / (tn + fp)) if tn + fp else nan,
        "precision": float(tp / (tp + fp)) if tp + fp else nan,
        "f1": float(skm.f1_score(y, pred, zero_division=0.0)) if tp + fn else nan,
        "roc_auc": float(skm.roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else nan,
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


METRIC_NAMES = ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc")


def bootstrap_ci(labels, probs, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                 groups: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals for each metric; with ``groups`` whole patients are resampled (03, 'Metrics')."""
    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    keys = range(len(y)) if groups is None else list(groups)  # one key per image: its patient, or itself
    members: dict[Any, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        members[key].append(index)
    clusters = [np.array(m) for m in members.values()]  # in order of first appearance
    rng = np.random.default_rng(seed)
    samples = {name: [] for name in METRIC_NAMES}
    for _ in range(n_boot):
        idx = np.concatenate([clusters[c] for c in rng.integers(0, len(clusters), len(clusters))])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = binary_metrics(y[idx], p[idx], threshold)
        for name in METRIC_NAMES:
            samples[name].append(result[name])
    tail = (1 - level) / 2 * 100
    defined = {name: np.asarray(values, dtype=float)[~np.isnan(values)] for name, values in samples.items()}  # NaN: undefined in that draw
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) if len(v) else (float("nan"),) * 2
            for name, v in defined.items()}


def metrics_with_ci(labels, probs, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0, groups: Sequence[str] | None = None) -> dict[str, Any]:
    """``binary_metrics`` plus a ``ci`` entry of 95% bootstrap intervals, by patient when ``groups`` is given (03, 'Metrics')."""
    result = binary_metrics(labels, probs, threshold)
    result["ci"] = {k: list(v) for k, v in bootstrap_ci(labels, probs, threshold, n_boot, seed, groups=groups).items()}
    result["ci_resamples"] = "patients" if groups is not None else "images"
    return result


def calibration(labels, probs, n_bins: int = 10) -> dict[str, Any]:
    """Brier score, expected calibration error and the reliability curve of predicted probabilities (03, 'Calibration')."""
    from sklearn.calibration import calibration_curve

    y, p = np.asarray(labels).astype(int), np.asarray(probs, dtype=float)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)  # equal-width bins, as calibration_curve uses
    ece = sum((bins == b).mean() * abs(y[bins == b].mean() - p[bins == b].mean()) for b in np.unique(bins))
    fraction_positive, mean_predicted = calibration_curve(y, p, n_bins=n_bins)
    return {"brier": float(skm.brier_score_loss(y, p)), "ece": float(ece), "n": len(y),
            "mean_predicted": mean_predicted.tolist(), "fraction_positive": fraction_positive.tolist()}


def gradcam_layer(model: PneumoniaCnnModel, image_size: int, min_cells: int = 7) -> nn.Module:
    """The deepest ResNet block whose map is ``min_cells`` or more a side: layer4 at 224 px, layer2 at 64 px (03, 'Where does the model look? Grad-CAM')."""
    for stage, stride in ((model.network.layer4, 32), (model.network.layer3, 16), (model.network.layer2, 8)):
        if image_size // stride >= min_cells:
            return stage[-1]
    return model.network.layer1[-1]


def gradcam(model: PneumoniaCnnModel, images: torch.Tensor, target_class: int = 1, layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM heatmaps (N x H x W, in [0, 1]) of ``layer`` (by default ``gradcam_layer``'s), via pytorch-grad-cam (03, 'Where does the model look? Grad-CAM')."""
    from pytorch_grad_cam import GradCAM  # imported here: only this lesson needs the package
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    model.eval()
    with GradCAM(model=model, target_layers=[layer or gradcam_layer(model, images.shape[-1])]) as cam:
        return cam(input_tensor=images, targets=[BinaryClassifierOutputTarget(target_class)] * len(images))


def predict_image(image: Path | str | Image.Image, model: PneumoniaCnnModel, metadata: dict[str, Any], device: torch.device, heatmap: bool = False) -> dict[str, Any]:
    """Probability, label and optionally a Grad-CAM heatmap for one image, preprocessed as in training (03, 'One image')."""
    size = int(metadata["image_size"])
    if isinstance(image, Image.Image):
        pixels = np.asarray(to_grayscale(image).resize((size, size), Image.Resampling.BILINEAR))
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"No image at {path}: check the path.")
        pixels, _, _ = decode_resized(path, size)
    batch = to_model_input(torch.from_numpy(pixels.copy()).view(1, 1, size, size).to(device))
    model.eval()
    with torch.no_grad():
        prob = float(torch.sigmoid(model(batch).float())[0])
    threshold = float(metadata.get("threshold", 0.5))
    result = {"probability": prob, "label": decode_label(int(prob >= threshold), metadata.get("class_names", CLASS_NAMES)), "threshold": threshold}
    if heatmap:
        result["heatmap"] = gradcam(model, batch)[0]
    return result


# ----------------------------------------------------------------------------- 04_jovian_logging

def jovian_payload(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What the blog post logs to Jovian, read from a run record: hyperparameters and metrics (04, 'Logging to Jovian')."""
    hp = record.get("hyperparams", {})
    best = best_epoch(record.get("history") or []) or {}  # the epoch whose weights fit kept
    test = (record.get("test") or {}).get("chosen_threshold") or {}
    hyperparams = {"arch": hp.get("arch"), "epochs": hp.get("epochs"), "lr": hp.get("max_lr"), "scheduler": hp.get("scheduler"),
                   "weight_decay": hp.get("weight_decay"), "grad_clip": hp.get("grad_clip"), "opt": hp.get("opt")}
    metrics = {"train_loss": best.get("train_loss"), "val_loss": best.get("val_loss"), "val_accuracy": best.get("val_acc"),
               "test_accuracy": test.get("accuracy"), "test_sensitivity": test.get("sensitivity"),
               "test_specificity": test.get("specificity"), "test_roc_auc": test.get("roc_auc"), "threshold": test.get("threshold")}
    return {"hyperparams": hyperparams, "metrics": metrics}


def log_to_jovian(record: dict[str, Any], project: str, outputs: Sequence[Path] = (), commit: bool = True, timeout_s: float = 5.0, upload_timeout_s: float = 120.0) -> dict[str, Any]:
    """Log a run with the blog post's three Jovian calls, only when Jovian is configured and reachable (04, 'Logging to Jovian')."""
    payload = jovian_payload(record)
    ready, reason = jovian_transport.jovian_status(timeout_s)  # at most timeout_s seconds, whatever the server does
    print(reason)
    if not ready:
        print(f"Not logged to Jovian. This is what would have been logged:\n{json.dumps(payload, indent=1)}\n"
              "To enable: `jovian configure` (stores your API key in ~/.jovian/credentials.json), then re-run.")
        return {"logged": False, "reason": reason, "payload": payload}

    def upload() -> None:  # the blog post's three calls
        import jovian
        jovian.log_hyperparams(payload["hyperparams"])
        jovian.log_metrics(payload["metrics"])
        if commit:
            jovian.commit(project=project, environment=None, outputs=[str(p) for p in outputs])

    failure = jovian_transport.run_with_deadline(upload, upload_timeout_s)  # the client's uploads have no timeout
    if failure:  # the upload is optional: report, keep going
        message = f"Jovian upload failed ({failure}); the local record is intact."
        print(message)
        return {"logged": False, "reason": message, "payload": payload}
    return {"logged": True, "reason": reason, "payload": payload}
