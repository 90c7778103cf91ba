"""cxr_support.download against a loopback HTTP server that serves a small zip in the real layout.

The zip has chest_xray/{train,test}/{NORMAL,PNEUMONIA} with a few tiny JPEGs, and macOS's extras
(__MACOSX/, ._* files, .DS_Store) that the unpacking must skip.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from cxr_support import download, records
from cxr_support.atomic_files import owner_tag
from cxr_support.errors import DataError

COUNTS = {"train": {"NORMAL": 3, "PNEUMONIA": 4}, "test": {"NORMAL": 2, "PNEUMONIA": 2}}


def make_zip() -> bytes:
    """The small zip: COUNTS' JPEGs of noise (about 1 kB each), and macOS's extras."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("chest_xray/", b"")
        zf.writestr("chest_xray/.DS_Store", b"\0junk")
        number = 0
        for split, classes in COUNTS.items():
            for class_name, n in classes.items():
                folder = f"chest_xray/{split}/{class_name}"
                zf.writestr(f"{folder}/", b"")
                for _ in range(n):
                    number += 1
                    jpeg = io.BytesIO()
                    noise = bytes((number * 37 + i * 11) % 256 for i in range(32 * 32))
                    Image.frombytes("L", (32, 32), noise).save(jpeg, "JPEG")
                    name = f"person{number}_bacteria_{number}.jpeg"
                    zf.writestr(f"{folder}/{name}", jpeg.getvalue())
                    zf.writestr(f"{folder}/._{name}", b"\0\5\26\7resource fork")
                    zf.writestr(f"__MACOSX/{folder}/._{name}", b"\0\5\26\7resource fork")
    return buffer.getvalue()


ZIP = make_zip()


