"""Unit tests for cxr_utils' evaluation helpers.

They cover metrics, bootstrap intervals, thresholds and prediction.

Metrics are checked against small hand-computed cases; prediction uses one randomly
initialised ResNet50 built once for the module and a few tiny images written to ``tmp_path``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cxr_utils as cxr
from cxr_support.errors import DataError
from cxr_support.images import decode_resized
from cxr_support.pixel_cache import XraySplit
from cxr_support.plots import outcome_indices

CPU = torch.device("cpu")

# ---------------------------------------------------------------------- shared fixtures and helpers

# Hand example: labels [1, 1, 1, 0, 0], probabilities [0.9, 0.8, 0.3, 0.6, 0.1], threshold 0.5
#   predictions [1, 1, 0, 1, 0] -> TP = 2 (0.9, 0.8), FN = 1 (0.3), FP = 1 (0.6), TN = 1 (0.1)
HAND_LABELS = [1, 1, 1, 0, 0]
HAND_PROBS = [0.9, 0.8, 0.3, 0.6, 0.1]

# Threshold example (4 PNEUMONIA, 3 NORMAL), probabilities sorted:
#   0.1 N, 0.3 N, 0.35 P, 0.4 N, 0.7 P, 0.8 P, 0.9 P
#   threshold: 0.9   0.8   0.7   0.4   0.35  0.3   0.1
#   TPR:       1/4   2/4   3/4   3/4   4/4   4/4   4/4
#   FPR:       0     0     0     1/3   1/3   2/3   3/3
#   TPR-FPR:   .25   .50   .75   .42   .67   .33   0      -> Youden threshold 0.7
VAL_LABELS = [0, 0, 1, 0, 1, 1, 1]
VAL_PROBS = [0.1, 0.3, 0.35, 0.4, 0.7, 0.8, 0.9]


@pytest.fixture(scope="module")
def model() -> cxr.PneumoniaCnnModel:
    """One randomly initialised PneumoniaCnnModel for the module.

    The tests only switch its train/eval mode.
    """
    torch.manual_seed(0)
    return cxr.PneumoniaCnnModel().eval()


def make_split(labels: list[int], size: int = 32, seed: int = 0) -> XraySplit:
    """A hand-built XraySplit with random uint8 pixels (N, 1, size, size) and the given labels."""
    generator = torch.Generator().manual_seed(seed)
    n = len(labels)
    pixels = torch.randint(0, 256, (n, 1, size, size), dtype=torch.uint8, generator=generator)
    return XraySplit(
        "tiny",
        pixels,
        torch.tensor(labels),
        [Path(f"{i}.png") for i in range(n)],
        [(size, size)] * n,
        ["L"] * n,
        [],
    )


def noisy_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labels and probabilities with a decent but imperfect signal (AUC about 0.85)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = 1.5 * labels + rng.normal(0, 1, n)
    return labels, 1 / (1 + np.exp(-(scores - 0.75)))


@pytest.fixture
def xray_jpeg(tmp_path) -> Path:
    """A 96x80 grayscale JPEG with some structure (gradient, a bright disc, noise)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:80, 0:96]
    pixels = (
        40 + 1.5 * x + 60 * (((x - 60) ** 2 + (y - 35) ** 2) < 300) + rng.normal(0, 8, (80, 96))
    )
    path = tmp_path / "person1_bacteria_1.jpeg"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="L").save(path, quality=95)
    return path


def direct_probability(model, pixels: np.ndarray) -> float:
    """The probability computed by hand from (S, S) uint8 pixels.

    Scale to [0, 1] as (1, 1, S, S), forward, sigmoid.
    """
    size = pixels.shape[0]
    batch = torch.from_numpy(pixels.astype(np.float32) / 255).view(1, 1, size, size)
    with torch.no_grad():
        return float(torch.sigmoid(model.eval()(batch))[0])


# ----------------------------------------------------------------------------- binary_metrics


