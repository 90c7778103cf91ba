"""Data-parallel training (notebook 5, train_ddp.py): sharding, equivalence, one writer, failures.

The multi-process tests launch train_ddp.py with torchrun, 2 processes on the CPU (gloo), on a
tiny synthetic sample. Where a test needs to change the script's behaviour (augmentation off,
batch norm out of the way, a process that fails), it launches a small wrapper that patches the
script or the lessons' helpers in its own process and then calls ``train_ddp.main``: the
product has no test hooks.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from helpers import (
    ROOT,
    MomentumSGD,
    make_split,
    run_series_notebook,
    train_with_stored_batch_norm,
)

import cxr_utils as cxr
import train_ddp
from cxr_support import records
from cxr_support.config import load_config

# ------------------------------------------------------------------- the loaders (no processes)


def _old_cached_iter(loader: cxr.CachedBatchLoader):
    """CachedBatchLoader.__iter__ as it was before epoch_order was split out of it."""
    n = len(loader.labels)
    order = (torch.randperm(n, generator=loader.generator, device=loader.device)
             if loader.shuffle else None)
    for b in range(len(loader)):
        index = slice(b * loader.batch_size, min((b + 1) * loader.batch_size, n))
        chosen = order[index] if order is not None else index
        images = cxr.to_model_input(loader.pixels[chosen])
        if loader.augment:
            images = cxr.augment_batch(images, loader.generator)
        yield images, loader.labels[chosen].float()


@pytest.mark.parametrize("shuffle,augment,drop_last", [(True, True, False), (False, True, True),
                                                       (False, False, False), (True, False, True)])
def test_cached_loader_is_bit_identical_to_before_epoch_order(shuffle, augment, drop_last):
    """Single-process batches (order, pixels, augmentation) are unchanged, over two epochs."""
    split = make_split([0, 1] * 11 + [1])  # 23 images: a short last batch
    new = cxr.CachedBatchLoader(split, 5, torch.device("cpu"), shuffle, augment, 7, drop_last)
    old = cxr.CachedBatchLoader(split, 5, torch.device("cpu"), shuffle, augment, 7, drop_last)
    for _ in range(2):
        new_batches, old_batches = list(new), list(_old_cached_iter(old))
        assert len(new_batches) == len(old_batches) == len(new)
        for (a, la), (b, lb) in zip(new_batches, old_batches):
            assert torch.equal(a, b) and torch.equal(la, lb)


def _shards(split, batch_size, world, pad=True, shuffle=True, seed=3):
    return [cxr.ShardedBatchLoader(split, batch_size, torch.device("cpu"), rank, world,
                                   shuffle=shuffle, seed=seed, pad=pad) for rank in range(world)]


@pytest.mark.parametrize("n,world,b", [(24, 2, 4), (23, 2, 4), (25, 3, 2), (7, 4, 3)])
def test_padded_shards_are_one_permutation_split_with_equal_batch_counts(n, world, b):
    """Rank r serves every world-th index of the one-process permutation from r on, wrapped
    round to a multiple of world; every rank has as many batches; the batches of step k of all
    ranks are the one-process batch k at world * b (when the shards need no padding)."""
    split = make_split([i % 2 for i in range(n)])
    one = cxr.CachedBatchLoader(split, world * b, torch.device("cpu"), shuffle=True, seed=3)
    shards = _shards(split, b, world)
    for _ in range(3):  # epochs: a new permutation each, the same in every rank
        order, parts = one.epoch_order(), [s.epoch_order() for s in shards]
        assert len({len(s) for s in shards}) == 1 and len({len(p) for p in parts}) == 1
        side_by_side = torch.stack(parts, dim=1).flatten()
        assert torch.equal(side_by_side, order[torch.arange(len(side_by_side)) % n])
        assert set(side_by_side.tolist()) == set(range(n))
        if n % world == 0:
            for k in range(len(one)):
                together = torch.cat([p[k * b : (k + 1) * b] for p in parts])
                assert sorted(together.tolist()) == sorted(
                    order[k * world * b : (k + 1) * world * b].tolist())


@pytest.mark.parametrize("n,world", [(23, 2), (10, 3), (2, 3)])
def test_unpadded_shards_serve_every_image_exactly_once(n, world):
    """Validation shards: disjoint, together every image once, sizes differing by at most one."""
    split = make_split([i % 2 for i in range(n)])
    shards = _shards(split, 4, world, pad=False, shuffle=False)
    served = [label for s in shards for _, labels in s for label in labels.tolist()]
    indices = [i for s in shards for i in s.epoch_order().tolist()]
    assert sorted(indices) == list(range(n)) and len(served) == n
    sizes = [s.shard_size() for s in shards]
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1


def test_each_rank_augments_with_its_own_generator():
    """The order generator is seeded alike everywhere, each rank's augmentation generator apart:
    the same images get other augmentations in each rank."""
    split = make_split([0, 1] * 8)
    shards = [cxr.ShardedBatchLoader(split, 4, torch.device("cpu"), rank, 2, shuffle=True,
                                     augment=True, seed=5) for rank in range(2)]
    seeds = [s.generator.initial_seed() for s in shards]
    assert len({*seeds, shards[0].order_generator.initial_seed()}) == 3
    images = cxr.to_model_input(split.pixels[:4])
    augmented = [cxr.augment_batch(images, s.generator) for s in shards]
    assert not torch.allclose(augmented[0], augmented[1])


# -------------------------------------------------------- the script's pieces, simulated devices


def test_sync_batchnorm_is_refused_on_the_cpu_with_a_clear_message(monkeypatch, tmp_path):
    """PyTorch's SyncBatchNorm runs on GPUs only: --sync-bn on the CPU says so at once."""
    monkeypatch.setenv("CXR_RUN_DIR", str(tmp_path))
    config = load_config(arch="resnet18")
    with pytest.raises(ValueError, match="--sync-bn needs GPUs"):
        train_ddp.process_model(config, None, 1.0, torch.device("cpu"), sync_bn=True)


