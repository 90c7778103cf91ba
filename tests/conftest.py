"""Fixtures shared by the unit tests. The network guard applies to every test module here."""

from __future__ import annotations

import copy
import datetime as dt
import socket
import types
from pathlib import Path

import pytest
import torch
from helpers import LARGE_COUNTS, TINY_COUNTS, make_tree

import cxr_utils as cxr
from cxr_support import pixel_cache, records
from cxr_support.pixel_cache import decode_files
from cxr_support.synthetic import make_synthetic_dataset


@pytest.fixture
def tiny_root(tmp_path: Path) -> Path:
    """A tiny Kaggle-layout dataset in tmp_path/data/chest_xray.

    It has train/val/test folders, each with NORMAL and PNEUMONIA.
    """
    return make_tree(tmp_path / "data" / "chest_xray")


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    """Count calls of cxr_utils.decode_files; the list grows by one per call.

    The real decode_files still runs.
    """
    calls: list[int] = []
    real = decode_files

    def counting(paths, *args, **kwargs):
        calls.append(len(paths))
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(pixel_cache, "decode_files", counting)
    return calls


@pytest.fixture(scope="module")
def synthetic_tiny(tmp_path_factory) -> Path:
    """The synthetic sample with tiny counts (seed 42), generated once for this module."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), seed=42, counts=TINY_COUNTS)


@pytest.fixture(scope="module")
def synthetic_large(tmp_path_factory) -> Path:
    """A larger synthetic sample (60 training patients), generated once for this module."""
    return make_synthetic_dataset(
        tmp_path_factory.mktemp("synthetic-large"), seed=42, counts=LARGE_COUNTS
    )



@pytest.fixture(scope="module", autouse=True)
def no_external_network():
    """Refuse every connection that is not to 127.0.0.1.

    So no test can download anything by accident.
    """

    real_connect = socket.socket.connect

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] != "127.0.0.1":
            raise OSError(f"test guard: network access to {address!r} is not allowed")
        return real_connect(sock, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", guarded_connect)
        yield


@pytest.fixture(scope="module", autouse=True)
def no_cached_weights(tmp_path_factory):
    """An empty torch hub folder.

    So ImageNet weights downloaded on this machine earlier change no default.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch-home")))
        yield


@pytest.fixture(scope="module")
def base_model() -> cxr.PneumoniaCnnModel:
    """One randomly initialised PneumoniaCnnModel (pos_weight 2) for the whole module.

    Do not modify it.
    """
    torch.manual_seed(0)
    return cxr.PneumoniaCnnModel(pos_weight=2.0).eval()


@pytest.fixture
def model(base_model) -> cxr.PneumoniaCnnModel:
    """A private copy of the module's model that a test may train, freeze or change."""
    return copy.deepcopy(base_model)


@pytest.fixture
def clock(monkeypatch) -> dict:
    """A settable UTC clock for records.new_run_id: set clock['now'] to a datetime."""
    clock = {"now": dt.datetime(2025, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)}

    class FakeDatetime(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return clock["now"]

    monkeypatch.setattr(
        records, "dt", types.SimpleNamespace(datetime=FakeDatetime, timezone=dt.timezone)
    )
    return clock
