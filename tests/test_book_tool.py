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
    pages = {"notebooks/01_a.ipynb", "notebooks/02_b.ipynb", "docs/settings.md", "docs/README.md"}
    anchors = {"the-series"}

    def link(target: str, here: str = "notebooks/01_a.ipynb") -> str:
        text = build_book.rewrite_links(f"[x]({target})", here, REPO, anchors, pages)
        return text.removeprefix("[x](").removesuffix(")")

    assert link("02_b.ipynb") == "02_b.ipynb"
    assert link("../README.md#the-series") == "index.md#the-series"
    assert link("../README.md#set-up") == f"{REPO}/blob/main/README.md#set-up"
    assert link("../benchmarks/README.md") == f"{REPO}/blob/main/benchmarks/README.md"
    assert link("#settings") == "#settings"
    assert link("https://example.org/a_b") == "https://example.org/a_b"
    assert link("notebooks/02_b.ipynb", here="README.md") == "02_b.ipynb"
    assert link("#the-series", here="README.md") == "#the-series"
    assert link("#set-up", here="README.md") == f"{REPO}/blob/main/README.md#set-up"
    assert link("images/a.png", here="README.md") == "images/a.png"
    assert link("cxr_utils.py", here="README.md") == f"{REPO}/blob/main/cxr_utils.py"
    # the reference pages of docs/ are in the book, in their folder
    assert link("docs/settings.md#checks", here="README.md") == "docs/settings.md#checks"
    assert link("../docs/settings.md") == "docs/settings.md"
    assert link("../README.md#the-series", here="docs/settings.md") == "../index.md#the-series"
    assert link("../README.md#set-up", here="docs/settings.md") == (
        f"{REPO}/blob/main/README.md#set-up")
    assert link("../notebooks/02_b.ipynb", here="docs/settings.md") == "../02_b.ipynb"
    assert link("README.md#publishing", here="docs/settings.md") == "README.md#publishing"
    assert link("#checks", here="docs/settings.md") == "#checks"
    assert link("../images/a.png", here="docs/settings.md") == "../images/a.png"
    assert link("../CONTRIBUTING.md#forks", here="docs/settings.md") == (
        f"{REPO}/blob/main/CONTRIBUTING.md#forks")
    assert link("design.md", here="docs/settings.md") == f"{REPO}/blob/main/docs/design.md"


def test_the_reference_pages_are_docs_pages_in_the_book_s_order(tmp_path):
    pages = build_book.reference_pages()
    assert set(pages) == {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert pages[0] == "docs/settings.md" and pages[-1] == "docs/README.md"
    (tmp_path / "docs").mkdir()
    for name in ("README", "zeta", "results", "alpha"):
        (tmp_path / "docs" / f"{name}.md").write_text(f"# {name}\n")
    assert build_book.reference_pages(tmp_path) == [
        "docs/results.md", "docs/README.md", "docs/alpha.md", "docs/zeta.md"]


def test_the_front_page_is_the_readme_s_overview():
    readme = (ROOT / "README.md").read_text()
    overview = build_book.readme_overview(readme)
    assert overview.startswith("# ") and "\n## The series" in overview
    assert overview.count("\n## ") == 1 and readme.startswith(overview)
    page = build_book.front_page(readme, REPO, build_book.describe_run(None),
                                 ["notebooks/01_a.ipynb"], ["docs/results.md", "docs/README.md"])
    assert "](notebooks/" not in page and "```{toctree}" in page and "\n01_a\n" in page
    series, reference = page.split(":caption: The series")[1].split(":caption: Reference")
    assert "01_a" in series and "docs/results\ndocs/README\n```" in reference


def test_the_source_has_the_docs_pages_with_their_links_and_images(tmp_path):
    # an "executed copy" of notebook 01 (the committed one is offered for download beside it)
    name = sorted((ROOT / "notebooks").glob("01_*.ipynb"))[0].name
    executed = tmp_path / name
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(
        "# A\n\n[settings](../docs/settings.md#checks)")]), executed)
    reference = build_book.reference_pages()
    source = tmp_path / "source"
    build_book.write_source(source, [executed], build_book.describe_run(None), REPO, reference)
    assert "](docs/settings.md#checks)" in (source / name).read_text()
    for doc in reference:
        assert (source / doc).is_file(), doc
    results = (source / "docs" / "results.md").read_text()
    assert "](../index.md#the-series)" in results
    assert "](../images/training_curves.png)" in (source / "docs" / "results.md").read_text()
    assert (source / "images" / "training_curves.png").is_file()
    assert f"]({REPO}/blob/main/benchmarks/README.md" in results
    index = (source / "index.md").read_text()
    assert ":caption: Reference" in index and "\ndocs/settings\n" in index