def test_sync_batchnorm_keeps_the_checkpoint_format():
    """Converted batch norms keep their state_dict keys, so notebook 3 loads a --sync-bn run."""
    model = cxr.PneumoniaCnnModel(arch="resnet18")
    keys = list(model.state_dict())
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in converted.modules())
    assert list(converted.state_dict()) == keys and converted.arch == "resnet18"


def test_each_process_gets_its_own_gpu_or_a_clear_error(monkeypatch):
    """cuda:LOCAL_RANK on a machine with enough GPUs; more processes than GPUs stops at once."""
    chosen = []
    monkeypatch.setattr(train_ddp.devices, "accelerator_kind", lambda: "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert train_ddp.process_device("auto", 1, 2) == torch.device("cuda", 1) and chosen == [1]
    with pytest.raises(RuntimeError, match="3 processes on this machine but 2 GPU"):
        train_ddp.process_device("auto", 2, 3)
    assert train_ddp.process_device("cpu", 1, 2) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="not on mps"):
        train_ddp.process_device("mps", 0, 1)


# ----------------------------------------------------------------- launches with torchrun (gloo)

SETTINGS = {"CXR_QUICK": "1", "CXR_IMAGE_SIZE": "32", "CXR_MAX_IMAGES": "64", "CXR_EPOCHS": "1",
            "CXR_BATCH_SIZE": "8", "CXR_PRETRAINED": "0", "CXR_JOVIAN": "0", "CXR_ARCH": "resnet18"}

# Patches applied inside each process, chosen by TEST_MODE (comma-separated).
WRAPPER = '''
import os, sys, time
from pathlib import Path

import torch

import cxr_utils
import train_ddp

out, rank, modes = Path(os.environ["TEST_OUT"]), os.environ["RANK"], os.environ["TEST_MODE"]
(out / f"pid-{rank}").write_text(str(os.getpid()))
if "fixed_bn" in modes:  # batch norm with its stored statistics: no per-process statistics
    from helpers import train_with_stored_batch_norm
    cxr_utils.PneumoniaCnnModel.train = train_with_stored_batch_norm
if "no_augment" in modes:
    train_ddp.AUGMENT = False
if "sgd" in modes:  # an update linear in the gradients (helpers.MomentumSGD says why)
    from helpers import MomentumSGD
    train_ddp.RECIPE = {**train_ddp.RECIPE, "opt_func": MomentumSGD}
if "bypass" in modes:  # the pitfall: the model's own forward, around DDP
    cxr_utils.DistributedLearner.forward = lambda self, xb: self.ddp.module(xb)
if "keep_weights" in modes:  # each rank's weights after fit, for the test to compare
    real_fit = train_ddp.fit
    def fit_and_keep(epochs, max_lr, learner, *args, **kwargs):
        history = real_fit(epochs, max_lr, learner, *args, **kwargs)
        torch.save(learner.ddp.module.state_dict(), out / f"weights-{rank}.pt")
        return history
    train_ddp.fit = fit_and_keep
if "raise" in modes or "hang" in modes:  # rank 1 fails at its second batch
    real_iter = cxr_utils.ShardedBatchLoader.__iter__
    def failing_iter(self):
        for step, batch in enumerate(real_iter(self)):
            if rank == "1" and self.shuffle and step == 1:
                if "hang" in modes:
                    time.sleep(3600)  # stuck, but alive
                raise torch.OutOfMemoryError("rank 1 ran out of memory (simulated)")
            yield batch
    cxr_utils.ShardedBatchLoader.__iter__ = failing_iter
sys.exit(train_ddp.main(sys.argv[1:]))
'''


