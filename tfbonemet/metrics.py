"""The figures of merit the published systems report, computed with scikit-learn from class probabilities."""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def binary_metrics(y_true, p_positive, threshold: float = 0.5) -> dict[str, float]:
    """Accuracy, precision, recall (sensitivity), specificity, F1 and ROC AUC at `threshold`."""
    y_true = np.asarray(y_true, np.int64)
    p_positive = np.asarray(p_positive, np.float64)
    y_pred = (p_positive >= threshold).astype(np.int64)
    tn, fp, fn, tp = skm.confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel()
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
        "specificity": float(tn / (tn + fp)) if (tn + fp) else 0.0,
        "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        "auc": float(skm.roc_auc_score(y_true, p_positive)) if both_classes else float("nan"),
        "threshold": float(threshold),
        "n": int(len(y_true)),
        "positives": int(y_true.sum()),
    }


def multiclass_metrics(y_true, probabilities) -> dict[str, float]:
    """Macro-averaged accuracy, precision, recall, specificity, F1 and one-vs-rest AUC."""
    y_true = np.asarray(y_true, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    classes = np.arange(probabilities.shape[1])
    y_pred = probabilities.argmax(axis=1)
    cm = skm.confusion_matrix(y_true, y_pred, labels=classes)
    fp = cm.sum(axis=0) - np.diag(cm)
    tn = cm.sum() - cm.sum(axis=1) - fp
    present = [c for c in classes if (y_true == c).any()]
    try:
        auc = skm.roc_auc_score(y_true, probabilities[:, present] / probabilities[:, present].sum(1, keepdims=True),
                                multi_class="ovr", average="macro", labels=present) if len(present) > 2 else float("nan")
    except ValueError:
        auc = float("nan")
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "precision": float(skm.precision_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "recall": float(skm.recall_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "specificity": float(np.mean(np.divide(tn, tn + fp, out=np.zeros(len(classes)), where=(tn + fp) > 0))),
        "f1": float(skm.f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "auc": float(auc),
        "n": int(len(y_true)),
    }


def classification_metrics(y_true, probabilities) -> dict[str, float]:
    """Binary figures for two-class probabilities (positive = class 1), macro figures otherwise."""
    probabilities = np.asarray(probabilities)
    if probabilities.shape[1] == 2:
        return binary_metrics(y_true, probabilities[:, 1])
    return multiclass_metrics(y_true, probabilities)


def pr_auc(y_true, scores) -> float:
    """Area under the precision-recall curve (average precision; the step-wise sum, not trapezoids)."""
    y_true = np.asarray(y_true, np.int64)
    return float(skm.average_precision_score(y_true, scores)) if len(np.unique(y_true)) == 2 else float("nan")


def youden_threshold(y_true, p_positive) -> float:
    """Threshold maximising sensitivity + specificity - 1 on the ROC curve."""
    fpr, tpr, thresholds = skm.roc_curve(y_true, p_positive)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0))


def sensitivity_threshold(y_true, p_positive, target: float) -> float:
    """Highest threshold whose sensitivity reaches `target` (so specificity is as high as it can be)."""
    fpr, tpr, thresholds = skm.roc_curve(y_true, p_positive, drop_intermediate=False)
    reached = np.flatnonzero(tpr >= target)
    return float(min(thresholds[reached[0]], 1.0))


def max_f1_threshold(y_true, p_positive) -> float:
    """Threshold maximising F1 on the precision-recall curve (the highest such threshold on ties)."""
    precision, recall, thresholds = skm.precision_recall_curve(y_true, p_positive)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=(precision + recall) > 0)[:-1]
    return float(thresholds[int(np.argmax(f1))])


from tfbonemet.vocab import THRESHOLD_RULES  # noqa: E402


def operating_threshold(y_true, p_positive, rule: str = "max_f1", target_sensitivity: float = 0.9) -> float:
    """The decision threshold a rule picks on (validation) labels and positive-class probabilities.

    max_f1: best F1 (the balance of missed and false calls at the data's prevalence); youden:
    best sensitivity + specificity - 1; sensitivity: the highest threshold reaching the target.
    """
    if len(np.unique(y_true)) < 2:
        raise ValueError("an operating threshold needs both classes in the split it is chosen on")
    if rule == "max_f1":
        return max_f1_threshold(y_true, p_positive)
    if rule == "youden":
        return youden_threshold(y_true, p_positive)
    if rule == "sensitivity":
        return sensitivity_threshold(y_true, p_positive, target_sensitivity)
    raise ValueError(f"unknown threshold rule {rule!r}; choose one of {', '.join(THRESHOLD_RULES)}")


