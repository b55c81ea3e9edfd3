"""Evaluation figures built on scikit-learn's displays, with what a reader needs to trust them.

ROC with a patient-bootstrap band, n and both operating points (0.5 and the run's stored
threshold); PR with the prevalence baseline and the same points; a reliability diagram whose bins
show how many studies they hold, above a histogram of the predictions; confusion matrices at
both thresholds with readable class names; a risk-coverage curve with patient-bootstrap bands
and the stored referral band marked. Each `*_figure` returns the matplotlib Figure (tests
read its labels and artists); `write_plots` saves them as PNG, atomically.
"""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from tfbonemet.io.atomic import write_bytes  # noqa: E402

MARKERS = ("o", "D", "s", "^")
FPR_LABEL, TPR_LABEL = "1 − specificity (false-positive rate)", "sensitivity (true-positive rate)"
PLOT_FILES = ("roc.png", "pr.png", "confusion_matrix.png", "reliability.png")
RISK_COVERAGE_FILE = "risk_coverage.png"  # binary evaluations


def save_figure(fig, path, dpi: int = 110) -> Path:
    """A figure as PNG, written atomically (0644), and closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return write_bytes(path, buffer.getvalue())


def readable(name: str) -> str:
    return name.replace("_", " ")


def one_vs_rest(y, probabilities, classes):
    """(name, binary labels, scores) per curve: the positive class for binary tasks, every class otherwise."""
    y = np.asarray(y)
    if len(classes) == 2:
        return [(classes[1], (y == 1).astype(int), probabilities[:, 1])]
    return [(name, (y == c).astype(int), probabilities[:, c]) for c, name in enumerate(classes)
            if 0 < (y == c).sum() < len(y)]


def operating_points(results: dict) -> dict[str, float]:
    """Legend label -> threshold on P(positive), for a binary evaluation's two thresholds."""
    points = results.get("thresholds")
    if not points:
        return {}
    op = points["operating_point"]
    return {"threshold 0.5": points["default"]["threshold"],
            f"stored threshold {op['threshold']:.3f} ({op['method']}, {op['chosen_on']})": op["threshold"]}


def roc_band(target, score, groups, n_resamples: int = 200, seed: int = 0, grid=np.linspace(0, 1, 101)):
    """2.5th and 97.5th percentile of the true-positive rate over patient resamples, on an FPR grid."""
    groups = np.asarray(groups if groups is not None else np.arange(len(target)))
    patients, members = np.unique(groups, return_inverse=True)
    by_patient = [np.flatnonzero(members == i) for i in range(len(patients))]
    rng = np.random.default_rng(seed)
    curves = []
    for _ in range(n_resamples):
        index = np.concatenate([by_patient[i] for i in rng.integers(0, len(patients), len(patients))])
        if 0 < target[index].sum() < len(index):
            fpr, tpr, _ = skm.roc_curve(target[index], score[index])
            curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        return grid, None, None
    return grid, np.percentile(curves, 2.5, axis=0), np.percentile(curves, 97.5, axis=0)


def roc_figure(y, probabilities, classes, groups=None, thresholds: dict[str, float] | None = None,
               n_resamples: int = 200, seed: int = 0):
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(5, 5))
    curves = one_vs_rest(y, probabilities, classes)
    for i, (name, target, score) in enumerate(curves):
        RocCurveDisplay.from_predictions(target, score, ax=ax, name=readable(name),
                                         plot_chance_level=i == len(curves) - 1,
                                         chance_level_kw={"color": "grey", "linestyle": ":"})
    if len(classes) == 2 and curves:
        _, target, score = curves[0]
        grid, low, high = roc_band(target, score, groups, n_resamples, seed)
        if low is not None:
            ax.fill_between(grid, low, high, color="C0", alpha=0.2, step="post",
                            label=f"95% band ({n_resamples} patient resamples)")
        for marker, (label, t) in zip(MARKERS, (thresholds or {}).items()):
            ax.plot(np.mean(score[target == 0] >= t), np.mean(score[target == 1] >= t), marker, ms=8,
                    mec="black", label=label)
    n, positives = len(y), int(np.sum(np.asarray(y) == 1)) if len(classes) == 2 else None
    ax.set(xlabel=FPR_LABEL, ylabel=TPR_LABEL, xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           title=f"ROC (n = {n} studies" + (f", {positives} positive)" if positives is not None else ")"))
    ax.legend(loc="lower right", fontsize=7)
    return fig


