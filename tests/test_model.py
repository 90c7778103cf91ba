"""Unit tests for the model, training, weights and checkpoint helpers of cxr_utils.

The ResNet50 is built once per module (random init, no download) and deep-copied for
tests that change it; inputs are a few 32x32 images so the whole file runs in seconds
on a 2-core CPU. Nothing here touches the network or writes outside ``tmp_path``.
"""

from __future__ import annotations

import re
import socket
import warnings
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from helpers import lesson, make_images, make_split, state_equal

import cxr_utils as cxr
from cxr_support.weights import PretrainedWeightsUnavailable, load_imagenet_weights

notebook02 = lesson("02_training_on_gpu")  # helpers it keeps in its cells, not in cxr_utils

CPU = torch.device("cpu")

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def fail_download(monkeypatch):
    """Make torchvision's weight download fail like an offline machine.

    Record the socket timeout it ran under.
    """
    from torchvision.models import ResNet50_Weights

    seen_timeouts = []

    def offline(self, *args, **kwargs):
        seen_timeouts.append(socket.getdefaulttimeout())
        raise URLError("[Errno -3] Temporary failure in name resolution (test)")

    monkeypatch.setattr(ResNet50_Weights, "get_state_dict", offline)
    return seen_timeouts



# ----------------------------------------------------------------------------- accuracy


def test_accuracy_counts_correct_over_all_samples():
    """accuracy() is (#correct / #samples) with predictions = probability >= 0.5."""
    probs = torch.tensor([0.9, 0.2, 0.6, 0.4])
    labels = torch.tensor([1, 0, 0, 0])
    assert cxr.accuracy(probs, labels).item() == pytest.approx(0.75)


def test_accuracy_honours_threshold():
    """A different threshold changes the predictions.

    A probability equal to the threshold counts as positive.
    """
    probs = torch.tensor([0.9, 0.2, 0.6, 0.4])
    labels = torch.tensor([1, 0, 0, 0])
    assert cxr.accuracy(probs, labels, threshold=0.7).item() == pytest.approx(1.0)
    assert cxr.accuracy(probs, labels, threshold=0.1).item() == pytest.approx(0.25)
    assert cxr.accuracy(torch.tensor([0.3]), torch.tensor([1]), threshold=0.3).item() == 1.0


def test_per_batch_mean_accuracy_differs_from_exact_accuracy_with_small_last_batch():
    """The blog post's mean of batch accuracies is wrong when the last batch is smaller.

    The values are computed by hand.
    """
    correct = [True, True, False, True, False]  # 3 of 5 correct -> exact accuracy 0.6
    # batches of 4: [T, T, F, T] -> 0.75 and [F] -> 0.0, so the mean of batch means is 0.375
    assert notebook02.per_batch_mean_accuracy(correct, batch_size=4) == pytest.approx(0.375)
    exact = cxr.accuracy(torch.tensor(correct, dtype=torch.float), torch.ones(5)).item()
    assert exact == pytest.approx(0.6)
    # with equal batch sizes both ways agree
    assert notebook02.per_batch_mean_accuracy(correct[:4], batch_size=2) == pytest.approx(0.75)


# ----------------------------------------------------------------------------- device helpers


def test_to_device_moves_tensors_in_lists_and_tuples():
    """to_device() moves a tensor and every tensor inside (nested) lists and tuples.

    Checked with the meta device.
    """
    meta = torch.device("meta")
    assert cxr.to_device(torch.ones(2), meta).device.type == "meta"
    moved = cxr.to_device((torch.ones(2), [torch.zeros(3)]), meta)
    assert len(moved) == 2
    assert moved[0].device.type == "meta" and moved[0].shape == (2,)
    assert moved[1][0].device.type == "meta" and moved[1][0].shape == (3,)
    on_cpu = cxr.to_device([torch.arange(3)], CPU)
    assert torch.equal(on_cpu[0], torch.arange(3))


def test_device_data_loader_yields_batches_on_device_and_has_wrapped_len():
    """DeviceDataLoader keeps the wrapped loader's batches and length.

    Every tensor is on the given device.
    """
    dataset = torch.utils.data.TensorDataset(
        torch.arange(10.0).view(5, 2), torch.tensor([0, 1, 0, 1, 1])
    )
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    wrapped = cxr.DeviceDataLoader(loader, CPU)
    assert len(wrapped) == len(loader) == 3
    batches = list(wrapped)
    assert len(batches) == 3
    assert all(x.device == CPU and y.device == CPU for x, y in batches)
    assert torch.equal(torch.cat([y for _, y in batches]), torch.tensor([0, 1, 0, 1, 1]))
    assert all(
        x.device.type == "meta" for x, _ in cxr.DeviceDataLoader(loader, torch.device("meta"))
    )