def test_binary_metrics_hand_computed_case():
    """binary_metrics on the hand example: TP 2, FN 1, FP 1, TN 1 give the textbook rates."""
    m = cxr.binary_metrics(HAND_LABELS, HAND_PROBS, threshold=0.5)
    assert m["threshold"] == 0.5 and m["n"] == 5
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]  # [[TN, FP], [FN, TP]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(1 / 2)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (2 / 3 + 2 / 3))
    # concordant (positive, negative) pairs: 0.9>0.6, 0.9>0.1, 0.8>0.6, 0.8>0.1, 0.3>0.1 -> 5 of 3*2
    assert m["roc_auc"] == pytest.approx(5 / 6)


def test_binary_metrics_threshold_moves_the_operating_point():
    """At threshold 0.85 only 0.9 is positive: TP 1, FN 2, FP 0, TN 2.

    A probability equal to the threshold is positive.
    """
    m = cxr.binary_metrics(HAND_LABELS, HAND_PROBS, threshold=0.85)
    assert m["confusion_matrix"] == [[2, 0], [2, 1]]
    assert (
        m["sensitivity"] == pytest.approx(1 / 3)
        and m["specificity"] == 1.0
        and m["precision"] == 1.0
    )
    assert m["roc_auc"] == pytest.approx(5 / 6)  # AUC does not depend on the threshold
    assert (
        cxr.binary_metrics(HAND_LABELS, HAND_PROBS, threshold=0.6)["confusion_matrix"]
        == [[1, 1], [1, 2]]
    )