def pr_figure(y, probabilities, classes, thresholds: dict[str, float] | None = None):
    from sklearn.metrics import PrecisionRecallDisplay

    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (name, target, score) in enumerate(one_vs_rest(y, probabilities, classes)):
        PrecisionRecallDisplay.from_predictions(
            target, score, ax=ax, name=readable(name), plot_chance_level=True,
            chance_level_kw={"color": f"C{i}", "linestyle": ":",
                             "label": f"prevalence {target.mean():.2f} ({readable(name)}): chance"})
        if len(classes) == 2:
            for marker, (label, t) in zip(MARKERS, (thresholds or {}).items()):
                called = score >= t
                if called.any():
                    ax.plot(np.mean(called[target == 1]), np.mean(target[called]), marker, ms=8, mec="black",
                            label=label)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (positive predictive value)", xlim=(-0.01, 1.01),
           ylim=(-0.01, 1.01), title=f"Precision-recall (n = {len(y)} studies)")
    ax.legend(loc="lower left", fontsize=7)
    return fig


def reliability_figure(calibration: dict, binary: bool, scaled: dict | None = None):
    """Observed against predicted per bin, each bin's marker sized and labelled by its study count,
    with a histogram of the predictions below: a bin of 2 studies no longer looks like one of 19.
    `scaled` ({"temperature", "calibration"}) adds the curve after temperature scaling."""
    from sklearn.calibration import CalibrationDisplay

    edges = np.asarray(calibration["bin_edges"])
    counts = np.asarray(calibration["bin_counts"])
    used = counts > 0
    predicted = np.asarray(calibration["bin_confidence"])[used]
    observed = np.asarray(calibration["bin_observed"])[used]
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 6.2), sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    CalibrationDisplay(observed, predicted, None, estimator_name="model").plot(
        ax=ax, name=f"model ({calibration['bins']} equal-width bins)", color="C0")
    ax.scatter(predicted, observed, s=12 + 160 * counts[used] / counts.max(), color="C0", alpha=0.5, zorder=3)
    for x, y_, n in zip(predicted, observed, counts[used]):
        ax.annotate(f"n={n}", (x, y_), textcoords="offset points", xytext=(-4, 9 if y_ < 0.5 else -14),
                    fontsize=7, ha="right")
    title = f"Reliability (ECE {calibration['ece']:.3f}, Brier {calibration['brier']:.3f})"
    if scaled is not None:
        after = scaled["calibration"]
        kept = np.asarray(after["bin_counts"]) > 0
        ax.plot(np.asarray(after["bin_confidence"])[kept], np.asarray(after["bin_observed"])[kept], "s--", color="C1",
                label=f"after temperature {scaled['temperature']:.2f} (fitted on {scaled['fitted_on']}): "
                      f"ECE {after['ece']:.3f}")
        title = f"Reliability (ECE {calibration['ece']:.3f} → {after['ece']:.3f} after temperature scaling)"
    what = "predicted probability of metastasis" if binary else "top-label confidence"
    ax.set(xlabel="", ylabel="observed fraction positive" if binary else "observed accuracy", xlim=(0, 1),
           ylim=(-0.02, 1.02), title=title)
    ax.legend(loc="upper left", fontsize=7)
    hist.bar((edges[:-1] + edges[1:]) / 2, counts, width=np.diff(edges), color="C0", alpha=0.6, edgecolor="black")
    hist.set(xlabel=what, ylabel="studies")
    fig.tight_layout()
    return fig


