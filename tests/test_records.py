"""Unit tests for run records and the optional Jovian logging of cxr_utils.

Jovian is never contacted: HOME points into ``tmp_path`` (so the credentials file is a
test file), the "Jovian API" is a small HTTP server on 127.0.0.1, jovian's upload calls
are replaced by recorders, and a guard refuses any connection that is not to 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import http.server
import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import pytest

import cxr_utils as cxr
from cxr_support import atomic_files, records
from cxr_support.jovian_transport import jovian_credentials_path, jovian_status
from cxr_support.records import create_record, list_records, new_run_id, read_record, update_record
from cxr_utils import compare_runs

API_KEY = "sk-test-SECRET-1234"

EXPECTED_HYPERPARAMS = {
    "arch": "resnet50",
    "weights": "random-init",
    "epochs": 3,
    "lr": 0.002,
    "scheduler": "one-cycle",
    "weight_decay": 0.0001,
    "grad_clip": 0.1,
    "opt": "Adam",
}
# Training metrics are those of make_record()'s best epoch (lowest val_loss: epoch 1 of 0-2),
# whose weights fit() keeps; the last epoch (train_loss 0.5, val_loss 0.6, val_acc 0.7) differs
# in all three.
EXPECTED_METRICS = {
    "train_loss": 0.7,
    "val_loss": 0.55,
    "val_accuracy": 0.65,
    "test_accuracy": 0.8,
    "test_sensitivity": 0.9,
    "test_specificity": 0.6,
    "test_roc_auc": 0.85,
    "threshold": 0.42,
}

# ---------------------------------------------------------------------- shared fixtures and helpers

@pytest.fixture(scope="module", autouse=True)
def only_localhost():
    """For the whole module: no proxies, no name lookups, no connections except to 127.0.0.1."""
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            raise OSError(f"test guard: network access to {address!r} is not allowed")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in ("127.0.0.1", b"127.0.0.1", "localhost", None):
            raise socket.gaierror(f"test guard: no name lookups ({host!r})")
        return real_getaddrinfo(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        for var in (
            "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"
        ):
            mp.delenv(var, raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        yield


@pytest.fixture(scope="module")
def jovian(only_localhost):
    """The jovian package, imported with the network guard on.

    Its import-time update check cannot go out.
    """
    import jovian

    return jovian


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh HOME inside tmp_path, with CXR_JOVIAN unset."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CXR_JOVIAN", raising=False)
    assert jovian_credentials_path() == home / ".jovian" / "credentials.json"
    return home


def write_credentials(home: Path, api_url: str, api_key: str | None = API_KEY) -> Path:
    """Write ~/.jovian/credentials.json the way `jovian configure` does."""
    path = home / ".jovian" / "credentials.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    creds = {"API_URL": api_url, "WEBAPP_URL": "http://127.0.0.1/", "ORG_ID": "public"}
    if api_key is not None:
        creds["API_KEY"] = api_key
    path.write_text(json.dumps(creds))
    return path


class FakeJovianApi:
    """An HTTP server on 127.0.0.1 answering GET /user/profile.

    It answers ``status`` for the right key, 401 otherwise.
    """

    def __init__(self, status: int = 200):
        self.status = status
        self.requests: list[tuple[str, str | None]] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                auth = self.headers.get("Authorization")
                api.requests.append((self.path, auth))
                ok = self.path == "/user/profile" and auth == f"Bearer {API_KEY}"
                code = api.status if ok else 401
                body = json.dumps(
                    {"data": {"username": "tester"}} if code == 200 else {"message": "unauthorized"}
                ).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def fake_api():
    """A running FakeJovianApi (status 200 unless a test changes ``fake_api.status``)."""
    api = FakeJovianApi()
    yield api
    api.close()


def closed_port_url() -> str:
    """The URL of a 127.0.0.1 port that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def jovian_calls(jovian, monkeypatch) -> list[tuple[str, tuple, dict]]:
    """Replace jovian.log_hyperparams/log_metrics/commit by recorders.

    The list gets (name, args, kwargs).
    """
    calls: list[tuple[str, tuple, dict]] = []
    for name in ("log_hyperparams", "log_metrics", "commit"):
        monkeypatch.setattr(
            jovian, name, lambda *args, _name=name, **kwargs: calls.append((_name, args, kwargs))
        )
    return calls


