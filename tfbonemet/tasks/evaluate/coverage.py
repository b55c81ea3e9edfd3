"""Risk-coverage and the stored referral band on one split, with patient-bootstrap intervals.

Studies are answered most-decided first (distance of P(metastasis) from the stored threshold in
log-odds, the score the referral band uses: tfbonemet.referral); at each share answered the
error, sensitivity and specificity among the answered studies get 95 % intervals from the same
whole-patient resamples as every other figure (metrics.bootstrap_ci). The area under the error
curve is also given for ranking by the test-time-shift spread (tfbonemet.models.tta), so a split
shows which of the two ranks errors better.
"""
from __future__ import annotations

import numpy as np

from tfbonemet import metrics as metrics_lib
from tfbonemet import referral

CURVE_FIGURES = ("error", "sensitivity", "specificity")
BAND_FIGURES = ("coverage", "error_answered", "sensitivity_answered", "specificity_answered", "error_all",
                "sensitivity_all", "specificity_all")


def coverage_results(y, p_positive, uncertainty, groups, threshold: float, band, n_bootstrap: int, seed: int = 0,
                     advance=None) -> dict:
    """The risk-coverage curve (values and 95 % bands), AURC by both rankings, and the figures at `band`."""
    y, p_positive = np.asarray(y), np.asarray(p_positive, np.float64)
    confidence = referral.margin(p_positive, threshold)
    columns = np.stack([p_positive, confidence], axis=1)

    def statistic(labels, s):
        curve = referral.risk_coverage(labels, s[:, 0], threshold, s[:, 1])
        out = {f"{name}@{c:.2f}": v for name in CURVE_FIGURES for c, v in zip(curve["coverage"], curve[name])}
        if band is not None:
            out.update(referral.answered_figures(labels, s[:, 0], threshold, band))
        if advance is not None:
            advance(1)
        return out

    values = statistic(y, columns)
    intervals = metrics_lib.bootstrap_ci(statistic, y, columns, groups, n_bootstrap, seed=seed)
    curve = {"coverage": referral.COVERAGES.tolist()}
    for name in CURVE_FIGURES:
        keys = [f"{name}@{c:.2f}" for c in referral.COVERAGES]
        curve[name] = {"value": [values[k] for k in keys], "ci95": [list(intervals[k]) for k in keys]}
    spread = np.asarray(uncertainty, np.float64)
    known = np.isfinite(spread).all()
    results = {"threshold": float(threshold), "ranked_by": "distance of P(metastasis) from the threshold (log-odds)",
               "risk_coverage": curve,
               "aurc": {"threshold_distance": referral.aurc(y, p_positive, threshold, confidence),
                        "tta_spread": referral.aurc(y, p_positive, threshold, -spread) if known else None},
               "error_by_tta_spread": (referral.risk_coverage(y, p_positive, threshold, -spread)["error"].tolist()
                                       if known else None)}
    if band is not None:
        results["band"] = {"band": list(band), "figures": {k: {"value": values[k], "ci95": list(intervals[k])}
                                                           for k in BAND_FIGURES}}
    return results


def uncertainty_summary(uncertainty, wrong) -> dict:
    """Median test-time-shift spread over all studies and over the wrongly and rightly called ones (called
    at the threshold, referral aside)."""
    spread, wrong = np.asarray(uncertainty, np.float64), np.asarray(wrong, bool)

    def median(values):
        return float(np.median(values)) if len(values) else float("nan")
    return {"median": median(spread), "median_wrong": median(spread[wrong]), "median_right": median(spread[~wrong])}
