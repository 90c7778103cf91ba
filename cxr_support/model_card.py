"""Support code: a model card written from a run's record (lessons need not read this).

Notebook 06 writes ``<run dir>/model_cards/<run_id>.md``: intended and out-of-scope uses, the
data and its limits, metrics with intervals at the chosen threshold, subgroups, calibration, the
shortcut probe, the external check and the published evidence about this dataset (Mitchell et
al. 2019, "Model Cards for Model Reporting"). Every number about the model is read from the run
record (``num`` formats them all); the only other numbers are the published figures in
``EVIDENCE``, each with its source.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cxr_support.atomic_files import atomic_write_text

EVIDENCE = [  # what others measured on this dataset: context for every model trained on it
    "A ResNet-50 trained on these Guangzhou training films reached AUC 0.95 on the internal test "
    "set and 0.54 on NIH ChestX-ray14 films of children of the same ages (1 to 5); its "
    "class-activation maps looked clinically sensible on internal films and not on external "
    "ones (Xin, Li & Yi 2021, Emergency Radiology, doi:10.1007/s10140-021-01954-x).",
    "Networks trained on chest X-rays with the lung fields blacked out still separated the "
    "classes about as well as with them (Maguolo & Nanni 2021, \"A critic evaluation of methods "
    "for COVID-19 automatic detection from X-ray images\", Information Fusion).",
    "Kermany et al. (Cell 2018) chose their model on the test partition and report bacterial "
    "against viral pneumonia (another task than this one): accuracy 90.7 %, sensitivity 88.6 %, "
    "specificity 90.9 %, AUC 0.940.",
]
INTENDED = ("Teaching: how transfer learning, evaluation and its limits work on a public "
            "dataset. It is not a medical device and must not inform the care of any patient.")
NOT_MEASURED = ("Not measured yet: notebook 03 adds the test metrics, the threshold it chooses on "
                "validation and the calibration to the run record. Run it, then notebook 06 again.")
OUT_OF_SCOPE = [
    "any clinical use: diagnosis, triage or screening of real patients;",
    "adults (the films are of children aged 1 to 5);",
    "PA (posterior-anterior) or lateral films: the training films are anterior-posterior;",
    "other hospitals, scanners or populations: one centre's films only, never tested elsewhere "
    "unless the external check below says so;",
    "screening populations, where pneumonia is far rarer than in these curated sets.",
]
DATA_LIMITS = [
    "One centre (Guangzhou Women and Children's Medical Center), retrospective cohorts of "
    "children aged 1 to 5 (Kermany et al. 2018); AP films.",
    "No age, sex or clinical information per film, so no subgroup but the pneumonia subtype in "
    "the file name can be checked.",
    "How Kaggle's test films were chosen is not documented; its share of pneumonia is set by "
    "curation, not by any clinic's prevalence.",
]


def num(value: Any, digits: int = 3) -> str:
    """A number of the record as the card shows it ('n/a' when missing or not a number)."""
    if isinstance(value, bool) or value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.{digits}f}"
    return "n/a"


def interval(values: Any) -> str:
    """'[low, high]' from a record's two-number interval."""
    if not values or len(values) != 2:
        return "n/a"
    return f"[{num(values[0])}, {num(values[1])}]"


def _metrics_rows(metrics: dict[str, Any]) -> list[str]:
    ci = metrics.get("ci", {})
    return [f"| {name} | {num(metrics.get(name))} | {interval(ci.get(name))} |"
            for name in ("sensitivity", "specificity", "precision", "accuracy", "roc_auc")]


def model_card_markdown(record: dict[str, Any]) -> str:
    """The model card of a run, as Markdown, from its record alone."""
    model, hyper, data = record.get("model", {}), record.get("hyperparams", {}), record["dataset"]
    trust, test = record.get("trust", {}), (record.get("test") or {}).get("chosen_threshold", {})
    kind = "the SYNTHETIC sample (not X-rays)" if data.get("synthetic") else "real films"
    counts = "; ".join(f"{split}: " + ", ".join(f"{n} {name}" for name, n in per_class.items())
                       for split, per_class in data.get("counts", {}).items())
    lines = [f"# Model card: run {record['run_id']}", "",
             "## The model", "",
             f"- {model.get('arch')}, {model.get('train_mode')}, weights: {model.get('weights')}",
             f"- {num(hyper.get('image_size'))} px, {num(hyper.get('epochs'))} epochs, peak "
             f"learning rate {num(hyper.get('max_lr'), 6)}, {hyper.get('opt')}, precision "
             f"{hyper.get('precision')}",
             f"- Data: {kind}; {counts}", "",
             "## Intended use", "", INTENDED, "", "## Out of scope", "",
             *[f"- {line}" for line in OUT_OF_SCOPE], "", "## The data and its limits", "",
             *[f"- {line}" for line in DATA_LIMITS], ""]
    threshold = record.get("threshold", {})
    if not test:  # notebook 03 has not measured this run
        lines += ["## Metrics on the test split and calibration", "", NOT_MEASURED, ""]
    else:
        lines += _test_lines(record, threshold, test)
    lines += _trust_lines(trust)
    lines += ["## Published evidence about this dataset", "", *[f"- {e}" for e in EVIDENCE], ""]
    return "\n".join(lines)