@pytest.fixture
def forbid_jovian_calls(jovian, monkeypatch):
    """Make any call to jovian's upload functions fail the test."""
    for name in ("log_hyperparams", "log_metrics", "commit"):
        monkeypatch.setattr(
            jovian,
            name,
            lambda *args, _name=name, **kwargs: pytest.fail(f"jovian.{_name} was called"),
        )


def make_record(run_id: str = "20250101-120000-abcd", synthetic: bool = True) -> dict:
    """A run record shaped like the one notebook 02 writes and notebook 03 completes."""
    return {
        "run_id": run_id,
        "created": "2025-01-01T12:00:00+00:00",
        "config": {"image_size": 64, "run_dir": "/somewhere"},
        "dataset": {"synthetic": synthetic},
        "model": {
            "arch": "resnet50", "pretrained": False, "train_mode": "finetune", "pos_weight": 0.5
        },
        "hyperparams": {
            "arch": "resnet50",
            "weights": "random-init",
            "epochs": 3,
            "max_lr": 0.002,
            "scheduler": "one-cycle",
            "weight_decay": 0.0001,
            "grad_clip": 0.1,
            "opt": "Adam",
            "batch_size": 32,
            "image_size": 64,
        },
        "history": [  # the best epoch (1) is neither the first nor the last
            {"epoch": 0, "train_loss": 0.9, "val_loss": 0.65, "val_acc": 0.6},
            {"epoch": 1, "train_loss": 0.7, "val_loss": 0.55, "val_acc": 0.65},
            {"epoch": 2, "train_loss": 0.5, "val_loss": 0.6, "val_acc": 0.7},
        ],
        "test": {
            "chosen_threshold": {
                "accuracy": 0.8,
                "sensitivity": 0.9,
                "specificity": 0.6,
                "roc_auc": 0.85,
                "threshold": 0.42,
            }
        },
    }


def assert_no_secret(*texts: object) -> None:
    """The API key appears in none of the given texts or values."""
    for text in texts:
        assert API_KEY not in str(text)