# ------------------------------------------------- first layer: grey input, normalisation folded in

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="module")
def rgb_resnet50() -> nn.Module:
    """A randomly initialised torchvision ResNet50 as the ImageNet file holds it (3-channel conv1).

    Do not modify it.
    """
    from torchvision import models

    torch.manual_seed(3)
    return models.resnet50(weights=None).eval()


def grey_to_normalised_rgb(x: torch.Tensor, mean, std) -> torch.Tensor:
    """What the backbone saw before folding.

    Grey (N, 1, H, W) repeated to 3 channels, then (x - mean) / std.
    """
    return (x.expand(-1, 3, -1, -1) - torch.tensor(mean).view(1, 3, 1, 1)) / (
        torch.tensor(std).view(1, 3, 1, 1)
    )


def test_fold_rgb_conv_equals_grey_to_rgb_then_normalise_then_conv(rgb_resnet50):
    """The folded 1-channel conv equals conv((x repeated to RGB - mean) / std).

    This holds away from the padded border.
    """
    conv = rgb_resnet50.conv1
    original_weight = conv.weight.detach().clone()
    folded = cxr.fold_rgb_conv(conv, cxr.IMAGENET_MEAN, cxr.IMAGENET_STD)
    assert isinstance(folded, nn.Conv2d)
    assert (folded.in_channels, folded.out_channels, folded.kernel_size) == (1, 64, (7, 7))
    assert (folded.stride, folded.padding) == ((2, 2), (3, 3))
    assert folded.bias is not None and folded.bias.shape == (64,)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = folded(x)
        expected = conv(grey_to_normalised_rgb(x, cxr.IMAGENET_MEAN, cxr.IMAGENET_STD))
    assert got.shape == expected.shape == (2, 64, 16, 16)
    torch.testing.assert_close(got[..., 3:-3, 3:-3], expected[..., 3:-3, 3:-3], atol=1e-4, rtol=0)
    assert torch.equal(conv.weight, original_weight)  # folding leaves the RGB conv alone


def test_fold_rgb_conv_is_exact_everywhere_with_black_padding(rgb_resnet50):
    """Only the padding differs.

    Against the grey image padded with black (0) before normalising, it is exact everywhere.
    """
    conv = rgb_resnet50.conv1
    folded = cxr.fold_rgb_conv(conv, cxr.IMAGENET_MEAN, cxr.IMAGENET_STD)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = folded(x)
        padded = grey_to_normalised_rgb(
            F.pad(x, (3, 3, 3, 3)), cxr.IMAGENET_MEAN, cxr.IMAGENET_STD
        )
        expected = F.conv2d(padded, conv.weight, stride=2)
        zero_padded_in_rgb = conv(grey_to_normalised_rgb(x, cxr.IMAGENET_MEAN, cxr.IMAGENET_STD))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    # the border is where they differ
    assert not torch.allclose(got[..., 0, :], zero_padded_in_rgb[..., 0, :], atol=1e-2)


def test_fold_rgb_conv_uses_the_given_statistics(rgb_resnet50):
    """Folding with CIFAR statistics gives another layer than with ImageNet's.

    That layer equals its own normalise-then-conv.
    """
    conv = rgb_resnet50.conv1
    imagenet = cxr.fold_rgb_conv(conv, cxr.IMAGENET_MEAN, cxr.IMAGENET_STD)
    cifar = cxr.fold_rgb_conv(conv, CIFAR_MEAN, CIFAR_STD)
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        got_cifar, got_imagenet = cifar(x), imagenet(x)
        expected_cifar = conv(grey_to_normalised_rgb(x, CIFAR_MEAN, CIFAR_STD))
    assert not torch.allclose(cifar.weight, imagenet.weight, atol=1e-3)
    assert not torch.allclose(cifar.bias, imagenet.bias, atol=1e-3)
    assert not torch.allclose(got_cifar, got_imagenet, atol=1e-2)
    torch.testing.assert_close(
        got_cifar[..., 3:-3, 3:-3], expected_cifar[..., 3:-3, 3:-3], atol=1e-4, rtol=0
    )


