"""Edge cases of Jovian logging (issue 11, class 4).

Odd credentials, and servers that trickle or stall.

Logging must never raise, never hang past its deadline, and never print the key. The
"Jovian API" is a local HTTP server on 127.0.0.1 (as in test_records.py); the stalled-upload
test drives the real jovian client against it.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

import cxr_utils as cxr
from cxr_support.jovian_transport import jovian_status, run_with_deadline

API_KEY = "sk-test-EDGE-SECRET-5678"


def make_record() -> dict:
    """A small run record with hyperparameters, history and test metrics."""
    return {
        "run_id": "20250101-120000-000001-0123456789ab",
        "hyperparams": {"arch": "resnet50", "epochs": 1, "max_lr": 1e-3, "opt": "Adam"},
        "history": [{"epoch": 0, "train_loss": 0.7, "val_loss": 0.6, "val_acc": 0.7}],
        "test": {"chosen_threshold": {"accuracy": 0.8, "roc_auc": 0.85, "threshold": 0.4}},
    }


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh HOME with CXR_JOVIAN unset and no proxies."""
    home = tmp_path / "home"
    (home / ".jovian").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CXR_JOVIAN", raising=False)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return home


def write_credentials(home: Path, content) -> Path:
    """Write ~/.jovian/credentials.json: bytes as they are, anything else as JSON."""
    path = home / ".jovian" / "credentials.json"
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


