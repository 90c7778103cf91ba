"""Edge cases of runs sharing a run dir and of full disks (issue 11, classes 5 and 6).

Concurrent builders of the synthetic sample, run ids made in bulk, records updated at the
same time, checkpoints of different runs, a full disk while caching, and the temporary files
of killed processes. Nothing in a data folder may change, and nothing complete may be lost.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from helpers import SIZE, TINY_COUNTS, snapshot

import cxr_utils as cxr
from cxr_support import atomic_files, records, synthetic
from cxr_support.atomic_files import atomic_write_bytes, locked_file, owner_tag
from cxr_support.checkpoints import CheckpointError, write_checkpoint
from cxr_support.dataset import list_split
from cxr_support.images import decode_resized
from cxr_support.pixel_cache import load_pixels
from cxr_support.records import (
    RUN_ID_PATTERN,
    create_record,
    list_records,
    new_run_id,
    read_record,
    update_record,
)
from cxr_support.synthetic import make_synthetic_dataset

ROOT = Path(__file__).resolve().parent.parent


def dead_pid() -> int:
    """The id of a process that has just ended."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# ------------------------------------------------------ the synthetic sample, built by several runs


def test_sample_finished_meanwhile_by_another_run_is_kept_not_replaced(tmp_path, monkeypatch):
    """Two builders race; the one that finishes second keeps the first one's folder.

    It keeps the same inode and the same files, and discards its own folder.
    """
    out = tmp_path / "synthetic"
    real, seen = synthetic._write_synthetic_patient, {}

    def racing(folder, rng, label, patient):
        # while we draw our first patient, "another process" builds and publishes the whole sample
        if not seen:
            seen["racing"] = True
            seen["root"] = root = make_synthetic_dataset(out, seed=3, counts=TINY_COUNTS)
            seen["inode"], seen["files"] = os.stat(root).st_ino, snapshot(root)
        real(folder, rng, label, patient)

    monkeypatch.setattr(synthetic, "_write_synthetic_patient", racing)
    root = make_synthetic_dataset(out, seed=3, counts=TINY_COUNTS)
    assert root == seen["root"]
    # never deleted under a reader
    assert os.stat(root).st_ino == seen["inode"] and snapshot(root) == seen["files"]
    assert sorted(p.name for p in out.iterdir()) == ["seed3"]  # our own copy is gone


_BUILD_AND_READ = """
import sys, time
from pathlib import Path
from cxr_support.dataset import list_split
from cxr_support.images import decode_resized
from cxr_support.synthetic import make_synthetic_dataset
go = Path(sys.argv[2])
Path(f"{go}.{sys.argv[3]}").touch()  # imported and ready
while not go.exists():
    time.sleep(0.001)
root = make_synthetic_dataset(
    Path(sys.argv[1]), seed=4, counts={"train": (4, 6), "val": (1, 1), "test": (2, 3)}
)
for split in ("train", "val", "test"):
    for path, _ in list_split(root, split)[0]:
        decode_resized(path, 32)
print(root)
"""


def test_processes_that_build_the_same_sample_at_once_all_succeed(tmp_path):
    """Two processes that find no sample build it at the same moment.

    Each then reads every file without error.
    """
    out, go = tmp_path / "synthetic", tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _BUILD_AND_READ, str(out), str(go), name],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in "ab"
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{name}").exists() for name in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both find no sample and start building at the same moment
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert {o.strip() for o, _ in results} == {str(out / "seed4" / "chest_xray")}
    assert sorted(p.name for p in out.iterdir()) == ["seed4"]


def test_outdated_sample_is_replaced_and_nothing_is_left_behind(tmp_path):
    """A sample of an older generator version is replaced by the current one.

    No old or temporary folder remains.
    """
    root = tmp_path / "synthetic" / "seed5" / "chest_xray"
    root.mkdir(parents=True)
    (root / "SYNTHETIC.json").write_text(json.dumps({"generator_version": 0}))
    (root / "old-file.txt").write_text("from an older version")
    assert make_synthetic_dataset(tmp_path / "synthetic", seed=5, counts=TINY_COUNTS) == root
    assert (
        json.loads((root / "SYNTHETIC.json").read_text())["generator_version"]
        == synthetic.SYNTHETIC_VERSION
    )
    assert not (root / "old-file.txt").exists()
    assert sorted(p.name for p in (tmp_path / "synthetic").iterdir()) == ["seed5"]


def test_sample_with_a_damaged_stamp_is_rebuilt(tmp_path):
    """A half-written SYNTHETIC.json is treated as an unfinished sample and rebuilt, not a crash."""
    root = tmp_path / "synthetic" / "seed6" / "chest_xray"
    root.mkdir(parents=True)
    (root / "SYNTHETIC.json").write_text('{"generator_version": ')
    assert make_synthetic_dataset(tmp_path / "synthetic", seed=6, counts=TINY_COUNTS) == root
    assert list_split(root, "train")[0]


# -------------------------------------------------------------------- run ids and the newest record


