"""Support code: tables for the notebooks (lessons need not read this).

They render as tables in JupyterLab and on GitHub.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a type for the annotations: no import at run time
    from cxr_support.pixel_cache import XraySplit


class Table:
    """Rows of dicts shown as a table.

    HTML in JupyterLab, Markdown on GitHub, aligned text in a terminal.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], digits: int = 3):
        self.rows = list(rows)
        self.columns = list(dict.fromkeys(column for row in self.rows for column in row))
        self.digits = digits

    def cells(self) -> list[list[str]]:
        """Every row as display strings: floats rounded, missing values and NaN as a dash."""
        return [[format_value(row.get(column), self.digits) for column in self.columns]
                for row in self.rows]

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
                       for row in self.cells())
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def _repr_markdown_(self) -> str:
        def line(values: Sequence[str]) -> str:
            return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

        return "\n".join([line([str(c) for c in self.columns]), line(["---"] * len(self.columns)),
                          *map(line, self.cells())])

    def __repr__(self) -> str:
        if not self.rows:
            return "(empty table)"
        cells = self.cells()
        widths = [max(len(str(c)), *(len(row[i]) for row in cells))
                  for i, c in enumerate(self.columns)]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        return "\n".join(line.rstrip() for line in lines)


def format_value(value: Any, digits: int = 3) -> str:
    """A value for reading.

    Floats to ``digits`` decimals (large ones to whole numbers), None and NaN as a dash.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "\u2013"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}f}"
    return str(value)


def show_table(rows: Sequence[dict[str, Any]], digits: int = 3) -> None:
    """Display rows as a table (rendered in notebooks, plain text elsewhere)."""
    try:
        from IPython.display import display
    except ImportError:  # a plain Python without IPython: print the text form
        display = print
    display(Table(rows, digits))


def metrics_table(named: dict[str, dict[str, Any]],
                  metric_names: Sequence[str]) -> list[dict[str, Any]]:
    """Rows of metrics side by side, with intervals when present.

    ``named`` is e.g. {'threshold 0.5': m1, 'threshold from val': m2}.
    """
    rows = []
    for metric in ("threshold", *metric_names):
        row: dict[str, Any] = {"metric": metric}
        for label, m in named.items():
            value, ci = m[metric], m.get("ci", {}).get(metric)
            row[label] = format_value(value) + (
                f" [{format_value(ci[0])}, {format_value(ci[1])}]" if ci else "")
        rows.append(row)
    return rows


PUBLISHED_ANCHORS = [
    {"result": "Kermany et al. 2018 (Cell), pneumonia vs normal, Inception-v3",
     "accuracy": 0.928, "sensitivity": 0.932, "specificity": 0.901, "roc_auc": 0.968},
    {"result": "MedMNIST v2, ResNet-50 on 28x28 PneumoniaMNIST images upsampled to 224",
     "accuracy": 0.884, "sensitivity": None, "specificity": None, "roc_auc": 0.962},
]


def describe_data(synthetic: bool, splits: dict[str, XraySplit]) -> str:
    """What the data of a result was, as measured.

    Synthetic or real, image counts and original image sizes.
    """
    if synthetic:
        return "synthetic sample (not real X-rays)"
    # Kaggle's 16-image val/ is not used
    used = {name: split for name, split in splits.items() if name != "kaggle_val"}
    counts = ", ".join(f"{len(split)} {name}" for name, split in used.items())
    sizes = [size for split in used.values() for size in split.original_sizes]
    widths, heights = [w for w, _ in sizes], [h for _, h in sizes]
    return (f"real X-ray files ({counts} images; "
            f"originals {min(widths)}-{max(widths)} x {min(heights)}-{max(heights)} px)")


def results_table(named_metrics: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """This run's test metrics beside the published anchors, as table rows."""
    rows = [dict(anchor) for anchor in PUBLISHED_ANCHORS]
    for name, m in named_metrics.items():
        rows.append({"result": name,
                     **{k: m[k] for k in ("accuracy", "sensitivity", "specificity", "roc_auc")}})
    return rows
