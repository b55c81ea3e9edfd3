"""Evaluation report: metrics.json, report.md and its PNG figures, every file written atomically.

The seed papers' figures sit beside this run's only as context: they come from other datasets
(other patients, cameras, label definitions and splits), so they are not a benchmark.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

# Only figures checked against each paper's abstract; a seed whose figures could not be checked is
# listed in UNVERIFIED instead of given numbers.
PUBLISHED = [
    {"study": "Guo et al. 2023, J Med Biol Eng 43:53 (two-view aggregation)", "task": "binary",
     "data": "whole-body anterior + posterior scans of lung-cancer patients (means reported)",
     "accuracy": 0.7710, "precision": 0.8311, "recall": 0.6827, "f1": 0.7475},
    {"study": "Lin et al. 2021, Sci Rep 11:4223", "task": "binary",
     "data": "thoracic SPECT crops; test samples drawn from the augmented set",
     "accuracy": 0.9807, "precision": 0.9900, "recall": 0.9830, "specificity": 0.9890, "f1": 0.9802,
     "auc": 0.9933},
    {"study": "Lin et al. 2021, Med Phys 48:5782 (Dscint)", "task": "multiclass",
     "data": "whole-body scans, normal / metastasis / arthritis / thyroid carcinoma; test samples drawn from the "
             "augmented set",
     "accuracy": 0.9801, "precision": 0.9795, "recall": 0.9791, "specificity": 0.9933, "f1": 0.9792},
]
UNVERIFIED = ("Yim et al. 2022",)
FIGURE_KEYS = ("accuracy", "precision", "recall", "specificity", "f1", "auc")


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see a half-written file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, buffer.getvalue())


def one_vs_rest(y, probabilities, classes):
    """(name, binary labels, scores) per curve: the positive class for binary tasks, every class otherwise."""
    if len(classes) == 2:
        return [(classes[1], (y == 1).astype(int), probabilities[:, 1])]
    return [(name, (y == c).astype(int), probabilities[:, c]) for c, name in enumerate(classes)
            if 0 < (y == c).sum() < len(y)]


def plot_roc(y, probabilities, classes, path):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, target, score in one_vs_rest(y, probabilities, classes):
        fpr, tpr, _ = skm.roc_curve(target, score)
        ax.plot(fpr, tpr, label=f"{name} (AUC {skm.auc(fpr, tpr):.3f})")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path)


def plot_pr(y, probabilities, classes, path):
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, target, score in one_vs_rest(y, probabilities, classes):
        precision, recall, _ = skm.precision_recall_curve(target, score)
        ap = skm.average_precision_score(target, score)
        ax.step(recall, precision, where="post", label=f"{name} (AP {ap:.3f}, prevalence {target.mean():.2f})")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision-recall", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=8)
    save_figure(fig, path)


def plot_confusion(matrix, classes, path, title):
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.2 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center",
                color="white" if count > matrix.max() / 2 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
           title=title)
    ax.set_xticklabels(classes, rotation=30, ha="right", fontsize=8)
    ax.set_yticklabels(classes, fontsize=8)
    save_figure(fig, path)


def plot_reliability(calibration, binary, path):
    edges = np.asarray(calibration["bin_edges"])
    centres, counts = (edges[:-1] + edges[1:]) / 2, np.asarray(calibration["bin_counts"])
    used = counts > 0
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.bar(centres[used], np.asarray(calibration["bin_observed"])[used], width=np.diff(edges)[used], alpha=0.6,
           edgecolor="black", label="observed")
    ax.plot(np.asarray(calibration["bin_confidence"])[used], np.asarray(calibration["bin_observed"])[used], "o",
            color="C1", label="bin mean confidence")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set(xlabel="predicted probability of metastasis" if binary else "top-label confidence",
           ylabel="observed fraction positive" if binary else "observed accuracy",
           title=f"Reliability (ECE {calibration['ece']:.3f}, Brier {calibration['brier']:.3f})",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path)


def fmt(entry) -> str:
    low, high = entry["ci95"]
    return f"{entry['value']:.3f} ({low:.3f}–{high:.3f})"


def markdown(results: dict, source: str) -> str:
    r, lines = results, []
    data = "synthetic phantom" if r["data"] == "phantom" else r["data"]
    lines += [f"# Evaluation of {source} on the {r['split']} split", "",
              f"Model `{r['model']}` on {data} data, task **{r['task']}** ({', '.join(r['classes'])}); "
              f"{r['n_studies']} studies from {r['n_patients']} patients; class counts {r['class_counts']}.",
              f"95% confidence intervals: percentile bootstrap, {r['bootstrap']['resamples']} resamples of "
              "whole patients.", ""]
    if "thresholds" in r:
        default, op = r["thresholds"]["default"], r["thresholds"]["operating_point"]
        lines += ["## Figures of merit", "",
                  f"| figure | threshold 0.5 | operating point ({op['method']}, t = {op['threshold']:.3f}) |",
                  "|---|---|---|"]
        lines += [f"| {k} | {fmt(default['figures'][k])} | {fmt(op['figures'][k])} |" for k in default["figures"]]
        lines += ["", f"The operating point was chosen on the {op['chosen_on']} split.", ""]
    else:
        lines += ["## Figures of merit", "", "| figure | value (95% CI) |", "|---|---|"]
        lines += [f"| {k.replace('_', ' ')} | {fmt(v)} |" for k, v in r["averages"].items()]
        lines += ["", "### Per class (one-vs-rest)", "",
                  "| class | support | precision | recall | specificity | F1 | ROC AUC | PR AUC |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {name} | {c['support']} | {c['precision']:.3f} | {c['recall']:.3f} | {c['specificity']:.3f} "
                  f"| {c['f1']:.3f} | {c['auc']:.3f} | {c['pr_auc']:.3f} |" for name, c in r["per_class"].items()]
        lines += [""]
    cal = r["calibration"]
    lines += ["## Calibration", "",
              f"Expected calibration error {cal['ece']:.3f} ({cal['bins']} equal-width bins), "
              f"Brier score {cal['brier']:.3f}.", "",
              "![ROC](roc.png) ![Precision-recall](pr.png)", "",
              "![Confusion matrix](confusion_matrix.png) ![Reliability diagram](reliability.png)", ""]
    rows = [p for p in PUBLISHED if p["task"] == r["task"]]
    lines += ["## Beside published figures (other datasets — not comparable)", "",
              "The rows below are numbers **reported by other studies on their own, different datasets**; "
              "they give scale, not a benchmark. This run's row is on the data named above"
              + (" (multiclass: macro averages)." if r["task"] != "binary" else "."), "",
              "| source | data | " + " | ".join(FIGURE_KEYS) + " |", "|---" * (len(FIGURE_KEYS) + 2) + "|",
              f"| this run ({source}) | {data}, {r['split']} split | " + " | ".join(
                  f"{r['summary'][k]:.3f}" for k in FIGURE_KEYS) + " |"]
    lines += [f"| {p['study']} | {p['data']} | " + " | ".join(
        f"{p[k]:.3f}" if k in p else "—" for k in FIGURE_KEYS) + " |" for p in rows]
    lines += ["", f"Not listed because their figures could not be checked here: {'; '.join(UNVERIFIED)}.", ""]
    return "\n".join(lines)


def write_report(out: Path, results: dict, y, probabilities, source: str) -> None:
    """metrics.json, report.md, roc.png, pr.png, confusion_matrix.png and reliability.png in `out`."""
    out = Path(out)
    classes = results["classes"]
    binary = "thresholds" in results
    plot_roc(y, probabilities, classes, out / "roc.png")
    plot_pr(y, probabilities, classes, out / "pr.png")
    matrix = results["thresholds"]["default"]["confusion_matrix"] if binary else results["confusion_matrix"]
    plot_confusion(matrix, classes, out / "confusion_matrix.png",
                   "Confusion matrix (threshold 0.5)" if binary else "Confusion matrix (arg-max)")
    plot_reliability(results["calibration"], binary, out / "reliability.png")
    write_atomic(out / "metrics.json", json.dumps(results, indent=2, sort_keys=True, default=float))
    write_atomic(out / "report.md", markdown(results, source))