def launch(tmp: Path, mode: str, *script_args: str, timeout: float = 300,
           nproc: int = 2) -> tuple[subprocess.CompletedProcess, float]:
    """torchrun the wrapper (or the script itself when ``mode`` is empty).

    The settings are this process's CXR_* variables (the ``settings`` fixture's).
    """
    out = tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    wrapper = tmp / "wrapper.py"
    wrapper.write_text(textwrap.dedent(WRAPPER))
    script = wrapper if mode else ROOT / "train_ddp.py"
    paths = os.pathsep.join([str(ROOT), str(ROOT / "tests")])  # the project, and tests/helpers.py
    env = {**os.environ, "TEST_OUT": str(out), "TEST_MODE": mode, "PYTHONPATH": paths,
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={nproc}", str(script), *script_args]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return done, time.perf_counter() - start


@pytest.fixture
def settings(monkeypatch, tmp_path):
    """SETTINGS in this process's environment, which launches inherit; a run dir of its own."""
    for var, value in {**SETTINGS, "CXR_RUN_DIR": str(tmp_path / "runs")}.items():
        monkeypatch.setenv(var, value)


def one_process_reference(monkeypatch, opt_func=cxr.RECIPE["opt_func"]
                          ) -> tuple[dict[str, torch.Tensor], list[dict]]:
    """The same epoch in this process, as notebook 2 trains: one process at twice the batch."""

    monkeypatch.setattr(cxr.PneumoniaCnnModel, "train", train_with_stored_batch_norm)
    config, cpu = load_config(), torch.device("cpu")
    splits = cxr.load_data(config.data_dir, config.run_dir, config.image_size, config.seed,
                           config.max_images, progress=False).splits
    pos_weight = cxr.class_balance_pos_weight(splits["train"].labels)
    model = train_ddp.process_model(config, None, pos_weight, cpu)
    train_dl = cxr.CachedBatchLoader(splits["train"], 2 * config.batch_size, cpu, shuffle=True,
                                     seed=config.seed)
    val_dl = cxr.CachedBatchLoader(splits["val"], 4 * config.batch_size, cpu)
    history = cxr.fit(config.epochs, config.max_lr, model, train_dl, val_dl, precision="fp32",
                      progress=False, **{**cxr.RECIPE, "opt_func": opt_func})
    return model.state_dict(), history


def largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_two_processes_at_batch_b_train_as_one_process_at_2b(settings, tmp_path, monkeypatch):
    """One epoch, augmentation off, batch norm on its stored statistics (PyTorch's SyncBatchNorm
    does not run on the CPU), SGD with momentum instead of Adam (helpers.MomentumSGD says why):
    2 processes at batch 8 end with the weights of 1 process at batch 16, to float rounding; both
    ranks hold the same weights; the record's losses match too. Around DDP (the model's own
    forward), the ranks drift apart and the result is another."""
    monkeypatch.setenv("CXR_MAX_LR", "0.05")  # SGD's steps: large enough to move the weights
    done, _ = launch(tmp_path / "ddp", "fixed_bn,no_augment,keep_weights,sgd")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "ddp" / "out"
    ranks = [torch.load(out / f"weights-{r}.pt", weights_only=True) for r in range(2)]
    assert largest_difference(ranks[0], ranks[1]) == 0.0
    (record_path,) = (tmp_path / "runs" / "records").glob("*.json")
    record = records.read_record(record_path)
    assert record["distributed"]["batch_size_per_step"] == 16

    reference, history = one_process_reference(monkeypatch, MomentumSGD)
    reference = {k: v for k, v in reference.items() if v.is_floating_point()}
    ddp = {k: v for k, v in ranks[0].items() if k in reference}
    largest = largest_difference(ddp, reference)
    assert largest < 2e-5, f"2 processes differ from 1 by up to {largest:.2e}"
    for key in ("train_loss", "val_loss", "val_acc"):
        assert math.isclose(record["history"][0][key], history[0][key], rel_tol=1e-4), key
    start = train_ddp.process_model(load_config(), None, 1.0, torch.device("cpu"))
    weights = [name for name, _ in start.named_parameters()]
    moved = largest_difference({k: ddp[k] for k in weights},
                               {k: v for k, v in start.state_dict().items() if k in weights})
    print(f"2 processes against 1: largest difference {largest:.2e}, largest move {moved:.2e}")
    assert moved > 100 * largest, "training hardly changed the weights: the test proves nothing"

    done, _ = launch(tmp_path / "bypass", "fixed_bn,no_augment,keep_weights,sgd,bypass")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "bypass" / "out"
    apart = [torch.load(out / f"weights-{r}.pt", weights_only=True) for r in range(2)]
    assert largest_difference(apart[0], apart[1]) > 100 * largest, "ranks did not drift apart"


def test_a_two_process_run_writes_one_checkpoint_and_one_record_that_notebook_03_reads(
        settings, tmp_path, monkeypatch):
    """Rank 0 alone writes; only rank 0 prints; notebook 3 evaluates the run like any other."""
    monkeypatch.setenv("CXR_EPOCHS", "2")
    done, _ = launch(tmp_path, "", "--run-id", "20260101-000000-000000-0123456789ab")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = tmp_path / "runs"
    (checkpoint,) = (run_dir / "checkpoints").glob("*.pt")
    (record_path,) = (run_dir / "records").glob("*.json")
    assert checkpoint.stem == record_path.stem == "20260101-000000-000000-0123456789ab"
    assert done.stdout.count("Epoch [0]") == 1 and done.stdout.count("checkpoint:") == 1
    record = records.read_record(record_path)
    assert record["distributed"]["processes"] == 2 and record["distributed"]["backend"] == "gloo"
    assert len(record["history"]) == 2 and record["checkpoint"] == str(checkpoint)
    model, meta = cxr.load_checkpoint(checkpoint)
    assert meta["processes"] == 2 and meta["train_mode"] == "finetune"
    assert meta["made_by"] == record["made_by"] == train_ddp.MADE_BY
    # the recorded validation figures are those of the saved weights, over every image
    config = load_config()
    splits = cxr.load_data(config.data_dir, run_dir, meta["image_size"], meta["split_seed"],
                           config.max_images, progress=False).splits
    here = cxr.evaluate(model, cxr.CachedBatchLoader(splits["val"], 16, torch.device("cpu")))
    assert math.isclose(here["val_loss"], meta["metrics"]["val_loss"], rel_tol=1e-4)
    assert math.isclose(here["val_acc"], meta["metrics"]["val_acc"])

    outputs = run_series_notebook("03_test_predictions.ipynb")
    assert '"output_type": "error"' not in outputs
    assert record_path.stem in outputs
    assert "test" in records.read_record(record_path)  # notebook 3 added its test metrics


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("mode,script_args,named", [
    ("raise", (), "OutOfMemoryError: rank 1 ran out of memory (simulated)"),
    ("hang", ("--timeout", "10"), "imed out"),
], ids=["a rank raises", "a rank hangs"])
def test_a_failing_rank_stops_every_rank_in_bounded_time(settings, tmp_path, mode, script_args,
                                                         named):
    """A rank that raises: torchrun stops the other, which waits in an all-reduce. A rank that
    hangs: the other's all-reduce times out after --timeout, then torchrun stops the hung one.
    Either way the launch exits non-zero, names the error, leaves no process and no files."""
    done, seconds = launch(tmp_path, mode, *script_args, timeout=300)
    report = done.stdout + done.stderr
    assert done.returncode != 0, report[-3000:]
    assert named in report, report[-3000:]
    assert seconds < 120, f"took {seconds:.0f} s"
    pids = [int((tmp_path / "out" / f"pid-{rank}").read_text()) for rank in range(2)]
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(_gone(pid) for pid in pids), "a process was left behind"
    assert not list((tmp_path / "runs").glob("checkpoints/*.pt"))
    assert not list((tmp_path / "runs").glob("records/*.json"))


def test_exercise_2_launches_by_hand_what_the_notebook_launches():
    """Notebook 5's exercise 2 launches train_ddp.py by hand with the notebook's own settings:
    the epochs of its quick default (not quick mode's usual 6), quick mode, its network, the CPU;
    and the launch cell prints that command."""
    import re

    import nbformat

    from cxr_support.config import resolve_arch

    notebook = nbformat.read(ROOT / "notebooks" / "05_several_gpus.ipynb", as_version=4)
    code = "\n".join(c.source for c in notebook.cells if c.cell_type == "code")
    exercise = next(c.source for c in notebook.cells
                    if c.cell_type == "markdown" and c.source.startswith("2. "))
    epochs = int(re.search(r'two_epochs = \{"epochs": (\d+)\}', code).group(1))
    command = re.search(r"`(CXR_BATCH_SIZE=[^`]*torchrun[^`]*)`", exercise).group(1)
    given = dict(re.findall(r"(CXR_\w+)=(\S+)", command))
    assert given == {"CXR_BATCH_SIZE": "16", "CXR_EPOCHS": str(epochs), "CXR_QUICK": "1",
                     "CXR_ARCH": resolve_arch("auto", quick=True), "CXR_DEVICE": "cpu"}
    assert '"CXR_EPOCHS": str(epochs)' in code and "by_hand" in code