def confusion_figure(matrices: dict[str, np.ndarray], classes):
    """One panel per threshold: counts with the share of each true class, readable class names."""
    from sklearn.metrics import ConfusionMatrixDisplay

    size = 1.1 * len(classes) + 2
    fig, axes = plt.subplots(1, len(matrices), figsize=(size * len(matrices), size), squeeze=False)
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        matrix = np.asarray(matrix)
        display = ConfusionMatrixDisplay(matrix, display_labels=[readable(c) for c in classes])
        display.plot(ax=ax, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=30)
        rows = matrix.sum(axis=1, keepdims=True)
        for (i, j), text in np.ndenumerate(display.text_):
            share = matrix[i, j] / rows[i, 0] if rows[i, 0] else 0.0
            text.set_text(f"{matrix[i, j]}\n({share:.0%})")
            text.set_fontsize(8)
        ax.set(title=title, xlabel="predicted label", ylabel="true label")
    fig.tight_layout()
    return fig


def risk_coverage_figure(referral: dict, split: str):
    """Error, sensitivity and specificity among the answered studies against the share answered, most
    decided first, each with its 95 % patient-bootstrap band; the error when ranked by the test-time
    spread instead (dotted), and the stored referral band's coverage on this split."""
    curve = referral["risk_coverage"]
    coverage = np.asarray(curve["coverage"])
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for colour, name in zip(("C3", "C0", "C2"), ("error", "sensitivity", "specificity")):
        low, high = np.asarray(curve[name]["ci95"], np.float64).T
        ax.plot(coverage, curve[name]["value"], "-", color=colour, label=f"{name} among answered")
        ax.fill_between(coverage, low, high, color=colour, alpha=0.15)
    if referral.get("error_by_tta_spread") is not None:
        ax.plot(coverage, referral["error_by_tta_spread"], ":", color="C3",
                label="error, answered by lowest test-time spread")
    if "band" in referral:
        answered = referral["band"]["figures"]["coverage"]["value"]
        low, high = referral["band"]["band"]
        ax.axvline(answered, color="black", linestyle="--",
                   label=f"stored referral band ({low:.3f}, {high:.3f}): answers {answered:.0%}")
    ax.set(xlabel="share of studies answered (coverage)", ylabel="among answered studies", xlim=(0, 1.01),
           ylim=(-0.02, 1.02), title=f"Risk-coverage on the {split} split (95% bands: patient resamples)")
    ax.legend(loc="center left", fontsize=7)
    fig.tight_layout()
    return fig


def write_plots(out, results: dict, y, probabilities, groups=None, seed: int = 0) -> list[Path]:
    """roc.png, pr.png, confusion_matrix.png, reliability.png and, for a binary evaluation with its
    risk-coverage figures, risk_coverage.png, in `out`."""
    out = Path(out)
    classes = results["classes"]
    thresholds = operating_points(results)
    if thresholds:
        matrices = {f"{label.split(' (')[0]}": results["thresholds"][key]["confusion_matrix"]
                    for label, key in zip(thresholds, ("default", "operating_point"))}
    else:
        matrices = {"most probable class": results["confusion_matrix"]}
    resamples = min(int(results.get("bootstrap", {}).get("resamples", 200)), 500)
    figures = (roc_figure(y, probabilities, classes, groups, thresholds, resamples, seed),
               pr_figure(y, probabilities, classes, thresholds),
               confusion_figure(matrices, classes),
               reliability_figure(results["calibration"], bool(thresholds), results.get("temperature_scaling")))
    names = PLOT_FILES
    if "referral" in results:
        figures += (risk_coverage_figure(results["referral"], results["split"]),)
        names += (RISK_COVERAGE_FILE,)
    return [save_figure(fig, out / name) for fig, name in zip(figures, names)]