def files_containing_secret(root: Path, skip: Path) -> list[Path]:
    """Every file under root (but ``skip``, the credentials file) whose bytes hold the API key."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and p != skip and API_KEY.encode() in p.read_bytes()
    ]


# ----------------------------------------------------------------------------- jovian import


# ----------------------------------------------------------------------------- records


def test_create_record_and_read_record_round_trip(tmp_path):
    """create_record writes records/<run_id>.json (no temp files left).

    read_record gives the record back.
    """
    # a Path is stored as text
    record = {**make_record(), "checkpoint": tmp_path / "checkpoints" / "x.pt"}
    path = create_record(tmp_path, record)
    assert path == tmp_path / "records" / "20250101-120000-abcd.json"
    assert os.listdir(path.parent) == [path.name]
    loaded = read_record(path)
    assert loaded == {**make_record(), "checkpoint": str(tmp_path / "checkpoints" / "x.pt")}


def test_create_record_never_overwrites(tmp_path):
    """A second create_record with the same run_id raises FileExistsError.

    It leaves the first record intact.
    """
    path = create_record(tmp_path, make_record())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="never replaces an existing one"):
        create_record(tmp_path, {**make_record(), "history": []})
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_update_record_adds_sections(tmp_path):
    """update_record adds or replaces top-level sections, keeps the others; no temp files remain."""
    path = create_record(tmp_path, make_record())
    updated = update_record(
        path,
        test={"naive_0.5": {"accuracy": 0.5}},
        threshold={"value": 0.3, "chosen_on": "validation split"},
    )
    expected = {
        **make_record(),
        "test": {"naive_0.5": {"accuracy": 0.5}},
        "threshold": {"value": 0.3, "chosen_on": "validation split"},
    }
    assert updated == expected
    assert read_record(path) == expected
    assert os.listdir(path.parent) == [path.name]


def test_update_record_failure_leaves_record_intact(tmp_path, monkeypatch):
    """If update_record's write fails at the final rename, the old record is untouched.

    No temp file remains.
    """
    path = create_record(tmp_path, make_record())
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("simulated disk failure")

    monkeypatch.setattr(atomic_files.os, "replace", boom)
    with pytest.raises(OSError, match="simulated"):
        update_record(path, test={"x": 1})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == [path.name]


def test_list_records_skips_unreadable_json_with_warning(tmp_path):
    """list_records returns the readable records in run-id order.

    It warns about a broken file, naming it.
    """
    create_record(tmp_path, make_record("20250102-000000-0002"))
    create_record(tmp_path, make_record("20250101-000000-0001"))
    (tmp_path / "records" / "20250103-000000-broken.json").write_text('{"run_id": "half written')
    with pytest.warns(UserWarning, match="20250103-000000-broken.json"):
        records = list_records(tmp_path)
    assert [r["run_id"] for r in records] == ["20250101-000000-0001", "20250102-000000-0002"]


def test_list_records_skips_non_utf8_file(tmp_path):
    """A records/*.json file of binary garbage is skipped with a warning.

    Like any other unreadable record.
    """
    create_record(tmp_path, make_record())
    (tmp_path / "records" / "garbage.json").write_bytes(b"\xff\xfe\x00\x81 not text")
    with pytest.warns(UserWarning, match="garbage.json"):
        records = list_records(tmp_path)
    assert [r["run_id"] for r in records] == ["20250101-120000-abcd"]


def test_compare_runs_rows(tmp_path):
    """compare_runs gives one row per record.

    Its columns: data, network, weights, mode, size, epochs, learning rate, class weight,
    best val loss, test metrics.
    """
    synthetic = make_record("run-a", synthetic=True)
    real = make_record("run-b", synthetic=False)
    real["model"] = {
        "arch": "resnet18", "pretrained": True,
        "train_mode": "feature_extractor", "pos_weight": 0.35,
    }
    real["hyperparams"]["max_lr"] = 1e-3
    real["config"]["image_size"] = 224
    real["history"] = [
        {"epoch": 0, "val_loss": 0.4, "val_acc": 0.8},
        {"epoch": 1, "val_loss": 0.45, "val_acc": 0.82},
    ]
    real["test"] = {
        "chosen_threshold": {
            "accuracy": 0.91, "sensitivity": 0.95, "specificity": 0.85, "roc_auc": 0.96
        }
    }
    rows = compare_runs([synthetic, real])
    assert rows == [
        {
            "run_id": "run-a",
            "data": "synthetic",
            "arch": "resnet50",
            "weights": "random",
            "mode": "finetune",
            "size": 64,
            "epochs": 3,
            "max_lr": 2e-3,
            "processes": 1,
            "batch_per_step": 32,
            "pos_weight": 0.5,
            "best_val_loss": 0.55,
            "test_acc": 0.8,
            "test_sens": 0.9,
            "test_spec": 0.6,
            "test_auc": 0.85,
        },
        {
            "run_id": "run-b",
            "data": "real",
            "arch": "resnet18",
            "weights": "imagenet",
            "mode": "feature_extractor",
            "size": 224,
            "epochs": 2,
            "max_lr": 1e-3,
            "processes": 1,
            "batch_per_step": 32,
            "pos_weight": 0.35,
            "best_val_loss": 0.4,
            "test_acc": 0.91,
            "test_sens": 0.95,
            "test_spec": 0.85,
            "test_auc": 0.96,
        },
    ]


def test_compare_runs_record_without_history():
    """A record with no history (not trained yet) shows 0 epochs and a NaN best val loss."""
    row = compare_runs([{"run_id": "untrained", "history": []}])[0]
    assert row["epochs"] == 0
    assert row["best_val_loss"] != row["best_val_loss"]  # NaN


def test_new_run_id_unique_and_sortable(clock):
    """new_run_id is YYYYMMDD-HHMMSS-ffffff-<12 hex>.

    Later runs sort later (zero-padded); same-second runs differ.
    """
    ids = []
    for moment in [
        (2024, 12, 31, 23, 59, 59),
        (2025, 1, 1, 0, 0, 0),
        (2025, 1, 1, 9, 5, 3),
        (2025, 1, 1, 10, 0, 0),
        (2025, 10, 2, 0, 0, 0),
    ]:
        clock["now"] = dt.datetime(*moment, tzinfo=dt.timezone.utc)
        ids.append(new_run_id())
    assert sorted(ids) == ids
    assert ids[0].startswith("20241231-235959-") and ids[2].startswith("20250101-090503-")
    assert all(re.fullmatch(records.RUN_ID_PATTERN, i) for i in ids), ids
    # the fake clock stands still: only the random part differs
    same_second = [new_run_id() for _ in range(8)]
    assert len(set(same_second)) == 8


# ----------------------------------------------------------------------------- Jovian gating


def test_jovian_status_without_credentials(home):
    """No credentials file: not ready, and the reason says to run `jovian configure`."""
    ready, reason = jovian_status()
    assert ready is False and "`jovian configure`" in reason and str(home) in reason
    ready, reason = jovian_status(creds_path=home / "elsewhere.json")
    assert ready is False and "`jovian configure`" in reason and "elsewhere.json" in reason


@pytest.mark.parametrize("content", ["{not json", json.dumps({"API_URL": "http://127.0.0.1:9/"})])
def test_jovian_status_unusable_credentials(home, content):
    """An unreadable credentials file or one without API_KEY: not ready.

    The reason says to run `jovian configure`.
    """
    path = home / ".jovian" / "credentials.json"
    path.parent.mkdir()
    path.write_text(content)
    ready, reason = jovian_status()
    assert ready is False and "jovian configure" in reason


@pytest.mark.parametrize("best", [0, 1, 2])
def test_jovian_payload_takes_training_metrics_from_lowest_val_loss_epoch(best):
    """train_loss, val_loss and val_accuracy all come from the epoch with the lowest val_loss.

    Wherever that epoch is.
    """
    record = make_record()
    losses = [0.8, 0.7, 0.75]
    losses[best] = 0.3
    record["history"] = [
        {"epoch": i, "train_loss": 1.0 - 0.1 * i, "val_loss": loss, "val_acc": 0.5 + 0.1 * i}
        for i, loss in enumerate(losses)
    ]
    metrics = cxr.jovian_payload(record)["metrics"]
    assert (metrics["train_loss"], metrics["val_loss"], metrics["val_accuracy"]) == (
        1.0 - 0.1 * best, 0.3, 0.5 + 0.1 * best
    )
    assert {k: metrics[k] for k in ("test_accuracy", "test_roc_auc", "threshold")} == {
        "test_accuracy": 0.8,
        "test_roc_auc": 0.85,
        "threshold": 0.42,
    }


def test_jovian_payload_skips_nan_val_loss_epoch_like_fit():
    """A diverged first epoch (val_loss NaN) is not the best epoch.

    fit keeps epoch 1's weights, so the payload reports epoch 1.
    """
    record = make_record()
    record["history"] = [
        {"epoch": 0, "train_loss": float("nan"), "val_loss": float("nan"), "val_acc": 0.5},
        {"epoch": 1, "train_loss": 0.7, "val_loss": 0.55, "val_acc": 0.65},
    ]
    metrics = cxr.jovian_payload(record)["metrics"]
    assert (metrics["train_loss"], metrics["val_loss"], metrics["val_accuracy"]) == (
        0.7, 0.55, 0.65
    )


def test_log_to_jovian_without_credentials_prints_payload(home, forbid_jovian_calls, capsys):
    """Without credentials log_to_jovian prints what would have been logged.

    It returns logged False and uploads nothing.
    """
    result = cxr.log_to_jovian(make_record(), project="cxr-test")
    out = capsys.readouterr().out
    assert result["logged"] is False and "jovian configure" in result["reason"]
    assert result["payload"] == {"hyperparams": EXPECTED_HYPERPARAMS, "metrics": EXPECTED_METRICS}
    assert "would have been logged" in out
    assert '"test_roc_auc": 0.85' in out and '"opt": "Adam"' in out


def test_jovian_ready_logs_expected_payload(home, fake_api, jovian_calls, capsys):
    """With a valid key and a reachable API, status is ready.

    log_to_jovian then uploads the blog post's payload.
    """
    write_credentials(home, fake_api.url)
    ready, reason = jovian_status()
    assert ready is True, reason
    assert fake_api.requests == [("/user/profile", f"Bearer {API_KEY}")]
    outputs = [home / "model.pt", home / "record.json"]
    result = cxr.log_to_jovian(make_record(), project="cxr-test", outputs=outputs)
    assert result["logged"] is True
    assert [name for name, _, _ in jovian_calls] == ["log_hyperparams", "log_metrics", "commit"]
    (_, hp_args, _), (_, metric_args, _), (_, commit_args, commit_kwargs) = jovian_calls
    assert hp_args == (EXPECTED_HYPERPARAMS,)
    assert metric_args == (EXPECTED_METRICS,)
    assert commit_args == () and commit_kwargs["project"] == "cxr-test"
    assert commit_kwargs["outputs"] == [str(p) for p in outputs]
    assert_no_secret(result, capsys.readouterr())


def test_log_to_jovian_without_commit(home, fake_api, jovian_calls):
    """commit=False logs hyperparameters and metrics but does not commit."""
    write_credentials(home, fake_api.url)
    assert cxr.log_to_jovian(make_record(), project="cxr-test", commit=False)["logged"] is True
    assert [name for name, _, _ in jovian_calls] == ["log_hyperparams", "log_metrics"]


def test_jovian_refused_key(home, fake_api, forbid_jovian_calls, capsys):
    """An API answering 401 means not ready; the message says the key was refused.

    Nothing is uploaded.
    """
    fake_api.status = 401
    write_credentials(home, fake_api.url)
    ready, reason = jovian_status()
    assert ready is False and "refused" in reason and "401" in reason
    result = cxr.log_to_jovian(make_record(), project="cxr-test")
    assert result["logged"] is False and "refused" in result["reason"]
    assert len(fake_api.requests) == 2
    assert_no_secret(result, capsys.readouterr())


def test_jovian_service_down(home, tmp_path, forbid_jovian_calls, capsys):
    """A closed port: not ready quickly, with a clear message and no traceback.

    The local record file is unchanged.
    """
    write_credentials(home, closed_port_url())
    record_path = create_record(tmp_path / "run", make_record())
    before = record_path.read_bytes()
    start = time.perf_counter()
    result = cxr.log_to_jovian(read_record(record_path), project="cxr-test", timeout_s=2.0)
    assert time.perf_counter() - start < 10
    captured = capsys.readouterr()
    assert (
        result["logged"] is False
        and "did not answer" in result["reason"]
        and "nothing was uploaded" in result["reason"]
    )
    assert "would have been logged" in captured.out
    assert "Traceback" not in captured.out + captured.err
    assert record_path.read_bytes() == before
    assert_no_secret(result, captured)


def test_jovian_service_that_never_answers_times_out(home, forbid_jovian_calls):
    """A server that accepts the connection but never answers.

    The status is not ready within about the given timeout.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        write_credentials(home, f"http://127.0.0.1:{listener.getsockname()[1]}/")
        start = time.perf_counter()
        ready, reason = jovian_status(timeout_s=0.5)
        elapsed = time.perf_counter() - start
    assert ready is False and "did not answer" in reason
    assert elapsed < 5


def test_jovian_upload_failure_is_reported_not_raised(home, fake_api, jovian, monkeypatch, capsys):
    """If a jovian call raises, log_to_jovian returns logged False.

    It says the local record is intact.
    """
    write_credentials(home, fake_api.url)
    monkeypatch.setattr(jovian, "log_hyperparams", lambda *a, **k: None)

    def failing_log_metrics(*args, **kwargs):
        raise RuntimeError(f"HTTP 500 from server, request had Authorization: Bearer {API_KEY}")

    monkeypatch.setattr(jovian, "log_metrics", failing_log_metrics)
    monkeypatch.setattr(
        jovian, "commit", lambda *a, **k: pytest.fail("commit after a failed upload")
    )
    result = cxr.log_to_jovian(make_record(), project="cxr-test")
    captured = capsys.readouterr()
    assert result["logged"] is False
    assert "local record is intact" in result["reason"] and "RuntimeError" in result["reason"]
    assert "local record is intact" in captured.out
    assert_no_secret(result, captured)


def test_cxr_jovian_0_disables(home, fake_api, forbid_jovian_calls, monkeypatch):
    """CXR_JOVIAN=0 switches Jovian off even with valid credentials.

    No request is even made.
    """
    write_credentials(home, fake_api.url)
    monkeypatch.setenv("CXR_JOVIAN", "0")
    ready, reason = jovian_status()
    assert ready is False and "CXR_JOVIAN=0" in reason
    assert cxr.log_to_jovian(make_record(), project="cxr-test")["logged"] is False
    assert fake_api.requests == []


def test_api_key_never_leaks(home, tmp_path, fake_api, jovian, monkeypatch, capsys):
    """Across ready, refused, down and failing uploads the key never shows.

    Not in output, return values or record files.
    """
    creds = write_credentials(home, fake_api.url)
    run_dir = tmp_path / "run"
    record_path = create_record(run_dir, make_record())
    seen: list[object] = []
    for name in ("log_hyperparams", "log_metrics", "commit"):
        monkeypatch.setattr(jovian, name, lambda *a, **k: seen.append((a, k)))
    results = [
        jovian_status(),
        cxr.log_to_jovian(make_record(), project="cxr-test", outputs=[record_path]),
    ]
    fake_api.status = 403
    results += [jovian_status(), cxr.log_to_jovian(make_record(), project="cxr-test")]
    write_credentials(home, closed_port_url())
    results += [
        jovian_status(timeout_s=2.0),
        cxr.log_to_jovian(make_record(), project="cxr-test", timeout_s=2.0),
    ]
    write_credentials(home, fake_api.url)
    fake_api.status = 200

    def failing_commit(*args, **kwargs):
        raise ConnectionError(f"upload refused for key {API_KEY}")

    monkeypatch.setattr(jovian, "commit", failing_commit)
    results.append(cxr.log_to_jovian(make_record(), project="cxr-test"))
    update_record(record_path, jovian=results[-1])
    captured = capsys.readouterr()
    assert [r[0] if isinstance(r, tuple) else r["logged"] for r in results] == [
        True, True, False, False, False, False, False
    ]
    # the key was really used
    assert any(auth == f"Bearer {API_KEY}" for _, auth in fake_api.requests)
    assert_no_secret(captured.out, captured.err, *results, *seen)
    assert files_containing_secret(tmp_path, skip=creds) == []
