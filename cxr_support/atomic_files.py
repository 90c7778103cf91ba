"""Support code: atomic file writes (lessons need not read this).

Readers see the old content or the new, never half. Temporary files are named
``.<target>.<host>-<pid>.<random>.tmp`` beside their target, so that the leftovers of a
process that was killed mid-write can be recognised and removed later
(``remove_stale_temporaries``) without touching a write that is still going on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

STALE_AFTER_S = 24 * 3600  # a temporary this old is abandoned, whoever made it
# a temporary of a finished process on this machine is removed after this
DEAD_OWNER_GRACE_S = 60.0
LOCK_TIMEOUT_S = 30.0

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
# .<target>.<host>-<pid>.<random>.tmp (mkstemp), .synthetic-<host>-<pid>-<random> (mkdtemp);
# the tag-less .<target>.<random>.tmp is the earlier naming, judged by age alone.
_TEMP_NAME = re.compile(
    r"^\.(?:.+?\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.)?[a-z0-9_]{8}\.tmp"
    r"|synthetic-(?:old-)?(?P<dhost>[0-9a-f]{6})-(?P<dpid>\d+)-[a-z0-9_]{8})$"
)


def owner_tag() -> str:
    """``<host hash>-<pid>``: which process on which machine made a temporary file or folder."""
    return f"{_HOST}-{os.getpid()}"


def _process_alive(pid: int) -> bool:
    """True when a process with this id runs on this machine (or when that cannot be told)."""
    if os.name != "posix":  # os.kill(pid, 0) is not a probe on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # e.g. PermissionError: it exists but belongs to someone else
    except (OSError, OverflowError):
        return True
    return True


def is_stale_temporary(path: Path, now: float | None = None) -> bool:
    """True for a temporary of this project's naming that no running process can still write."""
    match = _TEMP_NAME.match(path.name)
    if match is None:
        return False
    try:
        age = (time.time() if now is None else now) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    host, pid = (match.group("host") or match.group("dhost"),
                 match.group("pid") or match.group("dpid"))
    if age > STALE_AFTER_S:
        return True
    return (host == _HOST and pid is not None and age > DEAD_OWNER_GRACE_S
            and not _process_alive(int(pid)))


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete this project's abandoned temporary files and folders in ``folder``.

    Return what was removed.
    """
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        path = Path(entry.path)
        if not is_stale_temporary(path):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                os.unlink(path)
            removed.append(path)
    return removed


def _naming(err: OSError, path: Path) -> OSError:
    """The same kind of error, with a message that names the file.

    Disk full gives none otherwise.
    """
    message = f"Could not write {path}: {err.strerror or err}"
    return type(err)(err.errno, message) if err.errno is not None else type(err)(message)


def _write_beside(path: Path, data: bytes) -> str:
    """Write ``data`` to a new, synced temporary file in ``path``'s folder and return its name."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{owner_tag()}.",
                                   suffix=".tmp")
    except OSError as err:
        raise _naming(err, path) from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; run products are ordinary files
    except BaseException as err:
        os.unlink(tmp)
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    return tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so readers see the old or the new content, never half of it."""
    path = Path(path)
    tmp = _write_beside(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic text write (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file and an atomic rename."""

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def create_exclusive(path: Path, data: bytes,
                     replace_if: Callable[[Path], bool] | None = None) -> bool:
    """Create ``path`` with ``data`` atomically unless it exists; True when written.

    An existing file is replaced only if ``replace_if(path)``.
    """
    tmp = _write_beside(path, data)
    try:
        try:
            # fails if the file exists: never replaces one that appeared meanwhile
            os.link(tmp, path)
            return True
        except FileExistsError:
            if replace_if is None or not replace_if(path):
                return False
        os.replace(tmp, path)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@contextlib.contextmanager
def locked_file(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on the file now at ``path`` (POSIX ``flock``).

    Read-modify-write cycles take turns by holding it.
    """
    # Writers replace the file (a new inode): a waiter that got the lock on a file that was
    # replaced meanwhile tries again.
    try:
        import fcntl
    except ImportError:  # Windows: no flock; updates are not serialised there
        yield
        return
    deadline = time.monotonic() + timeout_s
    while True:
        fd = os.open(path, os.O_RDONLY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{path} has been locked by another process for over "
                            f"{timeout_s:.0f} s; try again when it has finished."
                        ) from None
                    time.sleep(0.01)
            try:
                # still the file at path, not a replaced one
                current = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                current = False
            if current:
                yield
                return
        finally:
            os.close(fd)  # releases the lock