def test_run_ids_made_in_bulk_are_unique():
    """20,000 ids made as fast as possible (mostly within one second) are all different.

    They are all well formed too.
    """
    ids = [new_run_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(RUN_ID_PATTERN, i) for i in ids[:100])


def test_run_ids_of_one_second_sort_in_time_order(clock):
    """Runs that end within the same second get ids that sort in the order they ended.

    The microsecond is in the id.
    """
    ids = []
    for micro in range(1, 60):
        clock["now"] = clock["now"].replace(microsecond=micro * 1000)
        ids.append(new_run_id())
    assert sorted(ids) == ids and ids[0].startswith("20250101-120000-001000-")


def test_newest_record_is_the_run_that_ended_last_in_the_same_second(tmp_path, clock):
    """Twenty runs end within one second: list_records gives them in the order they ended.

    This holds whatever order their records were written in.
    """
    ids = []
    for micro in range(20):
        clock["now"] = clock["now"].replace(microsecond=micro * 100)
        ids.append(new_run_id())
    for run_id in reversed(ids):
        create_record(tmp_path, {"run_id": run_id})
    listed = [r["run_id"] for r in list_records(tmp_path)]
    # notebook 4's "newest" is the run that ended last
    assert listed == ids and listed[-1] == ids[-1]


# ------------------------------------------------------------------------ concurrent record updates


def test_concurrent_update_record_calls_keep_every_section(tmp_path, monkeypatch):
    """Eight threads each add one section at the same moment: no section is lost.

    Each update has a slow read in between.
    """
    path = create_record(
        tmp_path, {"run_id": "20250101-120000-000000-000000000000", "history": [1, 2]}
    )
    real_read = records.read_record

    def slow_read(p):
        record = real_read(p)
        time.sleep(0.05)  # widen the read-modify-write window
        return record

    monkeypatch.setattr(records, "read_record", slow_read)
    start = threading.Barrier(8)

    def add(i: int) -> None:
        start.wait()
        update_record(path, **{f"section{i}": i})

    threads = [threading.Thread(target=add, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    record = read_record(path)
    assert {f"section{i}" for i in range(8)} <= set(record) and record["history"] == [1, 2]
    assert os.listdir(path.parent) == [path.name]


_UPDATE_MANY = """
import sys, time
from pathlib import Path
from cxr_support.records import update_record
go = Path(sys.argv[3])
Path(f"{go}.{sys.argv[2]}").touch()  # imported and ready
while not go.exists():
    time.sleep(0.001)
for i in range(40):
    update_record(sys.argv[1], **{f"{sys.argv[2]}-{i}": i})
"""


def test_update_record_from_two_processes_loses_nothing(tmp_path):
    """Two processes update one record 40 times each, at the same moment.

    All 80 sections are left.
    """
    path = create_record(tmp_path, {"run_id": "20250101-120000-000000-00000000000a"})
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _UPDATE_MANY, str(path), name, str(go)], cwd=ROOT)
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not all(Path(f"{go}.{name}").exists() for name in "ab") and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both start updating at the same moment
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert {f"{name}-{i}" for name in "ab" for i in range(40)} <= set(read_record(path))


def test_a_lock_held_too_long_gives_a_timeout_naming_the_file(tmp_path):
    """If another process holds a record's lock past the timeout, the error names the file.

    It does not wait for ever.
    """
    path = create_record(tmp_path, {"run_id": "20250101-120000-000000-00000000000b"})
    with (
        locked_file(path),
        pytest.raises(TimeoutError, match=re.escape(str(path))),
        locked_file(path, timeout_s=0.2),
    ):
        pass


# -------------------------------------------------------------------- checkpoints of different runs


def test_checkpoint_of_another_run_is_never_replaced(tmp_path):
    """A run whose id collides with an earlier one cannot overwrite that run's checkpoint.

    The same run can update its own.
    """
    path = tmp_path / "checkpoints" / "run.pt"
    write_checkpoint(path, {"w": torch.zeros(3)}, {"run_id": "run-A", "threshold": 0.5})
    record_path = create_record(tmp_path, {"run_id": "run-A", "checkpoint": str(path)})
    before = path.read_bytes()
    with pytest.raises(CheckpointError) as caught:
        write_checkpoint(path, {"w": torch.ones(3)}, {"run_id": "run-B"})
    assert (
        str(path) in str(caught.value)
        and "run-A" in str(caught.value)
        and "run-B" in str(caught.value)
    )
    assert path.read_bytes() == before and os.listdir(path.parent) == ["run.pt"]
    # notebook 3 adds its threshold
    write_checkpoint(path, {"w": torch.zeros(3)}, {"run_id": "run-A", "threshold": 0.3})
    saved = torch.load(Path(read_record(record_path)["checkpoint"]), weights_only=True)
    assert saved["metadata"]["run_id"] == "run-A" and saved["metadata"]["threshold"] == 0.3


# ----------------------------------------------------------------------------- full disks