def test_binary_metrics_single_class_gives_nan_not_an_error():
    """All labels PNEUMONIA: specificity and ROC AUC are NaN (undefined).

    The other metrics are still computed.
    """
    m = cxr.binary_metrics([1, 1, 1], [0.9, 0.4, 0.7])
    assert np.isnan(m["specificity"]) and np.isnan(m["roc_auc"])
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["accuracy"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"] == [[0, 0], [1, 2]]
    normal_only = cxr.binary_metrics([0, 0], [0.2, 0.7])
    assert np.isnan(normal_only["sensitivity"]) and np.isnan(normal_only["roc_auc"])
    assert normal_only["specificity"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- bootstrap_ci


def test_bootstrap_ci_intervals_contain_point_estimates():
    """On 200 samples with a decent signal every 95% interval is ordered.

    Each also contains the point estimate.
    """
    labels, probs = noisy_scores(200, seed=0)
    point = cxr.binary_metrics(labels, probs)
    intervals = cxr.bootstrap_ci(labels, probs, n_boot=200, seed=0)
    assert set(intervals) == set(cxr.METRIC_NAMES)
    for name, (low, high) in intervals.items():
        assert low <= point[name] <= high, (name, low, point[name], high)
        assert low < high, name  # not degenerate


def test_bootstrap_ci_is_deterministic_in_the_seed():
    """The same seed gives identical intervals; another seed gives different ones."""
    labels, probs = noisy_scores(120, seed=1)
    first = cxr.bootstrap_ci(labels, probs, n_boot=100, seed=7)
    assert cxr.bootstrap_ci(labels, probs, n_boot=100, seed=7) == first
    assert cxr.bootstrap_ci(labels, probs, n_boot=100, seed=8) != first


def test_bootstrap_ci_narrows_with_more_data():
    """Intervals from 2000 samples are narrower than from 100 samples of the same distribution.

    This holds for every metric.
    """
    small = cxr.bootstrap_ci(*noisy_scores(100, seed=2), n_boot=100, seed=0)
    large = cxr.bootstrap_ci(*noisy_scores(2000, seed=3), n_boot=100, seed=0)
    for name in cxr.METRIC_NAMES:
        assert large[name][1] - large[name][0] < small[name][1] - small[name][0], name


def test_bootstrap_by_patient_with_one_film_each_is_the_per_image_bootstrap():
    """With one image per patient, resampling patients draws what resampling images draws.

    The draws are exactly the same.
    """
    labels, probs = noisy_scores(150, seed=4)
    per_image = cxr.bootstrap_ci(labels, probs, n_boot=100, seed=5)
    assert (
        cxr.bootstrap_ci(
            labels, probs, n_boot=100, seed=5, groups=[f"patient{i}" for i in range(150)]
        )
        == per_image
    )


def test_bootstrap_by_patient_is_wider_when_patients_have_several_identical_films():
    """Six identical films per patient are one observation, not six.

    So the patient interval is clearly wider.
    """
    labels, probs = noisy_scores(60, seed=6)
    films_labels, films_probs = np.repeat(labels, 6), np.repeat(probs, 6)
    patients = np.repeat([f"p{i}" for i in range(60)], 6)
    per_image = cxr.bootstrap_ci(films_labels, films_probs, n_boot=300, seed=0)
    per_patient = cxr.bootstrap_ci(films_labels, films_probs, n_boot=300, seed=0, groups=patients)
    for name in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        image_width, patient_width = (
            per_image[name][1] - per_image[name][0],
            per_patient[name][1] - per_patient[name][0],
        )
        # about sqrt(6) = 2.4 in theory
        assert patient_width > 1.8 * image_width, (name, image_width, patient_width)


def test_metrics_with_ci_records_what_was_resampled():
    """metrics_with_ci passes groups on.

    Its result says whether patients or images were resampled.
    """
    labels, probs = noisy_scores(80, seed=7)
    groups = [f"p{i // 2}" for i in range(80)]
    by_patient = cxr.metrics_with_ci(labels, probs, 0.5, n_boot=50, seed=1, groups=groups)
    assert by_patient["ci_resamples"] == "patients"
    assert by_patient["ci"]["accuracy"] == list(
        cxr.bootstrap_ci(labels, probs, 0.5, 50, 1, groups=groups)["accuracy"]
    )
    assert cxr.metrics_with_ci(labels, probs, 0.5, n_boot=50, seed=1)["ci_resamples"] == "images"


# ----------------------------------------------------------------------------- calibration


def test_calibration_of_calibrated_and_overconfident_probabilities():
    """Labels drawn with the predicted probability give a small ECE.

    Pushing the same probabilities to 0 or 1 raises it.
    """
    rng = np.random.default_rng(0)
    probs = rng.uniform(0, 1, 20000)
    labels = (rng.uniform(0, 1, 20000) < probs).astype(int)
    calibrated = cxr.calibration(labels, probs)
    overconfident = cxr.calibration(labels, np.where(probs > 0.5, 0.99, 0.01))
    assert calibrated["ece"] < 0.02 and overconfident["ece"] > 0.2
    assert calibrated["brier"] == pytest.approx(np.mean((probs - labels) ** 2))
    assert (
        calibrated["n"] == 20000
        and len(calibrated["mean_predicted"]) == len(calibrated["fraction_positive"]) == 10
    )
    assert np.allclose(calibrated["mean_predicted"], calibrated["fraction_positive"], atol=0.03)


def test_calibration_ece_hand_computed():
    """Two bins: 0.2 predicted where 1 of 2 is positive, 0.9 where 2 of 2 are.

    ECE = 0.5 * 0.3 + 0.5 * 0.1 = 0.2.
    """
    result = cxr.calibration([0, 1, 1, 1], [0.2, 0.2, 0.9, 0.9])
    assert result["ece"] == pytest.approx(0.2)
    assert result["brier"] == pytest.approx((0.04 + 0.64 + 0.01 + 0.01) / 4)


# ----------------------------------------------------------------------------- choose_threshold


def test_choose_threshold_youden_maximises_tpr_minus_fpr():
    """Youden's threshold on the hand example is 0.7.

    No candidate threshold has a higher sens + spec - 1.
    """
    chosen = cxr.choose_threshold(VAL_LABELS, VAL_PROBS, method="youden")
    assert chosen == pytest.approx(0.7)

    def youden(t):
        m = cxr.binary_metrics(VAL_LABELS, VAL_PROBS, t)
        return m["sensitivity"] + m["specificity"] - 1

    assert all(youden(chosen) >= youden(t) for t in VAL_PROBS)


@pytest.mark.parametrize(("target", "expected"), [(0.95, 0.35), (0.75, 0.7), (0.2, 0.9)])
def test_choose_threshold_sensitivity_mode_reaches_target(target, expected):
    """'sensitivity' mode returns a threshold whose sensitivity reaches the target.

    The expected values are computed by hand.
    """
    chosen = cxr.choose_threshold(
        VAL_LABELS, VAL_PROBS, method="sensitivity", min_sensitivity=target
    )
    assert chosen == pytest.approx(expected)
    assert cxr.binary_metrics(VAL_LABELS, VAL_PROBS, chosen)["sensitivity"] >= target


def test_choose_threshold_sensitivity_mode_returns_highest_such_threshold():
    """'sensitivity' mode returns the HIGHEST threshold reaching the target, as documented.

    That is 0.8 for a target of 0.5.
    """
    chosen = cxr.choose_threshold(VAL_LABELS, VAL_PROBS, method="sensitivity", min_sensitivity=0.5)
    # 0.8 reaches it
    assert cxr.binary_metrics(VAL_LABELS, VAL_PROBS, 0.8)["sensitivity"] == pytest.approx(0.5)
    assert chosen == pytest.approx(0.8)


def test_choose_threshold_single_class_raises():
    """Labels of one class cannot define a threshold: ValueError."""
    with pytest.raises(ValueError, match="both classes"):
        cxr.choose_threshold([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match="unknown method"):
        cxr.choose_threshold(VAL_LABELS, VAL_PROBS, method="f1")


def test_threshold_chosen_in_notebook_03_does_not_depend_on_the_test_labels(model):
    """Notebook 03's flow: predict val and test, choose on val.

    Relabelling every test image leaves the threshold unchanged.
    """
    def predictions(split: XraySplit) -> tuple[torch.Tensor, torch.Tensor]:
        return cxr.predict_dl(cxr.CachedBatchLoader(split, 4, CPU), model)

    val = make_split([0, 1, 0, 1, 1, 0, 1, 1], seed=1)
    test = make_split([0, 0, 1, 1, 1, 1], seed=2)
    flipped_test = XraySplit(
        test.name,
        test.pixels,
        1 - test.labels,
        test.paths,
        test.original_sizes,
        test.original_modes,
        [],
    )
    chosen = []
    for test_split in (test, flipped_test):
        val_probs, val_labels = predictions(val)
        test_probs, test_labels = predictions(test_split)
        chosen.append(cxr.choose_threshold(val_labels, val_probs))
    assert chosen[0] == chosen[1]
    # a threshold taken from the validation predictions
    assert chosen[0] in set(val_probs.tolist())


# ----------------------------------------------------------------------------- predict_dl


def test_predict_dl_probabilities_and_labels_in_loader_order(model):
    """predict_dl gives one probability in [0, 1] per sample, in loader order, in eval mode.

    The labels come aligned with them.
    """
    labels = [1, 0, 0, 1, 1]
    split = make_split(labels, seed=4)
    loader = cxr.CachedBatchLoader(split, batch_size=2, device=CPU, shuffle=False)
    model.train()  # predict_dl must switch to eval mode itself
    probs, got_labels = cxr.predict_dl(loader, model)
    assert not model.training
    assert probs.shape == (5,) and ((probs >= 0) & (probs <= 1)).all()
    assert got_labels.tolist() == labels and got_labels.dtype == torch.long
    with torch.no_grad():
        expected = torch.sigmoid(model(split.pixels.float() / 255))  # (N, 1, S, S) in [0, 1]
    assert torch.allclose(probs, expected, atol=1e-5)


# ----------------------------------------------------------------------------- predict_image


def test_predict_image_from_path(model, xray_jpeg):
    """A JPEG path gives probability, label and the metadata's threshold.

    The probability equals the one from the training preprocessing done by hand.
    """
    result = cxr.predict_image(xray_jpeg, model, {"image_size": 32, "threshold": 0.42}, CPU)
    assert set(result) == {"probability", "label", "threshold"}
    assert 0.0 <= result["probability"] <= 1.0
    assert result["threshold"] == 0.42
    assert result["label"] in cxr.CLASS_NAMES
    assert result["label"] == ("PNEUMONIA" if result["probability"] >= 0.42 else "NORMAL")
    pixels, _, _ = decode_resized(xray_jpeg, 32)
    assert result["probability"] == pytest.approx(direct_probability(model, pixels), abs=1e-6)


def test_predict_image_label_follows_metadata_threshold(model, xray_jpeg):
    """The label flips exactly at the metadata's threshold; without one the threshold is 0.5."""
    p = cxr.predict_image(xray_jpeg, model, {"image_size": 32}, CPU)["probability"]
    assert cxr.predict_image(xray_jpeg, model, {"image_size": 32}, CPU)["threshold"] == 0.5
    assert (
        cxr.predict_image(xray_jpeg, model, {"image_size": 32, "threshold": p}, CPU)["label"]
        == "PNEUMONIA"
    )
    assert (
        cxr.predict_image(xray_jpeg, model, {"image_size": 32, "threshold": p + 1e-6}, CPU)["label"]
        == "NORMAL"
    )


def test_predict_image_path_and_pil_image_agree(model, tmp_path):
    """A small file gives the same probability via its path and as a PIL image.

    A small file means no reduced-scale JPEG decoding.
    """
    rng = np.random.default_rng(1)
    path = tmp_path / "small.png"
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8), mode="L").save(path)
    meta = {"image_size": 32, "threshold": 0.5}
    from_path = cxr.predict_image(path, model, meta, CPU)
    with Image.open(path) as image:
        image.load()
        from_pil = cxr.predict_image(image, model, meta, CPU)
        from_rgb = cxr.predict_image(image.convert("RGB"), model, meta, CPU)
        flipped = cxr.predict_image(
            image.transpose(Image.Transpose.FLIP_TOP_BOTTOM), model, meta, CPU
        )
    assert 0.0 <= from_pil["probability"] <= 1.0 and from_pil["label"] in cxr.CLASS_NAMES
    assert from_pil["probability"] == pytest.approx(from_path["probability"], abs=1e-6)
    assert from_rgb["probability"] == pytest.approx(from_pil["probability"], abs=1e-6)
    # the model does look at the pixels
    assert flipped["probability"] != pytest.approx(from_pil["probability"], abs=1e-5)


class BrightnessModel(torch.nn.Module):
    """A stand-in classifier whose logit is the image's mean brightness.

    Its output follows the pixels, predictably.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.mean(dim=(1, 2, 3)) - 0.5) * 20


def test_predict_image_path_and_pil_image_agree_for_large_jpeg(xray_jpeg):
    """A JPEG path, decoded at reduced scale, gives the fully decoded PIL image's probability.

    The model's logit is the mean brightness, so the comparison measures the preprocessing
    itself: the two decodings must agree far more closely than either does with a darker image.
    """
    model, meta = BrightnessModel(), {"image_size": 32}
    from_path = cxr.predict_image(xray_jpeg, model, meta, CPU)["probability"]
    with Image.open(xray_jpeg) as image:
        image.load()
        from_pil = cxr.predict_image(image, model, meta, CPU)["probability"]
        darker = cxr.predict_image(
            image.convert("L").point(lambda v: v // 2), model, meta, CPU
        )["probability"]
    assert abs(from_path - from_pil) < 0.01
    assert abs(from_path - darker) > 10 * abs(from_path - from_pil)


def test_predict_image_heatmap(model, xray_jpeg):
    """heatmap=True adds a Grad-CAM map of the model's input size (H x W) with values in [0, 1]."""
    result = cxr.predict_image(xray_jpeg, model, {"image_size": 64}, CPU, heatmap=True)
    heatmap = np.asarray(result["heatmap"])
    assert heatmap.shape == (64, 64)
    assert np.isfinite(heatmap).all() and heatmap.min() >= 0.0 and heatmap.max() <= 1.0 + 1e-6
    assert heatmap.max() > heatmap.min()  # it localises something, not a constant map
    assert 0.0 <= result["probability"] <= 1.0


def test_predict_image_missing_path_raises_file_not_found(model, tmp_path):
    """A path that does not exist raises FileNotFoundError naming it."""
    missing = tmp_path / "no-such-image.jpeg"
    with pytest.raises(FileNotFoundError, match="no-such-image.jpeg"):
        cxr.predict_image(missing, model, {"image_size": 32}, CPU)


def test_predict_image_truncated_jpeg_raises_data_error(model, xray_jpeg, tmp_path):
    """A JPEG cut short (valid header, missing data) raises DataError naming the file."""
    truncated = tmp_path / "truncated.jpeg"
    truncated.write_bytes(xray_jpeg.read_bytes()[:400])
    with pytest.raises(DataError, match="truncated.jpeg"):
        cxr.predict_image(truncated, model, {"image_size": 32}, CPU)


def test_predict_image_text_file_raises_data_error(model, tmp_path):
    """A text file named .jpeg raises DataError naming the file."""
    fake = tmp_path / "notes.jpeg"
    fake.write_text("this is not an X-ray")
    with pytest.raises(DataError, match="notes.jpeg"):
        cxr.predict_image(fake, model, {"image_size": 32}, CPU)


# ----------------------------------------------------------------------------- outcome_indices


def test_outcome_indices_groups_and_orders_by_confidence():
    """outcome_indices puts each index in TP/FP/FN/TN.

    It lists the most confident first, at most n per group.
    """
    labels = [1, 0, 1, 0, 1, 0]
    probs = [0.9, 0.8, 0.4, 0.2, 0.6, 0.55]  # predictions at 0.5: P, P, N, N, P, P
    groups = outcome_indices(labels, probs, threshold=0.5)
    assert groups == {"TP": [0, 4], "FP": [1, 5], "FN": [2], "TN": [3]}
    assert outcome_indices(labels, probs, threshold=0.5, n=1) == {
        "TP": [0], "FP": [1], "FN": [2], "TN": [3]
    }
    # a higher threshold moves 0.6 and 0.55 to the negative side
    assert outcome_indices(labels, probs, threshold=0.7) == {
        "TP": [0], "FP": [1], "FN": [2, 4], "TN": [3, 5]
    }


def test_binary_metrics_counts_with_the_taught_rule():
    """binary_metrics' accuracy is notebook 2's (correct_predictions, probs >= threshold): a
    probability equal to the threshold is a PNEUMONIA call in both."""
    labels, probs = [1, 0, 1, 0, 1], [0.5, 0.5, 0.2, 0.1, 0.9]
    m = cxr.binary_metrics(labels, probs, threshold=0.5)
    taught = cxr.accuracy(torch.tensor(probs), torch.tensor(labels), 0.5).item()
    assert m["accuracy"] == pytest.approx(taught) == pytest.approx(3 / 5)
    assert m["confusion_matrix"] == [[1, 1], [1, 2]]


def test_predict_image_warns_when_the_model_learned_from_the_synthetic_sample(model, xray_jpeg):
    """A model trained on the synthetic sample still predicts, with a warning that says its answer
    means nothing for a real film; a model trained on real X-rays predicts without one."""
    meta = {"image_size": 32, "synthetic_data": True}
    with pytest.warns(UserWarning, match="synthetic sample"):
        warned = cxr.predict_image(xray_jpeg, model, meta, CPU)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = cxr.predict_image(xray_jpeg, model, {**meta, "synthetic_data": False}, CPU)
    assert warned["probability"] == quiet["probability"]