@pytest.mark.parametrize(
    ("mean", "std"), [(None, None), (CIFAR_MEAN, CIFAR_STD)], ids=["imagenet-default", "cifar"]
)
def test_model_conv1_is_the_folded_conv1_of_the_given_weights(rgb_resnet50, mean, std):
    """PneumoniaCnnModel(state_dict) has conv1 = fold_rgb_conv(that state dict's conv1, mean, std).

    So the weights are used.
    """
    stats = {} if mean is None else {"mean": mean, "std": std}
    torch.manual_seed(4)  # the model's own random init must be overwritten
    model = cxr.PneumoniaCnnModel(state_dict=rgb_resnet50.state_dict(), **stats)
    expected = cxr.fold_rgb_conv(
        rgb_resnet50.conv1, mean or cxr.IMAGENET_MEAN, std or cxr.IMAGENET_STD
    )
    assert model.network.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.equal(model.network.conv1.weight, expected.weight)
    assert torch.equal(model.network.conv1.bias, expected.bias)
    random_init = cxr.PneumoniaCnnModel(**stats)
    assert not torch.allclose(random_init.network.conv1.weight, expected.weight, atol=1e-3)


# ----------------------------------------------------------------- model: forward, loss, validation


def test_forward_returns_one_logit_per_image(base_model):
    """forward() gives logits of shape (N,), also for a single image (not a 0-d tensor)."""
    with torch.no_grad():
        assert base_model(make_images(3)).shape == (3,)
        assert base_model(make_images(1)).shape == (1,)


def test_validation_epoch_end_combines_batches_exactly(base_model):
    """Loss and accuracy over batches of 3 and 1 equal those over all 4 samples.

    That is BCEWithLogits and exact accuracy.
    """
    images, targets = make_images(4, seed=1), torch.tensor([1.0, 0.0, 1.0, 1.0])
    with torch.no_grad():
        outputs = [
            base_model.validation_step((images[:3], targets[:3])),
            base_model.validation_step((images[3:], targets[3:])),
        ]
        result = base_model.validation_epoch_end(outputs)
        logits = base_model(images)
    expected_loss = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=torch.tensor(2.0)
    ).item()
    expected_acc = cxr.accuracy(torch.sigmoid(logits), targets).item()
    assert result["val_loss"] == pytest.approx(expected_loss, abs=1e-5)
    assert result["val_acc"] == pytest.approx(expected_acc, abs=1e-6)
    # the blog post's mean of the two batch means would weigh the single image like three
    batch_means = [o["loss_sum"].item() / o["count"].item() for o in outputs]
    assert np.mean(batch_means) != pytest.approx(expected_loss, abs=1e-4)


def test_pos_weight_is_used_in_the_loss(model):
    """The loss follows F.binary_cross_entropy_with_logits with the model's pos_weight.

    Another weight gives another loss.
    """
    images, targets = make_images(4, seed=2), torch.tensor([1.0, 0.0, 1.0, 0.0])
    model.eval()
    with torch.no_grad():
        logits = model(images)
        loss_w2 = model.training_step((images, targets)).item()
        model.pos_weight = torch.tensor(5.0)
        loss_w5 = model.training_step((images, targets)).item()
    assert loss_w2 == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(2.0)).item(),
        abs=1e-6,
    )
    assert loss_w5 == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(5.0)).item(),
        abs=1e-6,
    )
    assert loss_w5 != pytest.approx(loss_w2, abs=1e-4)


def test_freeze_trains_only_the_head_and_keeps_batchnorm_in_eval(model):
    """freeze(): only fc params need grad, and BatchNorm stays in eval after train().

    Its statistics stay fixed.
    """
    model.freeze()
    model.train()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"network.fc.weight", "network.fc.bias"}
    batchnorms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert batchnorms and not any(bn.training for bn in batchnorms)
    assert model.training and model.network.fc.training
    running_mean = model.network.bn1.running_mean.clone()
    model.training_step((make_images(4), torch.tensor([1.0, 0.0, 1.0, 0.0]))).backward()
    assert torch.equal(model.network.bn1.running_mean, running_mean)
    assert model.network.conv1.weight.grad is None and model.network.fc.weight.grad is not None