class SlowJovianApi:
    """127.0.0.1 server: GET /user/profile answers 200; POST stalls until closed.

    The answer to GET comes all at once, or trickled a byte at a time.
    """

    def __init__(self, trickle_s: float | None = None):
        self.release = threading.Event()
        self.requests: list[tuple[str, str]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                api.requests.append(("GET", self.path))
                body = json.dumps(
                    {"data": {"username": "tester", "padding": " " * (2000 if trickle_s else 0)}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not trickle_s:
                    self.wfile.write(body)
                    return
                # one byte per trickle_s: every read is quick, the whole answer takes minutes
                for byte in body:
                    if api.release.wait(trickle_s):
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()

            def do_POST(self):
                api.requests.append(("POST", self.path))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                api.release.wait(60)  # the upload stalls: no answer until the test ends

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def assert_no_secret(*texts: object) -> None:
    for text in texts:
        assert API_KEY not in str(text)


# ----------------------------------------------------------------------------- the deadline itself


def test_run_with_deadline_returns_none_when_the_work_finishes():
    """Work that finishes in time gives None (no failure) and really ran."""
    done = []
    assert run_with_deadline(lambda: done.append(1), 5) is None and done == [1]


def test_run_with_deadline_reports_only_the_kind_of_error():
    """A failing call gives its exception's type name.

    Never its message, which may quote the key.
    """

    def fail():
        raise ConnectionError(f"refused for Bearer {API_KEY}")

    assert run_with_deadline(fail, 5) == "ConnectionError"


def test_run_with_deadline_abandons_work_that_overruns():
    """Work that does not finish is abandoned at the deadline, with a reason that says so."""
    release = threading.Event()
    start = time.perf_counter()
    reason = run_with_deadline(lambda: release.wait(30), 0.3)
    elapsed = time.perf_counter() - start
    release.set()
    assert reason is not None and "within 0.3 s" in reason and "abandoned" in reason
    assert elapsed < 3


# ---------------------------------------------------------------------------- odd credentials files


@pytest.mark.parametrize(
    "content",
    [[], None, 42, "a string", [API_KEY]],
    ids=["list", "null", "number", "string", "key-in-list"],
)
def test_credentials_that_are_json_but_not_an_object(home, content, capsys):
    """Valid JSON that is not an object: not ready, and the reason names the file and the fix.

    Nothing raises or leaks.
    """
    path = write_credentials(home, content)
    ready, reason = jovian_status()
    assert ready is False and str(path) in reason and "jovian configure" in reason
    result = cxr.log_to_jovian(make_record(), project="cxr-test")
    assert result["logged"] is False
    assert_no_secret(reason, result, capsys.readouterr())


@pytest.mark.parametrize("key", [12345, [API_KEY], {"key": API_KEY}, True])
def test_api_key_that_is_not_text(home, key, capsys):
    """An API_KEY that is a number, list, object or boolean: not ready, with a reason.

    No exception, no leak.
    """
    write_credentials(home, {"API_KEY": key, "API_URL": "http://127.0.0.1:9/"})
    ready, reason = jovian_status()
    assert ready is False and "not text" in reason
    assert cxr.log_to_jovian(make_record(), project="cxr-test")["logged"] is False
    assert_no_secret(reason, capsys.readouterr())


def test_credentials_file_of_binary_garbage(home):
    """A credentials file that is not UTF-8 text is unreadable, not a crash."""
    write_credentials(home, b"\xff\xfe\x00garbage")
    ready, reason = jovian_status()
    assert ready is False and "unreadable" in reason


@pytest.mark.parametrize(("value", "ready_word"), [("off", "switched off"), ("maybe", "not valid")])
def test_cxr_jovian_values_are_checked(home, monkeypatch, value, ready_word):
    """CXR_JOVIAN=off switches Jovian off like 0.

    A value that means nothing is named as invalid (never silently on).
    """
    write_credentials(home, {"API_KEY": API_KEY, "API_URL": "http://127.0.0.1:9/"})
    monkeypatch.setenv("CXR_JOVIAN", value)
    ready, reason = jovian_status()
    assert ready is False and ready_word in reason and "CXR_JOVIAN" in reason and value in reason


# -------------------------------------------------------------------- servers that trickle or stall


def test_profile_check_that_trickles_is_bounded_by_the_deadline(home, capsys):
    """A server that sends its answer a byte at a time is given up on after timeout_s in all.

    Each of its reads is quick.
    """
    api = SlowJovianApi(trickle_s=0.1)
    try:
        write_credentials(home, {"API_KEY": API_KEY, "API_URL": api.url})
        start = time.perf_counter()
        result = cxr.log_to_jovian(make_record(), project="cxr-test", timeout_s=1.0)
        elapsed = time.perf_counter() - start
    finally:
        api.close()
    assert ("GET", "/user/profile") in api.requests  # the server was really asked
    assert (
        result["logged"] is False
        and "did not answer" in result["reason"]
        and "within 1 s" in result["reason"]
    )
    assert elapsed < 5  # the trickle alone would last over 3 minutes
    assert_no_secret(result, capsys.readouterr())


def test_upload_that_stalls_is_bounded_by_the_deadline(home, monkeypatch, capsys):
    """The profile check passes, then the real client's upload stalls (it has no timeout).

    The result: not logged, within the deadline.
    """
    from jovian.utils import credentials

    # the client read HOME when it was imported
    monkeypatch.setattr(credentials, "CONFIG_DIR", str(home / ".jovian"))
    api = SlowJovianApi()
    try:
        write_credentials(
            home,
            {"API_KEY": API_KEY, "API_URL": api.url, "WEBAPP_URL": api.url, "ORG_ID": "public"},
        )
        start = time.perf_counter()
        result = cxr.log_to_jovian(
            make_record(), project="cxr-test", commit=False, timeout_s=2.0, upload_timeout_s=1.5
        )
        elapsed = time.perf_counter() - start
    finally:
        api.close()
    # jovian.log_hyperparams really reached the server
    assert ("POST", "/data/record") in api.requests
    assert (
        result["logged"] is False
        and "within 1.5 s" in result["reason"]
        and "local record is intact" in result["reason"]
    )
    assert elapsed < 6
    assert_no_secret(result, capsys.readouterr())


def test_jovian_status_never_waits_longer_than_its_timeout(home, monkeypatch):
    """Whatever the HTTP client does, jovian_status returns after about timeout_s.

    Here the client blocks for ever.
    """
    write_credentials(home, {"API_KEY": API_KEY, "API_URL": "http://127.0.0.1:9/"})
    block = threading.Event()
    import requests

    monkeypatch.setattr(requests, "get", lambda *args, **kwargs: block.wait(60))
    start = time.perf_counter()
    ready, reason = jovian_status(timeout_s=0.5)
    elapsed = time.perf_counter() - start
    block.set()
    assert ready is False and "did not answer" in reason and elapsed < 3
