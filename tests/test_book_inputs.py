"""tools/book_inputs.py: the book workflow's fetch step, and its fallback to the quick book."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from helpers import ROOT
from torchvision import models

from cxr_support import download
from cxr_support.errors import DataError

spec = importlib.util.spec_from_file_location("book_inputs", ROOT / "tools" / "book_inputs.py")
book_inputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(book_inputs)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torchvision's cache in a tmp folder, with stand-in (random) weights under the real names."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    for arch in book_inputs.ARCHS:
        name = models.get_model_weights(arch).DEFAULT.url.rsplit("/", 1)[-1]
        torch.save(models.get_model(arch, weights=None).state_dict(), folder / name)
    return folder


def test_with_data_and_weights_the_real_book_is_built(tmp_path, hub, capsys):
    """A dataset on disk and the weights in the cache: CXR_DATA_DIR goes to the env file, and
    nothing asks for quick mode (a CPU with the weights runs the feature extractor)."""
    data = tmp_path / "chest_xray"
    env_file = tmp_path / "github_env"
    assert book_inputs.main(["--data-dir", str(data), "--env-file", str(env_file)]) == 0
    assert env_file.read_text() == f"CXR_DATA_DIR={data}\n"
    assert "Building the real book" in capsys.readouterr().out
    assert book_inputs.fetch_weights("resnet50") == hub / "resnet50-11ad3fa6.pth"


def test_a_failed_download_builds_the_quick_book_and_says_why(tmp_path, hub, monkeypatch,
                                                             capsys):
    def offline(target, *args, **kwargs):
        raise DataError("Mendeley Data cannot be reached (simulated)")

    monkeypatch.setattr(download, "download_dataset", offline)
    env_file = tmp_path / "github_env"
    env_file.write_text("EARLIER=1\n")
    assert book_inputs.main(["--data", str(tmp_path / "data"), "--env-file", str(env_file)]) == 0
    assert env_file.read_text() == "EARLIER=1\nCXR_QUICK=1\n"  # appended, never replaced
    out = capsys.readouterr().out
    assert out.startswith("::warning title=Quick book::")
    assert "Mendeley Data cannot be reached (simulated)" in out and "\n" not in out.strip()


def test_weights_that_cannot_be_fetched_build_the_quick_book(tmp_path, monkeypatch):
    def no_weights(self, *args, **kwargs):
        raise OSError("no route to host (simulated)")

    monkeypatch.setattr(models.WeightsEnum, "get_state_dict", no_weights)
    settings, why = book_inputs.book_settings(tmp_path, data_dir=tmp_path)
    assert settings == {"CXR_QUICK": "1"} and "no route to host (simulated)" in why