def test_freeze_false_restores_full_training(model):
    """freeze(False) makes every parameter trainable again.

    train() then puts BatchNorm back in training mode.
    """
    model.freeze()
    model.freeze(False)
    model.train()
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_loss_decreases_on_a_small_fixed_batch(model):
    """A few Adam steps on 4 fixed 32x32 images lower the training loss (the model can learn)."""
    torch.manual_seed(0)
    images, targets = make_images(4, seed=3), torch.tensor([1.0, 0.0, 1.0, 0.0])
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = model.training_step((images, targets))
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        last = model.training_step((images, targets)).item()
    assert np.isfinite(losses).all()
    assert last < 0.5 * losses[0], f"loss did not fall: {losses} -> {last}"


# ----------------------------------------------------------------------------- fit


@pytest.fixture
def tiny_loaders():
    """Train loader: 10 images in 5 batches of 2; validation loader: 3 images in batches of 2."""
    train = cxr.CachedBatchLoader(make_split([0, 1] * 5, seed=10), batch_size=2, device=CPU)
    val = cxr.CachedBatchLoader(make_split([1, 0, 1], seed=11), batch_size=2, device=CPU)
    return train, val


def test_fit_returns_history_with_one_cycle_learning_rates(model, tiny_loaders):
    """fit() returns one dict per epoch with losses, per-step lrs and timings.

    The one-cycle lrs rise then fall.
    """
    train, val = tiny_loaders
    max_lr = 1e-3
    history = cxr.fit(2, max_lr, model, train, val, opt_func=torch.optim.Adam, progress=False)
    assert len(history) == 2
    for h in history:
        assert {"train_loss", "val_loss", "val_acc", "lrs", "seconds", "images_per_s"} <= set(h)
        assert len(h["lrs"]) == len(train) == 5
        assert np.isfinite(h["train_loss"]) and np.isfinite(h["val_loss"])
        assert 0.0 <= h["val_acc"] <= 1.0
        assert h["seconds"] > 0 and h["images_per_s"] > 0
        # 10 training images per epoch; seconds are rounded to 0.01 and images_per_s to 0.1, so
        # a fast epoch (a few hundredths of a second) bounds the product only that closely
        rounding = 0.005 * h["images_per_s"] + 0.05 * h["seconds"]
        assert h["images_per_s"] * h["seconds"] == pytest.approx(10, rel=0.15, abs=rounding)
    lrs = history[0]["lrs"] + history[1]["lrs"]
    peak = int(np.argmax(lrs))
    assert 0 < peak < len(lrs) - 1
    assert all(a < b for a, b in zip(lrs[:peak], lrs[1 : peak + 1])), lrs
    assert all(a > b for a, b in zip(lrs[peak:-1], lrs[peak + 1 :])), lrs
    assert lrs[0] == pytest.approx(max_lr / 25)  # OneCycleLR starts at max_lr / div_factor
    assert max(lrs) <= max_lr + 1e-12 and lrs[-1] < lrs[0]


@pytest.mark.parametrize("keep_best", [True, False])
def test_fit_keep_best_restores_weights_of_lowest_val_loss_epoch(
    model, tiny_loaders, monkeypatch, keep_best
):
    """With keep_best the final weights are those of the epoch with the lowest val_loss.

    That is epoch 0 here; without keep_best they are the last epoch's.
    """
    real_evaluate = cxr.evaluate
    scripted_losses = iter([0.5, 0.9])
    snapshots = []

    def scripted_evaluate(m, loader, precision="auto"):
        result = real_evaluate(m, loader, precision)
        snapshots.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        result["val_loss"] = next(scripted_losses)  # make epoch 0 the best one
        return result

    monkeypatch.setattr(cxr, "evaluate", scripted_evaluate)
    train, val = tiny_loaders
    history = cxr.fit(
        2, 1e-3, model, train, val, opt_func=torch.optim.Adam, keep_best=keep_best, progress=False
    )
    assert [h["val_loss"] for h in history] == [0.5, 0.9]
    assert not state_equal(snapshots[0], snapshots[1]), "training did not change the weights"
    final = model.state_dict()
    if keep_best:
        assert state_equal(final, snapshots[0])
    else:
        assert state_equal(final, snapshots[1])