def test_a_page_whose_outputs_name_a_run_of_their_own_says_so(tmp_path):
    """Notebook 05's page names its two-process run, not notebook 02's; the other pages name
    the series' run (issue: each page names the run that made its outputs)."""
    names = [p.name for p in sorted((ROOT / "notebooks").glob("0[25]_*.ipynb"))]
    executed = []
    for name, run_id in zip(names, (RUN_A, RUN_B)):
        notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(path)")])
        notebook.cells[0].outputs = [nbformat.v4.new_output(
            "stream", name="stdout", text=f"run record: /runs/records/{run_id}.json\n")]
        nbformat.write(notebook, tmp_path / name)
        executed.append(tmp_path / name)
    records = tmp_path / "runs" / "records"
    records.mkdir(parents=True)
    for run_id in (RUN_A, RUN_B):
        (records / f"{run_id}.json").write_text(json.dumps(record(False, True, run_id)))
    assert build_book.named_record(tmp_path / "runs", executed[1]) == records / f"{RUN_B}.json"
    series = build_book.describe_run(record(False, True, RUN_A))
    own = {names[1]: build_book.describe_run(record(False, True, RUN_B))}
    source = tmp_path / "source"
    build_book.write_source(source, executed, series, REPO, [], own)
    assert RUN_A in (source / names[0]).read_text() and RUN_B not in (source / names[0]).read_text()
    assert RUN_B in (source / names[1]).read_text() and RUN_A not in (source / names[1]).read_text()


def test_only_the_lessons_are_pages_not_a_learner_s_scratch_copy(tmp_path):
    for name in ("01_data_preview.ipynb", "01_data_preview-Copy1.ipynb", "02_my notes.ipynb",
                 "02_training_on_gpu.ipynb", "Untitled.ipynb"):
        (tmp_path / name).write_text("{}")
    found = [p.name for p in build_book.numbered_notebooks(tmp_path)]
    assert found == ["01_data_preview.ipynb", "02_training_on_gpu.ipynb"]


def test_the_model_card_of_the_series_run_is_a_page_after_the_notebooks(tmp_path):
    name = sorted((ROOT / "notebooks").glob("06_*.ipynb"))[0].name
    executed = tmp_path / name
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 6")]),
                   executed)
    source = tmp_path / "source"
    card = "# Model card: run X\n\nIntended use: teaching.\n"
    build_book.write_source(source, [executed], build_book.describe_run(None), REPO, [], None,
                            card)
    assert (source / "model-card.md").read_text() == card
    index = (source / "index.md").read_text()
    assert f"\n{name.removesuffix('.ipynb')}\nmodel-card\n```" in index
    build_book.write_source(tmp_path / "no-card", [executed], build_book.describe_run(None), REPO)
    assert not (tmp_path / "no-card" / "model-card.md").exists()


def test_a_streamed_cell_is_one_box_of_text_per_stream(tmp_path):
    """The chunks a cell printed as it ran (stdout, stdout, stderr, stdout) become one output per
    run of one stream, in order; other outputs stay where they were."""
    chunks = [("stdout", "epoch 0\n"), ("stdout", "epoch 1\n"), ("stderr", "warning\n"),
              ("stdout", "done\n")]
    cell = nbformat.v4.new_code_cell("launch()")
    cell.outputs = [nbformat.v4.new_output("stream", name=name, text=text) for name, text in chunks]
    cell.outputs.append(nbformat.v4.new_output("execute_result", data={"text/plain": "1"},
                                               execution_count=1))
    notebook = nbformat.v4.new_notebook(cells=[cell])
    path = tmp_path / "05_several_gpus.ipynb"
    nbformat.write(notebook, path)
    provenance = build_book.describe_run(record(False, True))
    page = build_book.book_notebook(path, REPO, provenance, set(), set())
    outputs = next(c for c in page.cells if c.cell_type == "code").outputs
    assert [(o.output_type, o.get("name"), o.get("text")) for o in outputs] == [
        ("stream", "stdout", "epoch 0\nepoch 1\n"), ("stream", "stderr", "warning\n"),
        ("stream", "stdout", "done\n"), ("execute_result", None, None)]
