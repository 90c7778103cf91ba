"""tools/build_book.py without building: which record, what the pages say about it, links.

These need no book extra; tests/test_book.py builds the whole book and reads it in Chromium.
"""

from __future__ import annotations

import importlib
import json
import sys

import nbformat
from helpers import ROOT

sys.path.insert(0, str(ROOT / "tools"))  # build_book imports notebook_hygiene beside it
build_book = importlib.import_module("build_book")

REPO = "https://github.com/owner/name"
RUN_A = "20250101-120000-000001-aaaaaaaaaaaa"
RUN_B = "20250101-120000-000002-bbbbbbbbbbbb"


def record(synthetic: bool, pretrained: bool, run_id: str = RUN_A) -> dict:
    """A run record with the sections the book reads."""
    return {
        "run_id": run_id, "created": "2025-01-01T12:00:00+00:00", "git_commit": "0123456789abcdef",
        "config": {"quick": False, "epochs": 8, "image_size": 224, "run_dir": "/somewhere"},
        "environment": {"device": "cuda", "gpu": "NVIDIA H200", "cpu_count": 16,
                        "python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1"},
        "dataset": {"root": "/data/chest_xray", "synthetic": synthetic,
                    "counts": {"train": {"NORMAL": 1207, "PNEUMONIA": 3488}},
                    "file_list_sha256": "f" * 64},
        "model": {"arch": "resnet50", "train_mode": "finetune", "pretrained": pretrained,
                  "weights": "ImageNet weights" if pretrained else "random init (offline)"},
        "hyperparams": {"image_size": 224, "precision": "bf16"},
    }


def test_real_data_and_imagenet_weights_get_no_banner_but_every_fact():
    provenance = build_book.describe_run(record(synthetic=False, pretrained=True))
    assert provenance.warnings == [] and build_book.banner_html(provenance) == ""
    box = build_book.provenance_markdown(provenance, "this page")
    assert ":class: note cxr-provenance" in box
    for fact in ("real X-ray files in chest\\_xray", "cuda \\(NVIDIA H200\\)", "resnet50",
                 "ImageNet weights", "epochs=8", "bf16", RUN_A):
        assert fact in box
    assert "/somewhere" not in box  # the run dir is this machine's business


def test_synthetic_data_and_random_weights_are_each_named_loudly():
    for synthetic, pretrained, named in [(True, True, ["synthetic sample"]),
                                         (False, False, ["random weights"]),
                                         (True, False, ["synthetic sample", "random weights"])]:
        provenance = build_book.describe_run(record(synthetic, pretrained))
        assert provenance.warnings == named
        banner = build_book.banner_html(provenance)
        assert banner.startswith("NOT REAL RESULTS") and all(n in banner for n in named)
        assert ":class: danger" in build_book.provenance_markdown(provenance, "this page")


def test_a_book_without_a_run_record_says_so_on_every_page():
    provenance = build_book.describe_run(None)
    assert build_book.banner_html(provenance).startswith("UNKNOWN OUTPUTS")
    assert ":class: danger" in build_book.provenance_markdown(provenance, "this book")


def test_the_record_is_the_one_the_executed_notebooks_name(tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    for run_id in (RUN_A, RUN_B):
        (records / f"{run_id}.json").write_text(json.dumps(record(True, False, run_id)))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(path)")])
    notebook.cells[0].outputs = [nbformat.v4.new_output(
        "stream", name="stdout", text=f"run record: {records / f'{RUN_A}.json'}\n")]
    executed = tmp_path / "02.ipynb"
    nbformat.write(notebook, executed)
    assert build_book.find_record(tmp_path, [executed], before=set()) == records / f"{RUN_A}.json"
    notebook.cells[0].outputs = []
    nbformat.write(notebook, executed)
    newest = build_book.find_record(tmp_path, [executed], before=set())
    assert newest == records / f"{RUN_B}.json"
    assert build_book.find_record(tmp_path / "none", [executed], before=set()) is None


def test_links_go_to_the_book_s_pages_or_to_the_repository():
    pages = {"notebooks/01_a.ipynb", "notebooks/02_b.ipynb"}
    anchors = {"the-series"}

    def link(target: str, here: str = "notebooks/01_a.ipynb") -> str:
        text = build_book.rewrite_links(f"[x]({target})", here, REPO, anchors, pages)
        return text.removeprefix("[x](").removesuffix(")")

    assert link("02_b.ipynb") == "02_b.ipynb"
    assert link("../README.md#the-series") == "index.md#the-series"
    assert link("../README.md#results") == f"{REPO}/blob/main/README.md#results"
    assert link("../benchmarks/README.md") == f"{REPO}/blob/main/benchmarks/README.md"
    assert link("#settings") == "#settings"
    assert link("https://example.org/a_b") == "https://example.org/a_b"
    assert link("notebooks/02_b.ipynb", here="README.md") == "02_b.ipynb"
    assert link("#the-series", here="README.md") == "#the-series"
    assert link("#code-layout", here="README.md") == f"{REPO}/blob/main/README.md#code-layout"
    assert link("images/a.png", here="README.md") == "images/a.png"
    assert link("cxr_utils.py", here="README.md") == f"{REPO}/blob/main/cxr_utils.py"


def test_the_front_page_is_the_readme_s_overview():
    readme = (ROOT / "README.md").read_text()
    overview = build_book.readme_overview(readme)
    assert overview.startswith("# ") and "\n## The series" in overview
    assert overview.count("\n## ") == 1 and readme.startswith(overview)
    page = build_book.front_page(readme, REPO, build_book.describe_run(None),
                                 ["notebooks/01_a.ipynb"])
    assert "](notebooks/" not in page and "```{toctree}" in page and "\n01_a\n" in page
