"""The fixed-feature-extractor mode and the CPU default.

Taught in notebook 2, 'Precomputed features'; the cache is cxr_support.feature_cache.

Random weights throughout (no test downloads anything). "Weights available" is simulated
honestly: a real torchvision ResNet50 state dict, randomly initialised, saved to a file that
CXR_WEIGHTS_FILE (or torch hub's checkpoint folder) points at.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from helpers import SIZE
from torchvision import models

import cxr_utils as cxr
from cxr_support import devices, feature_cache
from cxr_support.config import CPU_FEATURE_DEFAULTS, QUICK_DEFAULTS, load_config
from cxr_support.dataset import list_split
from cxr_support.pixel_cache import load_pixels
from cxr_support.weights import load_imagenet_weights, weights_on_disk


def images(n: int = 6, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed))


def stored_loader(
    features: torch.Tensor, labels: torch.Tensor, batch_size: int = 4, shuffle: bool = False
):
    """The notebook's loader of stored features: a TensorDataset in a DataLoader.

    Its batches are on the CPU.
    """
    data = torch.utils.data.TensorDataset(features, labels.float())
    loader = torch.utils.data.DataLoader(
        data, batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(0)
    )
    return cxr.DeviceDataLoader(loader, torch.device("cpu"))


def backbone_state(model: cxr.PneumoniaCnnModel) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("network.fc.")}


# ----------------------------------------------------------------------------- exactness


def test_head_on_stored_features_gives_the_end_to_end_logits(model):
    """FeatureHead(backbone_features(x)) equals model(x), for a frozen model.

    This holds in eval mode and in (frozen) train mode.
    """
    model.freeze()
    x = images()
    with torch.no_grad():
        end_to_end = model.eval()(x)
        model.train()  # a frozen model keeps batch norm in eval mode, so nothing changes
        features = cxr.backbone_features(model, x)
        via_features = cxr.FeatureHead(model)(features)
    assert features.shape == (len(x), 2048)
    torch.testing.assert_close(via_features, end_to_end, rtol=1e-5, atol=1e-5)


def test_features_do_not_depend_on_the_batch(model):
    """Eval mode: an image's features are the same alone and inside a batch.

    Batch norm uses stored statistics.
    """
    x = images(5)
    together = cxr.backbone_features(model, x)
    alone = torch.cat([cxr.backbone_features(model, x[i : i + 1]) for i in range(len(x))])
    # batch sizes pick different kernels: rounding only
    torch.testing.assert_close(alone, together, rtol=1e-3, atol=1e-4)


def test_training_the_head_on_features_trains_the_model_and_nothing_else(model, tmp_path):
    """fit on stored features changes only network.fc of the model (not BN statistics).

    The checkpoint reproduces it.
    """
    model.freeze()
    x, labels = images(12), torch.tensor([0, 1, 1, 1] * 3)
    features = cxr.backbone_features(model, x)
    before_backbone, before_fc = backbone_state(model), model.network.fc.weight.detach().clone()
    head = cxr.FeatureHead(model)
    assert head.fc is model.network.fc and [p.shape for p in head.parameters()] == [(1, 2048), (1,)]
    history = cxr.fit(
        3,
        1e-2,
        head,
        stored_loader(features, labels, shuffle=True),
        stored_loader(features, labels),
        opt_func=torch.optim.Adam,
        progress=False,
    )
    assert len(history) == 3
    assert not torch.equal(model.network.fc.weight, before_fc)
    after = backbone_state(model)
    assert all(torch.equal(before_backbone[k], after[k]) for k in before_backbone)
    path = cxr.save_checkpoint(tmp_path / "head.pt", model, {"image_size": SIZE})
    loaded, _ = cxr.load_checkpoint(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), head(features), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the cache


@pytest.fixture
def train_samples(tiny_root) -> list[tuple[Path, int]]:
    return list_split(tiny_root, "train")[0]


class Counter:
    """A features_of that counts its calls (the real backbone_features still runs)."""

    def __init__(self, model):
        self.model, self.images = model, 0

    def __call__(self, batch):
        self.images += len(batch)
        return cxr.backbone_features(self.model, cxr.to_model_input(batch))


def cached(split, model, counter, cache_dir):
    return feature_cache.load_features(
        split, model, counter, torch.device("cpu"), cache_dir, batch_size=4, progress=False
    )


def test_feature_cache_is_reused_and_rebuilt_when_weights_size_or_files_change(
    train_samples, model, tmp_path
):
    """Same files, size and weights: read back.

    New weights, another image size or a changed file: recomputed.
    """
    cache_dir = tmp_path / "cache"
    split = load_pixels("train", train_samples, SIZE, cache_dir, progress=False)
    counter = Counter(model)
    first = cached(split, model, counter, cache_dir)
    assert counter.images == len(split) and first.shape == (len(split), 2048)
    assert len(list(cache_dir.glob("features-train-*.pt"))) == 1
    torch.testing.assert_close(
        first, cxr.backbone_features(model, cxr.to_model_input(split.pixels)), rtol=1e-4, atol=1e-5
    )

    torch.testing.assert_close(cached(split, model, counter, cache_dir), first, rtol=0, atol=0)
    assert counter.images == len(split), "a matching cache was recomputed"

    with torch.no_grad():
        model.network.fc.weight.add_(1.0)  # the head does not change the features: still cached
    cached(split, model, counter, cache_dir)
    assert counter.images == len(split)

    with torch.no_grad():
        model.network.layer4[0].conv1.weight.mul_(1.5)  # new backbone weights
    cached(split, model, counter, cache_dir)
    assert counter.images == 2 * len(split)
    # new batch-norm statistics are new weights too
    model.network.layer4[0].bn1.running_mean.add_(0.1)
    cached(split, model, counter, cache_dir)
    assert counter.images == 3 * len(split)

    bigger = load_pixels("train", train_samples, SIZE + 16, cache_dir, progress=False)
    assert cached(bigger, model, counter, cache_dir).shape == (len(bigger), 2048)
    assert counter.images == 3 * len(split) + len(bigger)

    path = train_samples[0][0]
    # the file changed
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    changed = load_pixels("train", train_samples, SIZE, cache_dir, progress=False)
    cached(changed, model, counter, cache_dir)
    assert counter.images == 3 * len(split) + len(bigger) + len(changed)


def test_a_damaged_feature_cache_is_recomputed(train_samples, model, tmp_path):
    """A truncated cache file is never trusted: a warning, then the features again.

    They are equal to the first ones.
    """
    cache_dir = tmp_path / "cache"
    split = load_pixels("train", train_samples, SIZE, cache_dir, progress=False)
    counter = Counter(model)
    first = cached(split, model, counter, cache_dir)
    cache_file = next(cache_dir.glob("features-train-*.pt"))
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    with pytest.warns(UserWarning, match="unreadable feature cache"):
        again = cached(split, model, counter, cache_dir)
    assert counter.images == 2 * len(split)
    torch.testing.assert_close(again, first, rtol=0, atol=0)


# -------------------------------------------------------------------- the whole mode, as CI runs it


def test_feature_mode_on_the_synthetic_sample_with_random_weights(synthetic_tiny, tmp_path):
    """Notebook 2's feature path on the synthetic sample.

    Features, fit of the head, checkpoint, predict_image, Grad-CAM.
    """
    torch.manual_seed(0)
    run_dir = tmp_path / "run"
    splits = cxr.prepare_data(synthetic_tiny, run_dir, image_size=SIZE, seed=0, progress=False)
    model = cxr.PneumoniaCnnModel(
        pos_weight=cxr.class_balance_pos_weight(splits["train"].labels), freeze_backbone=True
    )
    device = torch.device("cpu")
    features = {
        name: feature_cache.load_features(
            splits[name],
            model,
            lambda pixels: cxr.backbone_features(model, cxr.to_model_input(pixels)),
            device,
            run_dir / "cache",
            8,
            progress=False,
        )
        for name in ("train", "val")
    }
    head = cxr.FeatureHead(model)
    history = cxr.fit(
        2,
        1e-3,
        head,
        stored_loader(features["train"], splits["train"].labels, 8, shuffle=True),
        stored_loader(features["val"], splits["val"].labels, 16),
        progress=False,
        **cxr.RECIPE,
    )
    assert len(history) == 2 and all(0 <= h["val_acc"] <= 1 for h in history)
    path = cxr.save_checkpoint(
        run_dir / "checkpoints" / "features.pt",
        model,
        {"image_size": SIZE, "train_mode": "feature_extractor"},
    )
    loaded, meta = cxr.load_checkpoint(path)
    image_path = splits["test"].paths[0]
    result = cxr.predict_image(image_path, loaded, meta, device, heatmap=True)
    batch = cxr.to_model_input(splits["test"].pixels[:1])
    with torch.no_grad():
        expected = torch.sigmoid(head(cxr.backbone_features(model, batch)))[0].item()
    assert result["probability"] == pytest.approx(expected, abs=1e-5)
    assert result["heatmap"].shape == (SIZE, SIZE)


# ----------------------------------------------------------------------------- the CPU default


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> Path:
    """A torchvision ResNet50 state dict saved to a file.

    Random init: ImageNet weights cannot be downloaded here.
    """
    path = tmp_path_factory.mktemp("weights") / "resnet50-random.pth"
    torch.save(models.resnet50(weights=None).state_dict(), path)
    return path


@pytest.fixture
def cpu_only(monkeypatch):
    monkeypatch.setattr(devices, "accelerator_kind", lambda: None)


def test_a_cpu_with_a_weights_file_defaults_to_the_feature_mode_at_full_size(
    cpu_only, weights_file
):
    """No accelerator + CXR_WEIGHTS_FILE: every image at 224 px, 20 head epochs.

    The weights load and the mode resolves.
    """
    config = load_config(environ={"CXR_WEIGHTS_FILE": str(weights_file)})
    assert config.quick is False and "fixed feature extractor" in config.sources["quick"]
    assert (config.image_size, config.max_images, config.epochs) == (224, None, 20)
    assert {config.sources[name] for name in CPU_FEATURE_DEFAULTS} == {
        "CPU feature-extractor default"
    }
    state, description = load_imagenet_weights(config.pretrained, config.weights_file)
    assert state is not None and str(weights_file) in description
    assert (
        cxr.resolve_train_mode(config.train_mode, torch.device("cpu"), pretrained_loaded=True)
        == "feature_extractor"
    )


def test_torchvisions_earlier_download_counts_as_weights_on_disk(cpu_only, monkeypatch, tmp_path):
    """The file torchvision caches in torch hub's checkpoints folder switches the CPU default too.

    Unless it is damaged.
    """
    assert not weights_on_disk() and load_config(environ={}).quick is True
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    # torch.hub.get_dir() is $TORCH_HOME/hub
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    cached = tmp_path / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth"
    cached.write_bytes(b"<html>proxy error</html>")  # a damaged download does not count
    assert not weights_on_disk() and load_config(environ={}).quick is True
    torch.save(models.resnet50(weights=None).state_dict(), cached)
    assert weights_on_disk()
    assert load_config(environ={}).quick is False


@pytest.mark.parametrize(
    "extra", [{"CXR_PRETRAINED": "0"}, {"CXR_TRAIN_MODE": "finetune"}, {"CXR_QUICK": "1"}]
)
def test_offline_random_or_finetune_on_a_cpu_keeps_quick_mode(cpu_only, weights_file, extra):
    """Random weights, fine-tuning asked for, or CXR_QUICK=1: today's quick mode.

    This holds whatever the weights file.
    """
    config = load_config(environ={"CXR_WEIGHTS_FILE": str(weights_file), **extra})
    assert config.quick is True and config.image_size == QUICK_DEFAULTS["image_size"]


def test_no_weights_file_on_a_cpu_keeps_quick_mode_and_a_gpu_keeps_full_defaults(
    monkeypatch, weights_file
):
    """Offline without weights: quick mode and the banner's behaviour.

    With an accelerator nothing changes.
    """
    monkeypatch.setattr(devices, "accelerator_kind", lambda: None)
    assert (
        load_config(
            environ={"CXR_WEIGHTS_FILE": str(weights_file.with_name("missing.pth"))}
        ).quick
        is True
    )
    monkeypatch.setattr(devices, "accelerator_kind", lambda: "cuda")
    config = load_config(environ={"CXR_WEIGHTS_FILE": str(weights_file)})
    assert (
        config.quick is False
        and config.epochs == 8
        and config.sources["epochs"] == "full default"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (
            cxr.resolve_train_mode("auto", torch.device("cuda"), pretrained_loaded=True)
            == "finetune"
        )


def test_the_cached_download_that_counts_is_the_chosen_archs(cpu_only, monkeypatch, tmp_path):
    """CXR_ARCH picks which cached file counts.

    ResNet18's switches a resnet18 run to full size; ResNet50's does not.
    """
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(
        models.resnet18(weights=None).state_dict(),
        tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth",
    )
    assert weights_on_disk(arch="resnet18") and not weights_on_disk(arch="resnet50")
    # auto arch: the full-size default is ResNet50, whose file is absent
    assert load_config(environ={}).quick is True
    config = load_config(environ={"CXR_ARCH": "resnet18"})
    assert (config.quick, config.arch, config.image_size) == (False, "resnet18", 224)