def test_cache_write_on_a_full_disk_warns_and_carries_on(tiny_root, monkeypatch):
    """When the cache cannot be written (disk full), load_pixels warns and returns the pixels.

    The warning names the file and the reason.
    """
    samples = list_split(tiny_root, "train")[0]
    cache_dir = tiny_root.parent.parent / "cache"
    monkeypatch.setattr(atomic_files.os, "fsync", disk_full)
    with pytest.warns(UserWarning, match="No space left on device") as caught:
        split = load_pixels("train", samples, SIZE, cache_dir, progress=False)
    monkeypatch.undo()
    message = "\n".join(str(w.message) for w in caught)
    assert str(cache_dir / "train-") in message and "Carrying on" in message
    assert len(split) == len(samples)
    assert all(
        (split.pixels[i, 0].numpy() == decode_resized(p, SIZE)[0]).all()
        for i, (p, _) in enumerate(samples)
    )
    assert os.listdir(cache_dir) == []  # no cache file and no temporary left


def test_cache_folder_that_cannot_be_made_warns_and_carries_on(tiny_root, tmp_path):
    """A cache folder below a file (it cannot be created) is a warning, not a crash."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="Could not save the pixel cache"):
        split = load_pixels(
            "test", list_split(tiny_root, "test")[0], SIZE, blocker / "cache", progress=False
        )
    assert len(split) == 4


def test_prepare_data_on_a_full_disk_finishes_and_leaves_data_alone(
    tiny_root, tmp_path, monkeypatch
):
    """With every write failing for lack of space, data preparation still returns the splits.

    The data folder is unchanged.
    """
    before = snapshot(tiny_root)
    monkeypatch.setattr(atomic_files.os, "fsync", disk_full)
    with pytest.warns(UserWarning, match="No space left on device"):
        splits = cxr.prepare_data(
            tiny_root, tmp_path / "run", image_size=SIZE, seed=0, progress=False
        )
    monkeypatch.undo()
    assert set(splits) == {"train", "val", "test", "kaggle_val"} and len(splits["test"]) == 4
    assert snapshot(tiny_root) == before
    assert [p for p in (tmp_path / "run").rglob("*") if p.is_file()] == []


def test_write_error_names_the_file(tmp_path, monkeypatch):
    """An atomic write that fails for lack of space says which file it was writing."""
    monkeypatch.setattr(atomic_files.os, "fsync", disk_full)
    with pytest.raises(OSError, match=re.escape(str(tmp_path / "record.json"))) as caught:
        atomic_write_bytes(tmp_path / "record.json", b"{}")
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC and os.listdir(tmp_path) == []


# -------------------------------------------------------------------- leftovers of killed processes


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from cxr_support.atomic_files import _write_beside
_write_beside(Path(sys.argv[1]), b"half of a cache file")
os._exit(9)  # killed before the rename
"""


@pytest.mark.skipif(os.name != "posix", reason="process liveness is probed with POSIX signals")
def test_leftover_of_a_killed_cache_writer_is_removed(tiny_root, tmp_path, monkeypatch):
    """A process killed while writing the cache leaves a hidden temporary.

    The next load_pixels removes it, and only it.
    """
    cache_dir = tmp_path / "cache"
    subprocess.run(
        [sys.executable, "-c", _KILLED_WRITER, str(cache_dir / "train-0123.pt")],
        cwd=ROOT,
        check=False,
    )
    (leftover,) = [p for p in cache_dir.iterdir() if p.name.startswith(".train-0123.pt.")]
    # a write of this very process, still going on
    live = cache_dir / f".val-4567.pt.{owner_tag()}.abcd1234.tmp"
    old_style = cache_dir / ".test-89.pt.k2j3h4g5.tmp"  # the earlier naming, two days old
    keep = [cache_dir / ".notes.tmp", cache_dir / "keep.abcd1234.tmp", live]
    for path in [old_style, *keep]:
        path.write_bytes(b"x")
    os.utime(old_style, (time.time() - 2 * 86400,) * 2)
    monkeypatch.setattr(atomic_files, "DEAD_OWNER_GRACE_S", 0.0)
    load_pixels("train", list_split(tiny_root, "train")[0], SIZE, cache_dir, progress=False)
    assert not leftover.exists() and not old_style.exists()
    assert all(path.exists() for path in keep)


@pytest.mark.skipif(os.name != "posix", reason="process liveness is probed with POSIX signals")
def test_leftover_folder_of_a_killed_sample_builder_is_removed(tmp_path, monkeypatch):
    """A half-built synthetic sample of a process that died is removed on the next call.

    This happens even when the sample exists.
    """
    out = tmp_path / "synthetic"
    make_synthetic_dataset(out, seed=7, counts=TINY_COUNTS)
    stale = out / f".synthetic-{owner_tag().split('-')[0]}-{dead_pid()}-abcd1234"
    (stale / "train" / "NORMAL").mkdir(parents=True)
    monkeypatch.setattr(atomic_files, "DEAD_OWNER_GRACE_S", 0.0)
    make_synthetic_dataset(out, seed=7, counts=TINY_COUNTS)
    assert sorted(p.name for p in out.iterdir()) == ["seed7"]
