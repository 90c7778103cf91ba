"""Tables render as tables: HTML in JupyterLab, Markdown on GitHub, text in a terminal.

The tables come from cxr_support.tables.
"""

from __future__ import annotations

import math

from cxr_support.tables import Table, describe_data, format_value, metrics_table, show_table

ROWS = [
    {"metric": "accuracy", "value": 0.87654321, "ci": None},
    {"metric": "roc_auc", "value": math.nan, "ci": "a|b <c>"},
    {"metric": "images", "value": 12345.6},
]


def test_format_value_rounds_and_shows_missing_as_a_dash():
    """Floats to 3 decimals, large floats as whole numbers, None and NaN as an en dash.

    The rest as str.
    """
    assert format_value(0.87654321) == "0.877"
    assert format_value(0.5, digits=1) == "0.5"
    assert format_value(12345.6) == "12,346"
    assert format_value(None) == format_value(math.nan) == "\u2013"
    assert format_value(7) == "7" and format_value("x") == "x" and format_value(True) == "True"


def test_html_has_every_cell_escaped():
    """One <th> per column (the union over rows, in first-seen order) and escaped cell text."""
    html = Table(ROWS)._repr_html_()
    assert html.count("<th>") == 3 and html.count("<tr>") == 4
    assert "<td>0.877</td>" in html and "<td>\u2013</td>" in html and "a|b &lt;c&gt;" in html
    assert "None" not in html and "nan" not in html


def test_markdown_is_a_github_table():
    """Header, separator and one line per row; a pipe inside a cell is escaped."""
    lines = Table(ROWS)._repr_markdown_().splitlines()
    assert lines[0] == "| metric | value | ci |" and lines[1] == "| --- | --- | --- |"
    assert len(lines) == 5
    assert lines[3] == "| roc_auc | \u2013 | a\\|b <c> |"
    assert lines[4] == "| images | 12,346 | \u2013 |"  # a missing column is a dash too


def test_text_form_is_aligned(capsys):
    """Outside a notebook show_table prints aligned columns."""
    show_table([{"a": 1, "long name": 0.25}, {"a": 100, "long name": None}])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["a", "long", "name"]
    assert lines[1].index("0.250") == lines[0].index("long name")
    assert repr(Table([])) == "(empty table)"


def test_metrics_table_puts_runs_side_by_side_with_intervals():
    """One row per metric, one column per named result, intervals in brackets when present."""
    named = {
        "at 0.5": {"threshold": 0.5, "accuracy": 0.9, "ci": {"accuracy": [0.8, 0.95]}},
        "chosen": {"threshold": 0.2, "accuracy": math.nan},
    }
    rows = metrics_table(named, ["accuracy"])
    assert rows == [
        {"metric": "threshold", "at 0.5": "0.500", "chosen": "0.200"},
        {"metric": "accuracy", "at 0.5": "0.900 [0.800, 0.950]", "chosen": "\u2013"},
    ]


def test_describe_data_reports_what_was_measured_not_a_guessed_origin():
    """Real data is described by its image counts and original sizes.

    Nothing is said about where the files came from.
    """
    import torch

    from cxr_support.pixel_cache import XraySplit

    def split(name: str, sizes: list[tuple[int, int]]) -> XraySplit:
        n = len(sizes)
        return XraySplit(
            name,
            torch.zeros(n, 1, 8, 8, dtype=torch.uint8),
            torch.zeros(n, dtype=torch.long),
            [],
            sizes,
            ["L"] * n,
            [],
        )

    splits = {
        "train": split("train", [(224, 224), (224, 224)]),
        "test": split("test", [(1000, 800)]),
        "kaggle_val": split("kaggle_val", [(5, 5)]),
    }
    text = describe_data(False, splits)
    assert text == "real X-ray files (2 train, 1 test images; originals 224-1000 x 224-800 px)"
    assert "Kaggle" not in text and "downscaled" not in text
    assert describe_data(True, splits) == "synthetic sample (not real X-rays)"
