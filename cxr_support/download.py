"""Support code: downloading the dataset, with or without an account (lessons need not read this).

Two sources hold the same 5,856 films (Kermany, Zhang, Goldbaum 2018, CC BY 4.0):

- ``"mendeley"``: ``ChestXRay2017.zip`` from Mendeley Data, a public file that needs no account;
- ``"kaggle"``: Kaggle's copy through kagglehub, which needs a Kaggle API token.

``download_dataset(target, "auto")`` tries Mendeley first, then Kaggle only when Kaggle
credentials are present. The Mendeley download is streamed with a progress bar and resumed
where it stopped (on a retry, or on the next call); the archive's SHA-256 is recorded in
``<target>/ChestXRay2017.json`` (``read_download_record``) and checked when one is given; the
zip is unpacked into a temporary folder beside ``<target>/chest_xray``, checked by its file
counts, and renamed into place, so that a dataset folder is there complete or not at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import requests
from tqdm.auto import tqdm

from cxr_support.atomic_files import atomic_write_text, owner_tag, remove_stale_temporaries
from cxr_support.errors import DataError
from cxr_support.names import CLASS_NAMES
from cxr_support.paths import display_path
from cxr_support.progress import progress_bar

MENDELEY_PAGE = "https://data.mendeley.com/datasets/rscbjbr9sj/2"  # DOI 10.17632/rscbjbr9sj.2
# ChestXRay2017.zip's public file on that page; it redirects to the file's storage. The same URL
# is used by public repositories, e.g. Gregz9/CNN_vs_Weak (downloadData.sh: wget it to
# data/ChestXRay2017.zip and unzip), and the same file id f12eaf6d-... by several READMEs in the
# form .../datasets/rscbjbr9sj/2/files/f12eaf6d-.../ChestXRay2017.zip?dl=1. (An older file id,
# 41d542e7-..., is in fastestimator/fastestimator's fastestimator/dataset/data/mendeley.py.)
# Two of those repositories give the file's size as 1,235,512,464 bytes; no checksum is published.
MENDELEY_URL = ("https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
                "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded")
ARCHIVE_NAME = "ChestXRay2017.zip"
RECORD_NAME = "ChestXRay2017.json"  # url, size, sha256, counts, date of the unpacked download
DATASET_FOLDER = "chest_xray"  # the zip's top folder: <target>/chest_xray/{train,test}/<class>
NORMAL, PNEUMONIA = CLASS_NAMES
# Images per split and class in ChestXRay2017.zip. Kaggle's copy has the same films, 16 of
# train's in a val/ folder: counted with train/, its totals are these too.
MENDELEY_COUNTS: dict[str, dict[str, int]] = {
    "train": {NORMAL: 1349, PNEUMONIA: 3883},
    "test": {NORMAL: 234, PNEUMONIA: 390},
}
KAGGLE_DATASET = "paultimothymooney/chest-xray-pneumonia"
SOURCES = ("auto", "mendeley", "kaggle")
# Seconds to wait before each new try of a failed request; a try that got bytes resets the count.
RETRY_WAITS_S = (2.0, 5.0, 15.0, 30.0)
TIMEOUT_S = (20, 60)  # (connect, between two reads)
CHUNK_BYTES = 1 << 20
# Mendeley's storage may refuse requests' default agent; identity: no compression of the bytes
HEADERS = {"User-Agent": "Mozilla/5.0 (compatible; cxr-transfer-learning)",
           "Accept-Encoding": "identity"}
MANUAL_ROUTE = (f"download {ARCHIVE_NAME} from {MENDELEY_PAGE} in a browser, unzip it and set "
                f"CXR_DATA_DIR to its {DATASET_FOLDER} folder")


class DownloadUnavailable(DataError):
    """The file could not be fetched (no network, the server refused): another source may work."""


def download_dataset(target_dir: Path, source: str = "auto", *,
                     expected_sha256: str | None = None) -> Path:
    """Get the dataset into ``target_dir`` and return its root (the folder with train/, test/).

    A complete dataset already there is used as it is, with no request. ``source``:

    - ``"mendeley"``: ``ChestXRay2017.zip`` from Mendeley Data (no account), unpacked to
      ``<target_dir>/chest_xray``; a ``ChestXRay2017.zip`` put in ``target_dir`` by hand is used
      instead of downloading it. ``expected_sha256``, if given, must match the zip's SHA-256.
    - ``"kaggle"``: kagglehub's download (needs Kaggle credentials), linked as
      ``<target_dir>/chest_xray``.
    - ``"auto"``: Mendeley first; if Mendeley cannot be reached, Kaggle, but only when Kaggle
      credentials are present (``kaggle_credentials_present``); else the Mendeley error.
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r}: choose one of {', '.join(SOURCES)}")
    target_dir = Path(target_dir)
    existing = _complete_root(target_dir, MENDELEY_COUNTS)
    if existing is not None:
        _check_recorded_sha256(target_dir, expected_sha256)
        print(f"Using the dataset already at {display_path(existing)}")
        return existing
    if source == "kaggle":
        return download_kaggle(target_dir)
    try:  # the module's constants, read now (tests point them at a local server)
        return download_mendeley(target_dir, url=MENDELEY_URL, expected_counts=MENDELEY_COUNTS,
                                 expected_sha256=expected_sha256)
    except DownloadUnavailable as err:
        if source == "mendeley":
            raise
        if not kaggle_credentials_present():
            raise DownloadUnavailable(f"{err} (no Kaggle credentials either, for the Kaggle "
                                      "copy: see the README, 'Getting the real data')") from err
        print(f"{err}\nTrying Kaggle's copy instead (Kaggle credentials found).")
    return download_kaggle(target_dir)


