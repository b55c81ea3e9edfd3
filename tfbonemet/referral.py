"""When to refer a study to a physician instead of answering: a band of P(metastasis) around the threshold.

A study is referred when its probability lies strictly inside (low, high), a band symmetric in
log-odds about the stored operating threshold: the studies the model is least decided about.
The distance from the threshold is the selection score of Geifman & El-Yaniv 2017 (softmax
response, "Selective classification for deep neural networks"), which ranked errors as well as
MC-dropout there; one width is all a validation split of a few hundred studies can choose. The
width is chosen on validation for a target coverage (the share of studies answered) or for a
target sensitivity among the answered studies. Risk-coverage curves rank studies by the same
score (or by the test-time-augmentation spread, for comparison) and report error, sensitivity
and specificity among the answered studies against the share answered.
"""
from __future__ import annotations

import numpy as np

EPS = 1e-6
COVERAGES = np.round(np.linspace(0.05, 1.0, 20), 2)  # the risk-coverage grid


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def margin(p_positive, threshold: float) -> np.ndarray:
    """Distance of each P(metastasis) from the threshold in log-odds: the larger, the surer the answer."""
    return np.abs(logit(p_positive) - logit(threshold))


def band(threshold: float, width: float) -> tuple[float, float]:
    """(low, high) on P(metastasis): the probabilities within `width` log-odds of the threshold."""
    centre = float(logit(threshold))
    return float(1 / (1 + np.exp(-(centre - width)))), float(1 / (1 + np.exp(-(centre + width))))


def referred(p_positive, referral_band) -> np.ndarray:
    """True where a study is referred: low < P(metastasis) < high; all False without a band."""
    p = np.asarray(p_positive)
    if referral_band is None:
        return np.zeros(p.shape, bool)
    low, high = referral_band
    return (p > low) & (p < high)


def answered_figures(y_true, p_positive, threshold: float, referral_band) -> dict[str, float]:
    """Coverage, and error, sensitivity and specificity among the answered studies and among all."""
    return split_figures(y_true, np.asarray(p_positive) >= threshold, ~referred(p_positive, referral_band))


def split_figures(y_true, called, answered) -> dict[str, float]:
    """Coverage, and error, sensitivity and specificity among the `answered` studies and among all, from
    each study's call (metastasis or not)."""
    y, called, answered = np.asarray(y_true, np.int64), np.asarray(called, bool), np.asarray(answered, bool)
    out = {"coverage": float(answered.mean()) if len(y) else float("nan")}
    for scope, keep in (("answered", answered), ("all", np.ones_like(answered))):
        out.update({f"{k}_{scope}": v for k, v in _figures(y[keep], called[keep]).items()})
    return out


def _figures(y, called) -> dict[str, float]:
    positives, negatives = y == 1, y == 0
    return {"error": float(np.mean(called != positives)) if len(y) else float("nan"),
            "sensitivity": float(called[positives].mean()) if positives.any() else float("nan"),
            "specificity": float((~called[negatives]).mean()) if negatives.any() else float("nan")}


def choose_band(y_true, p_positive, threshold: float, coverage: float | None = None,
                sensitivity: float | None = None) -> dict | None:
    """The narrowest band meeting the target on (validation) labels and probabilities, with its figures.

    coverage: refer the round((1 - coverage) * n) studies nearest the threshold; sensitivity: refer
    the fewest studies, nearest first, that lift sensitivity among the answered to the target.
    The band's edges lie midway between the margins of the last referred and first answered
    study, so float32 serving and float64 here agree on every validation study. None when no band
    reaches a sensitivity target (every positive would have to be referred).
    """
    y = np.asarray(y_true, np.int64)
    p = np.asarray(p_positive, np.float64)
    order = np.sort(margin(p, threshold))
    if coverage is not None:
        k = int(round((1.0 - coverage) * len(p)))
        rule, target = "coverage", coverage
    else:
        ranked = np.argsort(margin(p, threshold), kind="stable")
        called = (p >= threshold)[ranked]
        positive = (y == 1)[ranked]
        # answered after referring the first k: studies k.. of the ranking
        caught = np.cumsum((called & positive)[::-1])[::-1]
        positives = np.cumsum(positive[::-1])[::-1]
        ok = np.flatnonzero((positives > 0) & (caught >= sensitivity * positives - 1e-12))
        if not len(ok):
            return None
        k = int(ok[0])
        rule, target = "sensitivity", sensitivity
    if k == 0:
        width = 0.0
    elif k < len(order):
        width = float(order[k - 1] + order[k]) / 2
    else:
        width = float(order[-1]) + 1.0
    chosen = band(threshold, width) if width > 0 else None
    return {"band": None if chosen is None else list(chosen), "width_logit": width, "rule": rule,
            "target": float(target), "chosen_on": "validation",
            "figures": answered_figures(y, p, threshold, chosen)}


def risk_coverage(y_true, p_positive, threshold: float, confidence, coverages=COVERAGES) -> dict[str, np.ndarray]:
    """Error, sensitivity and specificity among the answered studies when the most confident share
    `c` of them is answered, for each c in `coverages` (ties keep the given order)."""
    y = np.asarray(y_true, np.int64)
    ranked = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    called = (np.asarray(p_positive) >= threshold)[ranked]
    y = y[ranked]
    out = {"coverage": np.asarray(coverages, np.float64)}
    rows = [_figures(y[:k], called[:k]) for k in np.maximum(1, np.ceil(out["coverage"] * len(y) - 1e-9).astype(int))]
    for name in ("error", "sensitivity", "specificity"):
        out[name] = np.array([r[name] for r in rows])
    return out


def aurc(y_true, p_positive, threshold: float, confidence) -> float:
    """Area under the risk-coverage curve: the mean error over answering the 1, 2, ..., n most confident
    studies (Geifman et al. 2019); lower ranks errors better."""
    y = np.asarray(y_true, np.int64)
    ranked = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    wrong = ((np.asarray(p_positive) >= threshold) != (y == 1))[ranked]
    return float(np.mean(np.cumsum(wrong) / np.arange(1, len(y) + 1))) if len(y) else float("nan")


def describe(chosen: dict | None) -> str:
    """One line on a chosen band: its edges, the target and what it does on the split it was chosen on."""
    if chosen is None:
        return ("Referral: no band reaches the target sensitivity among answered studies on validation (every "
                "positive would be referred); no study is labelled refer")
    target = f"{chosen['rule']} {chosen['target']:g} on {chosen['chosen_on']}"
    if chosen["band"] is None:
        return f"Referral ({target}): met without referring any study; no band"
    f = chosen["figures"]
    low, high = chosen["band"]
    return (f"Referral band P(metastasis) in ({low:.3f}, {high:.3f}) ({target}): answers {f['coverage']:.0%} of "
            f"studies; sensitivity {f['sensitivity_answered']:.3f} among answered vs {f['sensitivity_all']:.3f} "
            f"among all, specificity {f['specificity_answered']:.3f} vs {f['specificity_all']:.3f}")