class Server:
    """Serves ZIP at /ChestXRay2017.zip; records each request's headers.

    ``drop_after``: the first request gets the full Content-Length but only that many bytes,
    then the connection is closed. Range requests get 206 (or 416 past the end).
    """

    def __init__(self, drop_after: int | None = None):
        self.drop_after = drop_after
        self.requests: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(dict(self.headers))
                start = 0
                if match := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
                    start = int(match[1])
                    if start >= len(ZIP):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(ZIP)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(ZIP) - 1}/{len(ZIP)}")
                else:
                    self.send_response(200)
                body = ZIP[start:]
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None and len(server.requests) == 1:
                    self.wfile.write(body[: server.drop_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ChestXRay2017.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    """No waits between tries, small chunks (so that a dropped connection leaves bytes)."""
    monkeypatch.setattr(download, "RETRY_WAITS_S", (0.0, 0.0))
    monkeypatch.setattr(download, "CHUNK_BYTES", 1024)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def fetch(target: Path, url: str, **kwargs) -> Path:
    return download.download_mendeley(target, url=url, expected_counts=COUNTS, **kwargs)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def assert_complete(target: Path, root: Path) -> None:
    """The dataset is in place with COUNTS' JPEGs and nothing of macOS; no leftovers beside it."""
    assert root == target / "chest_xray"
    for split, classes in COUNTS.items():
        for class_name, n in classes.items():
            names = sorted(p.name for p in (root / split / class_name).iterdir())
            assert len(names) == n and all(name.endswith(".jpeg") for name in names), names
    found = files_under(target)
    assert not [f for f in found if "__MACOSX" in f or Path(f).name.startswith((".", "._"))]
    assert not [f for f in found if f.endswith((".part", ".tmp"))]


def test_a_good_download_unpacks_the_layout_and_records_the_sha256(tmp_path):
    with Server() as server:
        root = fetch(tmp_path, server.url)
    assert_complete(tmp_path, root)
    record = download.read_download_record(tmp_path)
    assert record["sha256"] == hashlib.sha256(ZIP).hexdigest()
    assert record["size"] == len(ZIP) and record["url"] == server.url
    assert record["counts"] == COUNTS and record["downloaded"] is True
    assert not (tmp_path / "ChestXRay2017.zip").exists()  # downloaded by the call: deleted
    assert server.requests[0]["Accept-Encoding"] == "identity"
    # the run record of a run on this folder carries the archive's address and SHA-256
    summary = records.dataset_summary(root, False, {})
    assert summary["download"]["sha256"] == record["sha256"]
    assert summary["download"]["url"] == server.url
    assert records.dataset_summary(tmp_path, False, {})["download"] is None  # not a download's


def test_a_dropped_connection_is_resumed_with_a_range_request(tmp_path):
    with Server(drop_after=4096) as server:
        root = fetch(tmp_path, server.url)
    assert len(server.requests) == 2
    assert "Range" not in server.requests[0]
    assert server.requests[1]["Range"] == "bytes=4096-"
    assert_complete(tmp_path, root)
    assert download.read_download_record(tmp_path)["sha256"] == hashlib.sha256(ZIP).hexdigest()


def test_a_wrong_checksum_fails_in_one_line_and_leaves_no_dataset(tmp_path):
    wrong = "0" * 64
    with Server() as server:
        with pytest.raises(DataError) as caught:
            fetch(tmp_path, server.url, expected_sha256=wrong)
        message = str(caught.value)
        assert "\n" not in message
        assert wrong in message and hashlib.sha256(ZIP).hexdigest() in message
        assert "ChestXRay2017.zip.part" in message and "Delete" in message
        assert not (tmp_path / "chest_xray").exists()
        assert download.read_download_record(tmp_path) is None
        assert [p.name for p in tmp_path.iterdir()] == ["ChestXRay2017.zip.part"]
        # the right checksum: the complete .part is taken as it is (416 for the range after it)
        root = fetch(tmp_path, server.url, expected_sha256=hashlib.sha256(ZIP).hexdigest())
    assert server.requests[-1]["Range"] == f"bytes={len(ZIP)}-"
    assert_complete(tmp_path, root)


def test_macos_extras_are_skipped(tmp_path):
    names = zipfile.ZipFile(io.BytesIO(ZIP)).namelist()
    assert any(n.startswith("__MACOSX/") for n in names) and any("/._" in n for n in names)
    with Server() as server:
        root = fetch(tmp_path, server.url)
    assert not [f for f in files_under(tmp_path) if "MACOSX" in f or "/._" in f or "DS_Store" in f]
    assert sum(len(list((root / s / c).iterdir())) for s in COUNTS for c in COUNTS[s]) == 11


def test_a_full_disk_fails_in_one_line_and_keeps_the_bytes_for_resuming(tmp_path, monkeypatch):
    real_write = download._write
    writes = []

    def write_then_fill(handle, data):
        if writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(len(data))
        real_write(handle, data)

    monkeypatch.setattr(download, "_write", write_then_fill)
    with Server() as server:
        with pytest.raises(DataError) as caught:
            fetch(tmp_path, server.url)
        message = str(caught.value)
        assert "\n" not in message
        assert f"The disk holding {tmp_path} is full" in message
        assert f"needs {download._size(len(ZIP) - 1024)} more" in message
        assert "kept in ChestXRay2017.zip.part" in message and "resume" in message
        assert (tmp_path / "ChestXRay2017.zip.part").stat().st_size == 1024
        assert not (tmp_path / "chest_xray").exists()
        monkeypatch.setattr(download, "_write", real_write)  # space freed
        root = fetch(tmp_path, server.url)
    assert server.requests[-1]["Range"] == "bytes=1024-"
    assert_complete(tmp_path, root)


def test_no_network_names_the_manual_route(tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(download.DownloadUnavailable) as caught:
        fetch(tmp_path, f"http://127.0.0.1:{port}/ChestXRay2017.zip")
    message = str(caught.value)
    assert "\n" not in message and "Connection refused" in message
    assert "https://data.mendeley.com/datasets/rscbjbr9sj/2 in a browser" in message
    assert "set CXR_DATA_DIR to its chest_xray folder" in message
    assert not (tmp_path / "chest_xray").exists()


def test_auto_without_mendeley_or_kaggle_credentials_says_so(tmp_path, monkeypatch):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(download, "MENDELEY_URL", f"http://127.0.0.1:{port}/x.zip")
    monkeypatch.setattr(download, "MENDELEY_COUNTS", COUNTS)
    monkeypatch.setattr(download, "kaggle_credentials_present", lambda: False)
    kaggle_calls = []
    monkeypatch.setattr(download, "download_kaggle", kaggle_calls.append)
    with pytest.raises(download.DownloadUnavailable, match="no Kaggle credentials either"):
        download.download_dataset(tmp_path)
    assert kaggle_calls == []
    monkeypatch.setattr(download, "kaggle_credentials_present", lambda: True)
    download.download_dataset(tmp_path)  # then Kaggle's copy
    assert kaggle_calls == [tmp_path]


def test_a_second_call_reuses_the_dataset_without_a_request(tmp_path, monkeypatch):
    with Server() as server:
        first = fetch(tmp_path, server.url)
        monkeypatch.setattr(download, "MENDELEY_URL", server.url)
        monkeypatch.setattr(download, "MENDELEY_COUNTS", COUNTS)
        before = len(server.requests)
        assert fetch(tmp_path, server.url) == first
        assert download.download_dataset(tmp_path) == first
        assert download.download_dataset(tmp_path, "mendeley") == first
        assert len(server.requests) == before
    with pytest.raises(DataError, match="SHA-256"):  # reused, but not the zip asked for
        download.download_dataset(tmp_path, expected_sha256="0" * 64)


def test_an_incomplete_folder_in_the_way_is_left_alone(tmp_path):
    mine = tmp_path / "chest_xray" / "train" / "NORMAL"
    mine.mkdir(parents=True)
    (mine / "my_film.jpeg").write_bytes(b"mine")
    with Server() as server, pytest.raises(DataError, match=r"not the complete dataset \("
                                                           r"train/NORMAL: found 1"):
        fetch(tmp_path, server.url)
    assert server.requests == []
    assert files_under(tmp_path) == ["chest_xray", "chest_xray/train", "chest_xray/train/NORMAL",
                                     "chest_xray/train/NORMAL/my_film.jpeg"]


def test_wrong_counts_name_split_and_class_and_leave_no_dataset(tmp_path):
    expected = {"train": {"NORMAL": 5, "PNEUMONIA": 4}, "test": COUNTS["test"]}
    with Server() as server, pytest.raises(DataError, match="train/NORMAL: found 3, expected 5"
                                           ) as caught:
        download.download_mendeley(tmp_path, url=server.url, expected_counts=expected)
    assert "\n" not in str(caught.value)
    assert files_under(tmp_path) == ["ChestXRay2017.zip"]  # kept, named in the message


def test_an_interrupted_unpack_is_cleaned_and_done_again(tmp_path, monkeypatch):
    (tmp_path / "ChestXRay2017.zip").write_bytes(ZIP)  # the download had finished
    # what a killed process left: a half-unpacked temporary folder, days old
    host = owner_tag().split("-")[0]
    leftover = tmp_path / f".chest_xray.{host}-999999999.abcd1234.tmp"
    (leftover / "chest_xray" / "train" / "NORMAL").mkdir(parents=True)
    (leftover / "chest_xray" / "train" / "NORMAL" / "half.jpeg").write_bytes(b"\xff\xd8")
    old = time.time() - 3 * 24 * 3600
    os.utime(leftover, (old, old))
    # and an interruption now, in the middle of the unpacking
    real_write, writes = download._write, []

    def interrupted(handle, data):
        writes.append(len(data))
        if len(writes) == 5:
            raise KeyboardInterrupt
        real_write(handle, data)

    monkeypatch.setattr(download, "_write", interrupted)
    with Server() as server:
        with pytest.raises(KeyboardInterrupt):
            fetch(tmp_path, server.url)
        assert not leftover.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ChestXRay2017.zip"]
        monkeypatch.setattr(download, "_write", real_write)
        root = fetch(tmp_path, server.url)
        assert server.requests == []  # the zip in the folder is used
    assert (tmp_path / "ChestXRay2017.zip").exists()  # not downloaded by the call: kept
    assert download.read_download_record(tmp_path)["downloaded"] is False
    (tmp_path / "ChestXRay2017.zip").unlink()
    assert_complete(tmp_path, root)