def download_mendeley(target_dir: Path, *, url: str = MENDELEY_URL,
                      expected_counts: Mapping[str, Mapping[str, int]] = MENDELEY_COUNTS,
                      expected_sha256: str | None = None) -> Path:
    """Download ``url``'s zip into ``target_dir``, unpack it there and return the dataset root.

    Steps, each of which a later call picks up: ``ChestXRay2017.zip.part`` grows until complete
    (resumed with an HTTP Range request), becomes ``ChestXRay2017.zip`` once its SHA-256 is
    known (and equals ``expected_sha256``, if given), is unpacked without ``__MACOSX/`` and
    ``._*`` files into a temporary folder, checked against ``expected_counts``
    ({split: {class: images}}), recorded in ``ChestXRay2017.json``, and renamed to
    ``<target_dir>/chest_xray``. A zip downloaded by this call is then deleted; one that was
    there before (put there by hand, or left by an interrupted call) is kept.
    """
    target_dir = Path(target_dir)
    final = target_dir / DATASET_FOLDER
    existing = _complete_root(target_dir, expected_counts)
    if existing is not None:
        _check_recorded_sha256(target_dir, expected_sha256)
        print(f"Using the dataset already at {display_path(existing)}")
        return existing
    if os.path.lexists(final):
        problem = _count_problem(final, expected_counts)
        raise DataError(f"{display_path(final)} exists but is not the complete dataset "
                        f"({problem}); move it away or delete it, then call again.")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"Cannot create {display_path(target_dir)}: {err.strerror or err}") from err
    archive = target_dir / ARCHIVE_NAME
    part = target_dir / (ARCHIVE_NAME + ".part")
    downloaded_now = not archive.exists()
    if downloaded_now:
        _fetch(url, part)
        sha256 = _check_sha256(part, expected_sha256)
        os.replace(part, archive)
    else:
        print(f"Using {display_path(archive)}, found there (not downloaded)")
        sha256 = _check_sha256(archive, expected_sha256)
    record = {
        "source": "mendeley", "url": url, "doi": "10.17632/rscbjbr9sj.2", "license": "CC BY 4.0",
        "file": ARCHIVE_NAME, "size": archive.stat().st_size, "sha256": sha256,
        "downloaded": downloaded_now,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    root = _unpack(archive, target_dir, expected_counts, record)
    if downloaded_now:
        archive.unlink()
    else:
        print(f"Kept {display_path(archive)}: delete it if you need the space.")
    print(f"Dataset ready at {display_path(root)} (SHA-256 of {ARCHIVE_NAME}: {sha256})")
    return root


def download_kaggle(target_dir: Path) -> Path:
    """Download the Kaggle dataset with kagglehub (needs internet and Kaggle credentials).

    The files stay in kagglehub's cache; ``<target_dir>/chest_xray`` links to them.
    """
    try:
        import kagglehub
    except ImportError as err:
        raise RuntimeError("kagglehub is not installed: pip install kagglehub") from err
    cached = Path(kagglehub.dataset_download(KAGGLE_DATASET))
    root = locate_dataset_root(cached)
    if root is None:
        raise DataError(f"Downloaded {KAGGLE_DATASET} to {cached} "
                        "but found no chest_xray/train and test there.")
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    link = target_dir / DATASET_FOLDER
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    print(f"Dataset ready at {link} (files live in kagglehub's cache: {root})")
    return link


def kaggle_credentials_present() -> bool:
    """True when kagglehub would find Kaggle credentials.

    KAGGLE_USERNAME and KAGGLE_KEY, KAGGLE_API_TOKEN, a kaggle.json in KAGGLE_CONFIG_DIR or
    ~/.kaggle, or what kagglehub's own check finds (Colab secrets, say).
    """
    if ((os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"))
            or os.environ.get("KAGGLE_API_TOKEN")):
        return True
    folder = os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle"
    if (Path(folder) / "kaggle.json").is_file():
        return True
    try:
        from kagglehub.config import get_kaggle_credentials

        return get_kaggle_credentials() is not None
    except Exception:  # not installed, another version's API, an unreadable kaggle.json
        return False


def read_download_record(target_dir: Path) -> dict | None:
    """What ``download_mendeley`` recorded in ``<target_dir>/ChestXRay2017.json``, or None.

    Keys: source, url, doi, license, file, size, sha256, downloaded (False: the zip was found
    in the folder), date (UTC), counts ({split: {class: images}}), root (the dataset's folder).
    """
    try:
        record = json.loads((Path(target_dir) / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not (Path(target_dir) / str(record.get("root"))).is_dir():
        return None  # e.g. written just before a process was killed, before the rename
    return record


def locate_dataset_root(path: Path) -> Path | None:
    """Find the folder holding train/ and test/ at or below ``path``.

    The Kaggle zip nests it twice.
    """
    for candidate in (path, path / "chest_xray", path / "chest_xray" / "chest_xray"):
        if candidate.is_dir() and candidate.name != "__MACOSX" and _looks_like_root(candidate):
            return candidate
    return None


def count_images(root: Path, expected_counts: Mapping[str, Mapping[str, int]]
                 ) -> dict[str, dict[str, int]]:
    """{split: {class: files}} for the splits and classes of ``expected_counts``.

    Hidden files are not counted. Without a "val" entry in ``expected_counts``, a val/ folder's
    files count as train/'s (Kaggle's copy moved 16 of the zip's train/ films there).
    """
    counts: dict[str, dict[str, int]] = {}
    for split, classes in expected_counts.items():
        counts[split] = {}
        for class_name in classes:
            folders = [Path(root) / split / class_name]
            if split == "train" and "val" not in expected_counts:
                folders.append(Path(root) / "val" / class_name)
            counts[split][class_name] = sum(_count_files(folder) for folder in folders)
    return counts


# --- the steps ---------------------------------------------------------------------------------


def _looks_like_root(path: Path) -> bool:
    return all((path / split).is_dir() for split in ("train", "test"))


def _count_files(folder: Path) -> int:
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if not e.name.startswith(".") and e.is_file())
    except OSError:
        return 0


def _count_problem(root: Path, expected_counts: Mapping[str, Mapping[str, int]]) -> str | None:
    """None when ``root`` holds the expected counts, else 'train/NORMAL: found 3, expected 4'."""
    found = count_images(root, expected_counts)
    wrong = [f"{split}/{name}: found {found[split][name]}, expected {n}"
             for split, classes in expected_counts.items() for name, n in classes.items()
             if found[split][name] != n]
    return "; ".join(wrong) or None


def _complete_root(target_dir: Path, expected_counts: Mapping[str, Mapping[str, int]]
                   ) -> Path | None:
    """The dataset root at or below ``target_dir`` if it holds every expected file, else None."""
    root = locate_dataset_root(Path(target_dir))
    if root is None or _count_problem(root, expected_counts) is not None:
        return None
    return root


def _check_recorded_sha256(target_dir: Path, expected_sha256: str | None) -> None:
    """Compare ``expected_sha256`` with the recorded one of a dataset that is reused."""
    if expected_sha256 is None:
        return
    recorded = (read_download_record(target_dir) or {}).get("sha256")
    if recorded is None:
        warnings.warn(f"{display_path(target_dir)} holds a dataset with no {RECORD_NAME} (not "
                      "unpacked by download_mendeley): expected_sha256 is not checked.",
                      stacklevel=3)
        return
    if recorded.lower() != expected_sha256.lower():
        raise DataError(f"The dataset in {display_path(target_dir)} was unpacked from a zip with "
                        f"SHA-256 {recorded}, not the expected {expected_sha256.lower()}: move "
                        "it away (with its record) and call again to download it afresh.")


def _write(handle, data: bytes) -> None:
    """Write all of ``data`` (an unbuffered file may take part); tests simulate a full disk here."""
    view = memoryview(data)
    while view:
        view = view[handle.write(view) or 0:]


def _disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _size(n_bytes: float) -> str:
    """Bytes as GiB (the real zip: 1.15 GiB) or, below one, MiB."""
    return f"{n_bytes / 2**30:.2f} GiB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MiB"


def _unavailable(url: str, why: str) -> DownloadUnavailable:
    return DownloadUnavailable(f"Could not download {ARCHIVE_NAME} from {url} ({why}). "
                               f"Without a network: {MANUAL_ROUTE}.")


def _fetch(url: str, part: Path) -> None:
    """Download ``url`` into ``part``, resuming from the bytes already there.

    Written by hand because pooch (1.9) and requests cannot resume: pooch streams every try
    into a fresh temporary file that it deletes when the try fails, and sends no Range header.
    Here the bytes already in ``part`` stay, and each try asks for the rest with ``Range``.
    """
    failures = 0
    if part.exists():
        print(f"Resuming {part.name} after its {part.stat().st_size:,} bytes")
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            if _fetch_once(url, part, before):
                return
            why = "the server closed the connection early"
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError) as err:
            why = _reason(err)
        after = part.stat().st_size if part.exists() else 0
        failures = 0 if after > before else failures + 1  # progress: as good as a fresh start
        if failures > len(RETRY_WAITS_S):
            raise _unavailable(url, why)
        wait = RETRY_WAITS_S[max(failures - 1, 0)]
        print(f"{why}; trying again in {wait:g} s, from byte {after:,}")
        time.sleep(wait)


def _reason(err: Exception) -> str:
    """The last line of a requests error's chain, which names the cause (refused, timed out)."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    match = re.search(r"\[Errno [^\]]+\] [^')\"]+|Read timed out|Connection refused"
                      r"|Connection broken: [^'\"(]+", text)
    return match.group(0) if match else text[:200]


def _fetch_once(url: str, part: Path, have: int) -> bool:
    """One request; True when ``part`` is complete. Raises requests' errors for a retry."""
    headers = dict(HEADERS, **({"Range": f"bytes={have}-"} if have else {}))
    with requests.get(url, headers=headers, stream=True, timeout=TIMEOUT_S) as response:
        if response.status_code == 416 and have:
            return True  # nothing after the bytes we have: complete (the SHA-256 tells the rest)
        if response.status_code >= 500 or response.status_code == 429:
            raise requests.ConnectionError(f"HTTP {response.status_code} {response.reason}")
        if response.status_code >= 400:
            raise _unavailable(url, f"HTTP {response.status_code} {response.reason}")
        if "text/html" in response.headers.get("Content-Type", ""):
            raise _unavailable(url, "the server sent a web page, not the zip")
        start, total = _range_of(response)
        if start != have:  # the server sent the file from the start (or from elsewhere)
            if start != 0:
                part.unlink(missing_ok=True)
                raise requests.ConnectionError(f"the server answered from byte {start}")
            have = 0
        length = total - have if total is not None else None
        written = _stream(response, part, have, total, append=have > 0)
        return length is None or written >= length


def _range_of(response: requests.Response) -> tuple[int, int | None]:
    """(first byte, whole file's size or None) of a 200 or 206 response."""
    if response.status_code == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if match:
            return int(match[1]), None if match[2] == "*" else int(match[2])
        raise requests.ConnectionError("a partial answer without a Content-Range")
    length = response.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else None


def _stream(response: requests.Response, part: Path, have: int, total: int | None,
            append: bool) -> int:
    """Append the response's bytes to ``part`` (or replace it) with a progress bar; bytes written.

    Unbuffered, so that a full disk is reported by a write, not later by the file's closing;
    what a failed write leaves in ``part`` is a prefix of the file, to resume from.
    """
    written = 0
    bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
               desc=ARCHIVE_NAME)
    try:
        with open(part, "ab" if append else "wb", buffering=0) as handle:
            for chunk in response.iter_content(CHUNK_BYTES):
                _write(handle, chunk)
                written += len(chunk)
                bar.update(len(chunk))
    except OSError as err:
        if not _disk_full(err):
            raise
        kept = part.stat().st_size
        more = f"{_size(total - kept)} more" if total is not None else "more space"
        raise DataError(
            f"The disk holding {display_path(part.parent)} is full: the download needs {more}, "
            f"and about {_size(total or kept)} more to unpack it. The {kept:,} bytes so far are "
            f"kept in {part.name}: free some space and call again to resume."
        ) from err
    finally:
        bar.close()
    return written


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str | None) -> str:
    """The file's SHA-256; a one-line DataError when it is not ``expected``."""
    actual = _sha256(path)
    if expected is not None and actual != expected.strip().lower():
        raise DataError(
            f"{path.name} has SHA-256 {actual}, not the expected {expected.strip().lower()}: the "
            f"download is damaged or the file changed. Delete {display_path(path)} and call "
            "again to download it afresh (or correct expected_sha256)."
        )
    return actual


