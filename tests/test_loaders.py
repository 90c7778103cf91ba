"""Unit tests for transforms, on-device augmentation and the batch loaders (notebooks 1 and 2)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from helpers import (
    SIZE,
    index_of_pixels,
    lesson,
    noise_image,
    write_jpeg,
)
from PIL import Image

import cxr_utils as cxr
from cxr_support.images import decode_resized, read_xray, resize_square
from cxr_support.pixel_cache import XraySplit, load_pixels

notebook02 = lesson("02_training_on_gpu")  # helpers it keeps in its cells, not in cxr_utils

# ------------------------------------------------------------- augmentation, normalisation, loaders


def _left_bright_batch(n: int = 8, size: int = 32) -> torch.Tensor:
    images = torch.full((n, 1, size, size), 0.2)
    images[..., : size // 2] = 0.8
    return images


def test_augment_batch_keeps_shape_and_range():
    """Output has the input's shape and dtype, stays in [0, 1], and really changes the images."""
    images = torch.rand(6, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    out = cxr.augment_batch(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, images, atol=0.05)


def test_augment_batch_is_reproducible_with_a_generator():
    """The same generator seed gives the same augmentation."""
    images = _left_bright_batch()
    first = cxr.augment_batch(images, torch.Generator().manual_seed(3))
    assert torch.equal(first, cxr.augment_batch(images, torch.Generator().manual_seed(3)))


# A chest film is never upside down or mirrored, so augmentation must never flip (AUGMENTATION,
# issue 20). The image below is bright in its top third and on its left third; a rotation of at
# most 7 degrees, a 5 % shift, a 10 % zoom and brightness/contrast factors within 0.8-1.2 cannot
# swap top and bottom or left and right, while a flip swaps them in about half the draws.
FLIP_SEEDS = range(40)  # draws per check; a flip with p=0.5 passes all of them with chance 2**-40


def _oriented_pixels(size: int = 48) -> np.ndarray:
    """uint8 (size, size): 30, plus 120 in the top third and 80 in the left third."""
    third = size // 3
    pixels = np.full((size, size), 30, dtype=np.uint8)
    pixels[:third] += 120
    pixels[:, :third] += 80
    return pixels


def _orientation_margins(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(top minus bottom, left minus right) mean brightness of each image of (..., H, W).

    The bands compared are the second and seventh eighths, away from the borders that a shift
    or a zoom out fills with black.
    """
    images = images.reshape(-1, *images.shape[-2:])
    height, width = images.shape[-2:]
    top = images[:, height // 8 : 3 * height // 8].mean(dim=(1, 2))
    bottom = images[:, 5 * height // 8 : 7 * height // 8].mean(dim=(1, 2))
    left = images[:, :, width // 8 : 3 * width // 8].mean(dim=(1, 2))
    right = images[:, :, 5 * width // 8 : 7 * width // 8].mean(dim=(1, 2))
    return top - bottom, left - right


def _assert_upright(images: torch.Tensor) -> None:
    """Every image keeps its top clearly brighter than its bottom and its left than its right."""
    vertical, horizontal = _orientation_margins(images)
    assert bool((vertical > 0.05).all()), f"upside down (top - bottom): {vertical.min():.3f}"
    assert bool((horizontal > 0.05).all()), f"mirrored (left - right): {horizontal.min():.3f}"


def _oriented_batch(n: int, size: int = SIZE) -> torch.Tensor:
    pixels = torch.from_numpy(_oriented_pixels(size))
    return cxr.to_model_input(pixels.expand(n, 1, size, size).contiguous())


def test_oriented_image_margins_show_flips():
    """The orientation check itself: the unaugmented image passes, each of its flips fails."""
    images = _oriented_batch(1)
    vertical, horizontal = _orientation_margins(images)
    assert float(vertical) > 0.3 and float(horizontal) > 0.2
    _assert_upright(images)
    for flipped in (images.flip(-2), images.flip(-1)):
        with pytest.raises(AssertionError):
            _assert_upright(flipped)


def _flip_classes(transform) -> list[str]:
    """Names of the flip steps in a torchvision transform, searching nested Compose/RandomApply."""
    found = []
    for step in getattr(transform, "transforms", []):
        flip = isinstance(step, (T.RandomHorizontalFlip, T.RandomVerticalFlip))
        if flip or "flip" in type(step).__name__.lower():
            found.append(type(step).__name__)
        found += _flip_classes(step)
    return found


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_transforms_contain_no_flip(train):
    """make_transforms has no RandomHorizontalFlip, RandomVerticalFlip or other flip step."""
    transform = cxr.make_transforms(SIZE, train=train)
    assert _flip_classes(transform) == []
    # the steps searched are the real ones: the cache's resize, and the batch augmentation
    assert transform.transforms[0].func is resize_square
    assert (cxr.augment_batch in transform.transforms) == train


def test_train_transforms_never_flip(tmp_path):
    """A file read through XrayFileDataset with the training transforms is never flipped.

    Each draw (its own torch.manual_seed) keeps the top brighter than the bottom and the left
    brighter than the right.
    """
    path = tmp_path / "IM-0001-0001.png"
    Image.fromarray(_oriented_pixels()).save(path)
    dataset = cxr.XrayFileDataset([path], [0], cxr.make_transforms(SIZE, train=True))
    draws = []
    for seed in FLIP_SEEDS:
        torch.manual_seed(seed)
        draws.append(dataset[0][0])
    images = torch.stack(draws)
    assert images.shape == (len(FLIP_SEEDS), 1, SIZE, SIZE)
    # the draws really are random
    assert len({tuple(image.flatten().tolist()) for image in images}) > len(FLIP_SEEDS) // 2
    _assert_upright(images)


def test_augment_batch_never_flips():
    """augment_batch never turns an image upside down or mirrors it, for any generator seed."""
    images = _oriented_batch(32)
    for seed in range(8):
        out = cxr.augment_batch(images, torch.Generator().manual_seed(seed))
        assert not torch.allclose(out, images, atol=0.05)  # it did augment
        _assert_upright(out)


def test_cached_batch_loader_augmentation_never_flips():
    """The batches CachedBatchLoader augments keep every image upright and unmirrored."""
    n = 24
    pixels = torch.from_numpy(_oriented_pixels(SIZE)).expand(n, 1, SIZE, SIZE).contiguous()
    paths = [Path(f"img{i}.png") for i in range(n)]
    labels = torch.zeros(n, dtype=torch.long)
    split = XraySplit("oriented", pixels, labels, paths, [(SIZE, SIZE)] * n, ["L"] * n, [])
    loader = cxr.CachedBatchLoader(
        split, 8, torch.device("cpu"), shuffle=True, augment=True, seed=5
    )
    for _ in range(3):
        images = torch.cat([images for images, _ in loader])
        assert images.shape == (n, 1, SIZE, SIZE)
        _assert_upright(images)


def test_to_model_input_keeps_one_channel_and_shape():
    """uint8 (N, 1, H, W) pixels become float32 of the same shape.

    One channel, no ImageNet normalisation.
    """
    pixels = torch.full((2, 1, 4, 5), 128, dtype=torch.uint8)
    out = cxr.to_model_input(pixels)
    assert out.shape == (2, 1, 4, 5) and out.dtype == torch.float32
    assert torch.equal(out, torch.full((2, 1, 4, 5), 128 / 255))  # not (128/255 - mean) / std
    # the input is not modified
    assert torch.equal(pixels, torch.full((2, 1, 4, 5), 128, dtype=torch.uint8))


def test_to_model_input_scales_uint8_to_unit_range():
    """Every uint8 value v becomes exactly v / 255: 0 is 0.0 and 255 is 1.0."""
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    out = cxr.to_model_input(pixels)
    assert float(out[0, 0, 0, 0]) == 0.0 and float(out[0, 0, 15, 15]) == 1.0
    torch.testing.assert_close(
        out, torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16) / 255, atol=0, rtol=0
    )


def _numbered_split(n: int = 10, size: int = 8) -> XraySplit:
    """An in-memory split whose sample i is filled with the value 10 * i.

    So batches reveal which samples they hold.
    """
    pixels = torch.stack([torch.full((1, size, size), 10 * i, dtype=torch.uint8) for i in range(n)])
    labels = torch.tensor([i % 2 for i in range(n)])
    paths = [Path(f"img{i}.jpeg") for i in range(n)]
    return XraySplit("numbered", pixels, labels, paths, [(size, size)] * n, ["L"] * n, [])


@pytest.mark.parametrize(
    ("batch_size", "drop_last", "expected_len"),
    [(3, False, 4), (3, True, 3), (5, False, 2), (16, False, 1)],
)
def test_cached_batch_loader_len(batch_size, drop_last, expected_len):
    """len() is the number of batches, with or without the last partial one."""
    loader = cxr.CachedBatchLoader(
        _numbered_split(10), batch_size, torch.device("cpu"), drop_last=drop_last
    )
    assert len(loader) == expected_len
    assert sum(1 for _ in loader) == expected_len


def test_cached_batch_loader_serves_every_sample_once_per_epoch():
    """With shuffling, each epoch yields every sample exactly once, in a new order.

    Each comes with its own label.
    """
    split = _numbered_split(10)
    loader = cxr.CachedBatchLoader(split, 3, torch.device("cpu"), shuffle=True, seed=0)
    orders = []
    for _ in range(3):
        seen = []
        batches = list(loader)
        assert [len(labels) for _, labels in batches] == [3, 3, 3, 1]
        for images, labels in batches:
            assert images.shape == (len(labels), 1, 8, 8) and images.dtype == torch.float32
            assert labels.dtype == torch.float32
            ids = [v // 10 for v in index_of_pixels(images)]
            assert labels.tolist() == [float(i % 2) for i in ids]
            assert torch.equal(images, split.pixels[ids].float() / 255)  # [0, 1], not normalised
            seen += ids
        assert sorted(seen) == list(range(10))
        orders.append(seen)
    assert any(order != list(range(10)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


def test_cached_batch_loader_without_shuffle_keeps_order_and_augments_in_range():
    """Without shuffling the order is the split's and images are pixels / 255.

    Augmented images stay in [0, 1].
    """
    split = _numbered_split(10)
    plain = cxr.CachedBatchLoader(split, 4, torch.device("cpu"))
    assert [v // 10 for images, _ in plain for v in index_of_pixels(images)] == list(range(10))
    plain_images = torch.cat([images for images, _ in plain])
    assert torch.equal(plain_images, split.pixels.float() / 255)
    augmented = cxr.CachedBatchLoader(split, 4, torch.device("cpu"), augment=True, seed=1)
    augmented_images = []
    for images, labels in augmented:
        assert (
            images.shape[1:] == (1, 8, 8)
            and images.dtype == torch.float32
            and labels.dtype == torch.float32
        )
        assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
        augmented_images.append(images)
    assert not torch.equal(torch.cat(augmented_images), plain_images)  # augmentation really ran


@pytest.mark.parametrize(
    ("fmt", "size", "draft"),
    [("PNG", (100, 80), None), ("JPEG", (50, 40), None), ("JPEG", (400, 300), SIZE)],
    ids=["png", "small-jpeg", "large-jpeg-drafted"],
)
def test_file_dataset_matches_decode_resized(tmp_path, fmt, size, draft):
    """XrayFileDataset with the eval transforms gives to_model_input(decode_resized(...)).

    One channel, bit for bit: both resize with resize_square.
    """
    path = tmp_path / f"IM-0001-0001.{fmt.lower()}"
    noise_image(7, size).save(path, format=fmt)
    dataset = cxr.XrayFileDataset(
        [path], [1], cxr.make_transforms(SIZE, train=False), draft_size=draft
    )
    assert len(dataset) == 1
    image, label = dataset[0]
    pixels, _, _ = decode_resized(path, SIZE)
    expected = cxr.to_model_input(torch.from_numpy(pixels).view(1, 1, SIZE, SIZE))[0]
    assert label == 1 and image.shape == (1, SIZE, SIZE) and image.dtype == torch.float32
    assert torch.equal(image, expected)


def test_train_transforms_augment_but_keep_shape(tmp_path):
    """make_transforms(train=True) gives the eval shape (1 channel, [0, 1]).

    But different pixels (random augmentation).
    """
    path = tmp_path / "IM-0001-0001.png"
    noise_image(3, (60, 50)).save(path)
    image = read_xray(path)
    torch.manual_seed(0)
    train = cxr.make_transforms(SIZE, train=True)(image)
    evaluation = cxr.make_transforms(SIZE, train=False)(image)
    assert train.shape == evaluation.shape == (1, SIZE, SIZE)
    assert train.dtype == evaluation.dtype == torch.float32
    for image_tensor in (train, evaluation):
        assert float(image_tensor.min()) >= 0.0 and float(image_tensor.max()) <= 1.0
    assert not torch.allclose(train, evaluation, atol=0.05)


def test_classic_loader_matches_cached_loader_for_large_jpegs(tmp_path):
    """make_classic_loader (eval, no workers) decodes large JPEGs like the cache.

    The reduced-scale draft is included. Its batches are 1-channel [0, 1] images equal, within
    1/255, to CachedBatchLoader's over the same split. The control shows the check can fail:
    the fully decoded files (no draft) differ by more than that.
    """
    samples = [
        (write_jpeg(tmp_path / f"IM-000{i}-0001.jpeg", seed=20 + i, size=(400, 300)), i % 2)
        for i in range(3)
    ]
    split = load_pixels("classic", samples, SIZE, None, progress=False)
    classic = notebook02.make_classic_loader(
        split, SIZE, batch_size=2, train=False, device=torch.device("cpu"), workers=0
    )
    assert len(classic) == 2
    batches = list(classic)
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    cached = torch.cat(
        [images for images, _ in cxr.CachedBatchLoader(split, 2, torch.device("cpu"))]
    )
    assert images.shape == cached.shape == (3, 1, SIZE, SIZE) and images.dtype == torch.float32
    assert labels.tolist() == [0, 1, 0]
    assert torch.equal(images, cached)  # one resize rule: resize_square
    full_decode = cxr.XrayFileDataset(
        split.paths, split.labels.tolist(), cxr.make_transforms(SIZE, train=False)
    )
    undrafted = torch.stack([full_decode[i][0] for i in range(3)])
    assert float((undrafted - cached).abs().max()) > 1 / 255




def test_one_image_is_augmented_as_a_batch_of_one():
    """augment_batch takes one image (1 x H x W) as the per-file transforms hand it over, and
    draws for it what it draws for a batch holding only that image."""
    image = cxr.to_model_input(torch.from_numpy(_oriented_pixels(SIZE)).view(1, SIZE, SIZE))
    alone = cxr.augment_batch(image, torch.Generator().manual_seed(4))
    batch = cxr.augment_batch(image[None], torch.Generator().manual_seed(4))
    assert alone.shape == image.shape and torch.equal(alone, batch[0])


def test_decoded_pixels_are_writable_so_torch_takes_them_without_a_warning(tmp_path):
    """decode_resized hands over an array of its own: torch.from_numpy warns about read-only
    arrays (notebook 01's 'Decoding once' cell showed that warning)."""
    path = tmp_path / "IM-0001-0001.png"
    noise_image(5, (40, 30)).save(path)
    pixels, _, _ = decode_resized(path, SIZE)
    assert pixels.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.from_numpy(pixels)