def calibration(y_true, probabilities, bins: int = 10) -> dict:
    """Expected calibration error and Brier score, with the per-bin figures of a reliability diagram.

    Binary: the positive-class probability against the positive rate. Multiclass: the top-label
    confidence against top-label accuracy, and the multiclass Brier score (sum over classes).
    """
    y_true = np.asarray(y_true, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    onehot = np.eye(probabilities.shape[1])[y_true]
    if probabilities.shape[1] == 2:
        confidence, outcome = probabilities[:, 1], y_true.astype(np.float64)
        brier = float(np.mean((confidence - outcome) ** 2))
    else:
        confidence = probabilities.max(axis=1)
        outcome = (probabilities.argmax(axis=1) == y_true).astype(np.float64)
        brier = float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    mean_conf = np.bincount(index, confidence, bins) / np.maximum(counts, 1)
    frac_pos = np.bincount(index, outcome, bins) / np.maximum(counts, 1)
    ece = float(np.sum(counts / max(len(y_true), 1) * np.abs(frac_pos - mean_conf)))
    return {"ece": ece, "brier": brier, "bins": bins, "bin_edges": edges.tolist(), "bin_counts": counts.tolist(),
            "bin_confidence": mean_conf.tolist(), "bin_observed": frac_pos.tolist()}


def per_class_metrics(y_true, probabilities, class_names) -> dict:
    """One-vs-rest figures per class, plus macro and micro averages (micro AUC pools all class scores)."""
    y_true = np.asarray(y_true, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    classes = np.arange(probabilities.shape[1])
    y_pred = probabilities.argmax(axis=1)
    cm = skm.confusion_matrix(y_true, y_pred, labels=classes)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    onehot = np.eye(len(classes))[y_true]
    per_class = {}
    for c, name in zip(classes, class_names):
        has_both = 0 < onehot[:, c].sum() < len(y_true)
        per_class[name] = {
            "precision": float(skm.precision_score(y_true == c, y_pred == c, zero_division=0)),
            "recall": float(skm.recall_score(y_true == c, y_pred == c, zero_division=0)),
            "specificity": float(tn[c] / (tn[c] + fp[c])) if tn[c] + fp[c] else 0.0,
            "f1": float(skm.f1_score(y_true == c, y_pred == c, zero_division=0)),
            "auc": float(skm.roc_auc_score(onehot[:, c], probabilities[:, c])) if has_both else float("nan"),
            "pr_auc": pr_auc(onehot[:, c], probabilities[:, c]),
            "support": int(onehot[:, c].sum()),
        }
    macro = {k: float(np.nanmean([v[k] for v in per_class.values()]))
             for k in ("precision", "recall", "specificity", "f1", "auc", "pr_auc")}
    micro = {
        "precision": float(tp.sum() / (tp.sum() + fp.sum())),
        "recall": float(tp.sum() / (tp.sum() + fn.sum())),
        "specificity": float(tn.sum() / (tn.sum() + fp.sum())),
        "f1": float(skm.f1_score(y_true, y_pred, labels=classes, average="micro", zero_division=0)),
        "auc": float(skm.roc_auc_score(onehot.ravel(), probabilities.ravel())),
        "pr_auc": float(skm.average_precision_score(onehot.ravel(), probabilities.ravel())),
    }
    return {"per_class": per_class, "macro": macro, "micro": micro}


def bootstrap_ci(statistic, y_true, probabilities, groups, n_resamples: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile confidence intervals of each figure `statistic(y, p)` returns, resampling whole patients.

    Studies of one patient are correlated, so resampling studies would understate the spread;
    resamples where a figure is undefined (one class only) are skipped for that figure.
    """
    y_true, probabilities, groups = np.asarray(y_true), np.asarray(probabilities), np.asarray(groups)
    patients, members = np.unique(groups, return_inverse=True)
    by_patient = [np.flatnonzero(members == i) for i in range(len(patients))]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        chosen = rng.integers(0, len(patients), len(patients))
        index = np.concatenate([by_patient[i] for i in chosen])
        for key, value in statistic(y_true[index], probabilities[index]).items():
            samples.setdefault(key, []).append(value)
    tail = (1.0 - level) / 2 * 100
    intervals = {}
    for key, values in samples.items():
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        intervals[key] = ((float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
                          if len(values) else (float("nan"), float("nan")))
    return intervals


def with_temperature(probabilities, temperature) -> np.ndarray:
    """Probabilities with their log-probabilities divided by `temperature` (a number, or one per row as an
    (n, 1) array) and renormalised: softmax(z / T)."""
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(y_true, probabilities) -> float:
    """The temperature minimising the negative log-likelihood of (validation) labels: one scalar that
    rescales confidence without changing any ranking (Guo et al. 2017, "On calibration of modern
    neural networks"), searched over 0.05 to 20."""
    from scipy.optimize import minimize_scalar

    y_true = np.asarray(y_true, np.int64)

    def nll(log_t):
        scaled = with_temperature(probabilities, float(np.exp(log_t)))
        return -float(np.mean(np.log(np.clip(scaled[np.arange(len(y_true)), y_true], 1e-12, 1.0))))
    return float(np.exp(minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded").x))