def _wanted(member: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's safe relative path, or None for macOS's extras and anything unsafe."""
    path = PurePosixPath(member.filename)
    if (member.is_dir() or path.is_absolute() or ".." in path.parts or not path.parts
            or path.parts[0] == "__MACOSX" or path.name.startswith(".")):
        return None  # __MACOSX/, ._* resource forks, .DS_Store
    return path


def _unpack(archive: Path, target_dir: Path, expected_counts: Mapping[str, Mapping[str, int]],
            record: dict) -> Path:
    """Unpack into a temporary folder, check the counts, record, rename into place."""
    final = target_dir / DATASET_FOLDER
    # the temporaries of an interrupted unpack, once their process is gone (atomic_files)
    remove_stale_temporaries(target_dir)
    tmp = Path(tempfile.mkdtemp(dir=target_dir, prefix=f".{DATASET_FOLDER}.{owner_tag()}.",
                                suffix=".tmp"))
    needed = archive.stat().st_size
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                members = [(m, p) for m in zf.infolist() if (p := _wanted(m)) is not None]
                needed = sum(m.file_size for m, _ in members)
                for member, path in progress_bar(members, desc=f"unpack {archive.name}",
                                                 unit="file"):
                    dest = tmp.joinpath(*path.parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as source, open(dest, "wb") as handle:
                        while chunk := source.read(CHUNK_BYTES):
                            _write(handle, chunk)
        except (zipfile.BadZipFile, EOFError) as err:
            raise DataError(f"{display_path(archive)} is not a readable zip ({err}): delete it "
                            "and call again to download it afresh.") from err
        except OSError as err:
            if not _disk_full(err):
                raise
            raise DataError(f"The disk holding {display_path(target_dir)} is full: unpacking "
                            f"needs {_size(needed)} free there. {archive.name} is kept; free "
                            "some space and call again.") from err
        unpacked = tmp / DATASET_FOLDER
        problem = _count_problem(unpacked, expected_counts)
        if problem is not None:
            raise DataError(f"{archive.name} does not hold the expected dataset: {problem}. "
                            f"Delete {display_path(archive)} and call again, or {MANUAL_ROUTE}.")
        record = dict(record, counts=count_images(unpacked, expected_counts),
                      root=DATASET_FOLDER)
        # recorded first: the dataset never appears without its record
        atomic_write_text(target_dir / RECORD_NAME, json.dumps(record, indent=1) + "\n")
        try:
            os.rename(unpacked, final)
        except OSError as err:  # another process put a dataset there meanwhile
            if _complete_root(target_dir, expected_counts) != final:
                raise DataError(f"Could not move the unpacked dataset to {display_path(final)}: "
                                f"{err.strerror or err}") from err
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return final