def _test_lines(record: dict[str, Any], threshold: dict[str, Any],
                test: dict[str, Any]) -> list[str]:
    """The test metrics at the chosen threshold, and calibration: notebook 03's sections."""
    return ["## Metrics on the test split", "",
            f"At the threshold {num(threshold.get('value'))}, chosen by "
            f"{threshold.get('method', 'n/a')} on the {threshold.get('chosen_on', 'n/a')} "
            f"(never on test). 95 % intervals resample "
            f"{test.get('ci_resamples', 'n/a')}; {num(test.get('n'))} test films.", "",
            "| metric | estimate | 95 % interval |", "|---|---|---|", *_metrics_rows(test), "",
            "## Calibration", "", "| split | films | Brier score | ECE |", "|---|---|---|---|",
            *[f"| {name} | {num(c.get('n'))} | {num(c.get('brier'))} | {num(c.get('ece'))} |"
              for name, c in (record.get("calibration") or {}).items()], ""]


def _trust_lines(trust: dict[str, Any]) -> list[str]:
    """Notebook 06's sections: subgroups, the shortcut probe, Grad-CAM, decisions, external."""
    lines = ["## Subgroups: sensitivity by pneumonia subtype", ""]
    subtypes = trust.get("subtypes")
    if subtypes:
        lines += ["| subtype | films | patients | sensitivity | 95 % interval |",
                  "|---|---|---|---|---|",
                  *[f"| {name} | {num(s.get('n'))} | {num(s.get('patients'))} | "
                    f"{num(s.get('sensitivity'))} | {interval(s.get('ci'))} |"
                    for name, s in subtypes.items()], ""]
    else:
        lines += ["Not available: the test files are not named by subtype.", ""]
    probe = trust.get("shortcut_probe", {})
    lines += ["## Shortcut probe: test AUC with parts of the film blanked", "",
              f"Lung box (fractions of the film): {trust.get('lung_box_text', 'n/a')}.", "",
              "| films | test AUC | 95 % interval |", "|---|---|---|",
              *[f"| {name} | {num(p.get('roc_auc'))} | {interval(p.get('ci'))} |"
                for name, p in probe.items()], ""]
    shares = (trust.get("gradcam_share") or {})
    lines += ["## Where the model looks: Grad-CAM share inside the lung box", "",
              f"A uniform map would put {num(shares.get('uniform'))} inside.", "",
              "| outcome | films | median | quartiles |", "|---|---|---|---|",
              *[f"| {name} | {num(s.get('n'))} | {num(s.get('median'))} | "
                f"{interval([s.get('q1'), s.get('q3')])} |"
                for name, s in (shares.get("by_outcome") or {}).items()], ""]
    decision = trust.get("decision_curve") or {}
    lines += ["## Decisions: net benefit", "",
              f"On the test split (share of pneumonia {num(decision.get('prevalence'))}, set by "
              f"curation): at the chosen threshold the model's net benefit is "
              f"{num(decision.get('model_at_threshold'))} against "
              f"{num(decision.get('treat_all_at_threshold'))} for treating every child (treating "
              "none gains nothing and costs nothing).", ""]
    external = trust.get("external")
    lines += ["## External check", ""]
    if external:
        lines += [f"{num(external.get('n'))} films from {external.get('name')}:", "",
                  "| metric | estimate | 95 % interval |", "|---|---|---|",
                  *_metrics_rows(external), ""]
    else:
        lines += ["None: the model has not been tested on films from another hospital.", ""]
    return lines


def write_model_card(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write the card to ``<run_dir>/model_cards/<run_id>.md`` (atomically); return its path."""
    path = Path(run_dir) / "model_cards" / f"{record['run_id']}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, model_card_markdown(record))
    return path
