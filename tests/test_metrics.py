"""Metric correctness on hand-computed cases, and agreement with Keras' own metrics."""
import keras
import numpy as np
import pytest

from tfbonemet import metrics

# 8 studies: 4 positive, 4 negative; at threshold 0.5: TP 3, FN 1, TN 3, FP 1
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
P = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])


def test_binary_figures_by_hand():
    m = metrics.binary_metrics(Y, P)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    # pairs (pos, neg) ranked correctly: 0.9,0.8 beat all 4; 0.6 beats 3; 0.3 beats 2 -> 13/16
    assert m["auc"] == pytest.approx(13 / 16)


def test_pr_auc_by_hand():
    # ranking 0.9+,0.8+,0.7-,0.6+,0.4-,0.3+: AP = (1 + 1 + 3/4 + 4/6) / 4
    assert metrics.pr_auc(Y, P) == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    assert np.isnan(metrics.pr_auc(np.ones(3), [0.1, 0.5, 0.9]))


def test_operating_points():
    # Youden J: threshold 0.6 gives sens 3/4, spec 1 - 1/4 = 3/4 (J .5); 0.8 gives 1/2, 1 (J .5); 0.3 gives 1, 1/2
    assert metrics.youden_threshold(Y, P) in (pytest.approx(0.3), pytest.approx(0.6), pytest.approx(0.8))
    assert metrics.sensitivity_threshold(Y, P, 1.0) == pytest.approx(0.3)
    assert metrics.sensitivity_threshold(Y, P, 0.5) == pytest.approx(0.8)
    t = metrics.sensitivity_threshold(Y, P, 0.9)
    assert metrics.binary_metrics(Y, P, t)["recall"] >= 0.9


def test_calibration_by_hand():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.95, 0.95, 0.15, 0.15])
    c = metrics.calibration(y, np.stack([1 - p, p], 1), bins=10)
    # bins: [0.1,0.2) holds two with observed 1.0 (gap .85); [0.9,1] holds two with observed .5 (gap .45)
    assert c["ece"] == pytest.approx(0.5 * 0.85 + 0.5 * 0.45)
    assert c["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert sum(c["bin_counts"]) == 4
    perfect = metrics.calibration([0, 1], [[1.0, 0.0], [0.0, 1.0]])
    assert perfect["ece"] == 0 and perfect["brier"] == 0


def test_multiclass_per_class_macro_micro_by_hand():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.7 + 0.1  # predictions 0,1,1,1,2,0
    m = metrics.per_class_metrics(y, probs, ["a", "b", "c"])
    assert m["per_class"]["a"]["precision"] == pytest.approx(1 / 2)
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(1.0)
    assert m["per_class"]["c"]["recall"] == pytest.approx(1 / 2)
    assert m["per_class"]["b"]["specificity"] == pytest.approx(3 / 4)
    assert m["macro"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    # single-label multiclass: micro precision = micro recall = accuracy = 4/6
    assert m["micro"]["precision"] == m["micro"]["recall"] == pytest.approx(4 / 6)
    assert m["micro"]["specificity"] == pytest.approx(1 - 2 / 12)
    # macro figures agree with the existing multiclass_metrics
    old = metrics.multiclass_metrics(y, probs)
    assert old["precision"] == pytest.approx(m["macro"]["precision"])
    assert old["specificity"] == pytest.approx(m["macro"]["specificity"])


def test_agrees_with_keras_metrics():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.random(200) * 0.65, 0, 1)
    ours = metrics.binary_metrics(y, p)
    for metric, key in ((keras.metrics.Precision(thresholds=0.5), "precision"),
                        (keras.metrics.Recall(thresholds=0.5), "recall"),
                        (keras.metrics.BinaryAccuracy(threshold=0.5), "accuracy")):
        metric.update_state(y, p)
        assert float(metric.result()) == pytest.approx(ours[key], abs=1e-6)
    roc = keras.metrics.AUC(num_thresholds=2000)
    roc.update_state(y, p)
    assert float(roc.result()) == pytest.approx(ours["auc"], abs=2e-3)
    pr = keras.metrics.AUC(curve="PR", num_thresholds=2000)
    pr.update_state(y, p)
    assert float(pr.result()) == pytest.approx(metrics.pr_auc(y, p), abs=2e-2)
    f1 = keras.metrics.F1Score(threshold=0.5)
    f1.update_state(y[:, None].astype("float32"), p[:, None].astype("float32"))
    assert float(f1.result()[0]) == pytest.approx(ours["f1"], abs=1e-6)


def test_bootstrap_ci_contains_point_estimate_and_resamples_patients():
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(30), 2)  # two studies per patient
    y = np.repeat(rng.integers(0, 2, 30), 2)
    p = np.clip(0.4 * y + 0.6 * rng.random(60), 0, 1)
    probs = np.stack([1 - p, p], 1)
    def statistic(yy, pp):
        return {"accuracy": float(np.mean((pp[:, 1] >= 0.5) == yy)), "pr_auc": metrics.pr_auc(yy, pp[:, 1])}

    ci = metrics.bootstrap_ci(statistic, y, probs, patients, n_resamples=100, seed=0)
    point = statistic(y, probs)
    for key in point:
        low, high = ci[key]
        assert low <= point[key] <= high and high - low > 0
    # resampling whole patients keeps each patient's studies together
    seen = []
    metrics.bootstrap_ci(lambda yy, pp: seen.append(len(yy)) or {"n": len(yy)}, y, probs, patients, 20)
    assert all(n % 2 == 0 for n in seen)
