"""The seeds' figures of merit, computed with scikit-learn from class probabilities."""
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