def test_fit_keep_best_then_evaluate_matches_best_history(model, tiny_loaders):
    """After fit(keep_best=True), evaluate() on the validation loader gives the best val_loss.

    It reproduces the lowest val_loss of the history.
    """
    train, val = tiny_loaders
    history = cxr.fit(2, 1e-3, model, train, val, opt_func=torch.optim.Adam, progress=False)
    best = min(h["val_loss"] for h in history)
    assert cxr.evaluate(model, val)["val_loss"] == pytest.approx(best, abs=1e-5)


# ----------------------------------------------------------------------------- ImageNet weights


def test_load_imagenet_weights_off(fail_download):
    """pretrained='0' returns no weights, says random init, and does not even try to download."""
    state, description = load_imagenet_weights("0")
    assert state is None
    assert "random init" in description
    assert fail_download == []


def test_load_imagenet_weights_auto_offline_falls_back_loudly(fail_download, capsys):
    """pretrained='auto' offline: (None, description), a loud banner naming CXR_WEIGHTS_FILE.

    Also a warning, and the socket timeout restored.
    """
    before = socket.getdefaulttimeout()
    with pytest.warns(UserWarning, match="ImageNet weights unavailable"):
        state, description = load_imagenet_weights("auto", timeout_s=3.0)
    out = capsys.readouterr().out
    assert state is None
    assert "random init" in description and "URLError" in description
    assert (
        "NO PRETRAINED WEIGHTS" in out and "CXR_WEIGHTS_FILE" in out and "CXR_PRETRAINED=1" in out
    )
    assert fail_download == [3.0]  # the download ran under the given socket timeout
    assert socket.getdefaulttimeout() == before


def test_load_imagenet_weights_required_but_offline_raises(fail_download):
    """pretrained='1' offline raises PretrainedWeightsUnavailable naming the fix.

    The fix is CXR_WEIGHTS_FILE and the URL.
    """
    from torchvision.models import ResNet50_Weights

    with pytest.raises(PretrainedWeightsUnavailable) as info:
        load_imagenet_weights("1")
    message = str(info.value)
    assert "CXR_PRETRAINED=1" in message and "CXR_WEIGHTS_FILE" in message
    assert ResNet50_Weights.DEFAULT.url in message


def test_load_imagenet_weights_missing_file_raises_with_path(tmp_path, fail_download):
    """A weights_file that does not exist raises PretrainedWeightsUnavailable naming the path."""
    missing = tmp_path / "resnet50-missing.pth"
    with pytest.raises(PretrainedWeightsUnavailable, match="resnet50-missing.pth"):
        load_imagenet_weights("auto", weights_file=missing)
    assert fail_download == []


def not_weights_file_error(path: Path, cause: str) -> str:
    """The regex of the PretrainedWeightsUnavailable message for a wrong CXR_WEIGHTS_FILE.

    That is a file that is not ResNet50 weights.
    """
    return re.escape(f"CXR_WEIGHTS_FILE={path} is not torchvision's resnet50 weights file ({cause}")


def test_load_imagenet_weights_from_valid_file(tmp_path, fail_download):
    """A weights_file holding a torchvision ResNet50 state dict is loaded and returned unchanged.

    It fits PneumoniaCnnModel.
    """
    from torchvision import models

    torch.manual_seed(1)
    # 3-channel conv1, 1000-class head, like the ImageNet file
    state = models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.pth"
    torch.save(state, path)
    loaded, description = load_imagenet_weights("auto", weights_file=path)
    assert str(path) in description
    assert state_equal(loaded, state)
    assert fail_download == []
    torch.manual_seed(2)
    model = cxr.PneumoniaCnnModel(state_dict=loaded)
    # conv1 is the file's RGB conv1 folded to one channel:
    # weight sum_c w_c / std_c, bias -sum_c w_c * mean_c / std_c
    mean, std = (
        torch.tensor(cxr.IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(cxr.IMAGENET_STD).view(1, 3, 1, 1),
    )
    assert model.network.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(
        model.network.conv1.weight.detach(), (state["conv1.weight"] / std).sum(1, keepdim=True)
    )
    torch.testing.assert_close(
        model.network.conv1.bias.detach(), -(state["conv1.weight"] * mean / std).sum((1, 2, 3))
    )
    # everything else: unchanged
    backbone = {k: v for k, v in state.items() if not k.startswith(("conv1.", "fc."))}
    assert state_equal(
        {k: v for k, v in model.network.state_dict().items() if k in backbone}, backbone
    )
    assert model.network.fc.weight.shape == (1, 2048)


@pytest.mark.parametrize("wrong", ["our-1logit-gray-network", "our-model-state-dict", "resnet18"])
def test_load_imagenet_weights_wrong_state_dict_raises(tmp_path, base_model, wrong):
    """A state dict that is not a torchvision ResNet50 raises PretrainedWeightsUnavailable.

    The error names the file and the cause.
    """
    from torchvision import models

    state = {
        # ResNet50 keys, 1-channel conv1, 1-logit fc
        "our-1logit-gray-network": lambda: base_model.network.state_dict(),
        "our-model-state-dict": lambda: base_model.state_dict(),  # keys prefixed 'network.'
        "resnet18": lambda: models.resnet18(weights=None).state_dict(),
    }[wrong]()
    path = tmp_path / "not-imagenet.pth"
    torch.save(state, path)
    expected = not_weights_file_error(path, "RuntimeError: Error(s) in loading state_dict")
    with pytest.raises(PretrainedWeightsUnavailable, match=expected):
        load_imagenet_weights("1", weights_file=path)


def test_load_imagenet_weights_damaged_file_raises_clear_error(tmp_path):
    """A damaged weights file raises PretrainedWeightsUnavailable naming it.

    For example an HTML error page saved as .pth.
    """
    path = tmp_path / "resnet50-download.pth"
    path.write_bytes(b"<html><body>403 Forbidden</body></html>")
    with pytest.raises(
        PretrainedWeightsUnavailable, match=not_weights_file_error(path, "")
    ) as info:
        load_imagenet_weights("auto", weights_file=path)
    assert "Download it again from https://" in str(info.value)


# ------------------------------------------------------------------------ train mode, class balance


@pytest.mark.parametrize(
    ("mode", "device", "pretrained", "expected"),
    [
        ("auto", "cpu", True, "feature_extractor"),
        ("auto", "cuda", True, "finetune"),
        ("auto", "cpu", False, "finetune"),
        ("auto", "cuda", False, "finetune"),
        ("finetune", "cpu", True, "finetune"),
        ("feature_extractor", "cuda", True, "feature_extractor"),
    ],
)
def test_resolve_train_mode(mode, device, pretrained, expected):
    """'auto' freezes only a pretrained backbone on the CPU; explicit modes are kept as given."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cxr.resolve_train_mode(mode, torch.device(device), pretrained) == expected


def test_resolve_train_mode_warns_when_freezing_a_random_backbone():
    """An explicit feature_extractor without pretrained weights is kept but warns."""
    with pytest.warns(UserWarning, match="randomly initialised backbone"):
        assert cxr.resolve_train_mode("feature_extractor", CPU, False) == "feature_extractor"


def test_class_balance_pos_weight_is_negatives_over_positives():
    """pos_weight = #NORMAL / #PNEUMONIA, for long and float labels.

    No division by zero without positives.
    """
    assert cxr.class_balance_pos_weight(torch.tensor([0, 0, 0, 1])) == pytest.approx(3.0)
    assert cxr.class_balance_pos_weight(
        torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    ) == pytest.approx(0.75)
    assert cxr.class_balance_pos_weight(torch.tensor([0, 0])) == pytest.approx(2.0)




def test_load_imagenet_weights_of_another_resnet(tmp_path, fail_download):
    """With arch='resnet18' a ResNet18 file loads and builds the model.

    A ResNet50 file is refused, naming resnet18 and its URL.
    """
    from torchvision import models

    path18, path50 = tmp_path / "resnet18.pth", tmp_path / "resnet50.pth"
    torch.save(models.resnet18(weights=None).state_dict(), path18)
    torch.save(models.resnet50(weights=None).state_dict(), path50)
    loaded, description = load_imagenet_weights("auto", weights_file=path18, arch="resnet18")
    assert (
        str(path18) in description
        and cxr.PneumoniaCnnModel(loaded, arch="resnet18").network.fc.in_features == 512
    )
    with pytest.raises(
        PretrainedWeightsUnavailable,
        match=r"not torchvision's resnet18 weights file "
        r".*CXR_ARCH=resnet18.*resnet18-f37072fd\.pth",
    ):
        load_imagenet_weights("auto", weights_file=path50, arch="resnet18")
    assert fail_download == []
