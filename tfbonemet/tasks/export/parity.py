"""Parity: each exported artefact against the Keras model on the validation split, within a tolerance."""
from __future__ import annotations

import numpy as np

from tfbonemet import metrics as metrics_lib

# Per format: (max |probability difference|, |AUC difference|, tie width), against the Keras model
# on the validation split. Float32 paths run the same ops (only fusion and summation order differ:
# ~1e-6); float16 weights carry 11-bit mantissas (~1e-3 on a probability); dynamic-range int8
# quantises weights per channel and activations per batch (~1e-2); full int8 also fixes activation
# ranges from calibration and outputs probabilities in steps of 1/256 (~0.004).
# The tie width is the probability gap a format cannot be expected to keep in order: the AUC bound
# grows by the share of positive/negative pairs the Keras model separates by less than it, and is
# never below one pair, 1/(positives * negatives), the finest change a validation split can show.
# A model with well-separated probabilities gets the AUC bound as listed.
TOLERANCES = {
    "savedmodel": (1e-4, 1e-3, 1e-6),
    "float32": (1e-4, 1e-3, 1e-6),
    "float16": (5e-3, 5e-3, 1e-3),
    "dynamic_int8": (0.05, 0.01, 0.01),
    "int8": (0.08, 0.01, 0.01),
}
MIN_STUDIES = 20  # fewer validation studies than this: probabilities are compared, but the check is weak


def parity(name: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray,
           uncertainty: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Max |Δp| and ΔAUC of an artefact against the Keras model, and whether both are within tolerance.

    With `uncertainty` (Keras's, the artefact's), its max difference is checked too, against twice the
    probability tolerance: the uncertainty is a difference of two probabilities.
    """
    max_abs = float(np.max(np.abs(reference - candidate)))
    auc_ref = metrics_lib.classification_metrics(labels, reference)["auc"]
    auc = metrics_lib.classification_metrics(labels, candidate)["auc"]
    delta = 0.0 if np.isnan(auc_ref) and np.isnan(auc) else float(auc - auc_ref)
    tol_p, tol_auc, tie = TOLERANCES[name]
    if reference.shape[1] == 2 and 0 < labels.sum() < len(labels):
        gaps = np.abs(reference[labels == 1, 1][:, None] - reference[labels == 0, 1][None, :])
        tol_auc = max(tol_auc + float(np.mean(gaps <= tie)), 1.0 / gaps.size)
    # a bound this loose (or no AUC at all) cannot fail: say the AUC was not checked instead of passing it
    auc_checked = bool(np.isfinite(auc_ref) and tol_auc < 0.1)
    passed = bool(max_abs <= tol_p and (not auc_checked or abs(delta) <= tol_auc))
    spread = {}
    if uncertainty is not None:
        spread = {"uncertainty_max_abs_diff": float(np.max(np.abs(uncertainty[0] - uncertainty[1])))}
        passed = passed and spread["uncertainty_max_abs_diff"] <= 2 * tol_p
    return {"max_abs_diff": max_abs, **spread, "auc_keras": float(auc_ref), "auc": float(auc), "auc_diff": delta,
            "tolerance": {"max_abs_diff": tol_p, "auc_diff": tol_auc}, "n": int(len(labels)),
            "auc_checked": auc_checked, "passed": passed, "verdict": verdict(passed, auc_checked, len(labels))}


def verdict(passed: bool, auc_checked: bool, n: int) -> str:
    """What the gate could and could not check, in words: a gate that cannot check must not read as a pass."""
    if not passed:
        return "FAILED"
    caveats = []
    if not auc_checked:
        caveats.append("AUC not checked: the validation split is too small or one-class")
    if n < MIN_STUDIES:
        caveats.append(f"only {n} validation studies (fewer than {MIN_STUDIES}): a weak check")
    return "ok" + (f" ({'; '.join(caveats)})" if caveats else "")


def parity_table(results: dict) -> str:
    lines = [f"{'artefact':<14}{'max|Δp|':>10}{'max|Δu|':>10}{'ΔAUC':>9}{'tolerance':>18}  result"]
    for name, r in results.items():
        tol = f"{r['tolerance']['max_abs_diff']:g} / {r['tolerance']['auc_diff']:.3g}"
        spread = r.get("uncertainty_max_abs_diff", float("nan"))
        lines.append(f"{name:<14}{r['max_abs_diff']:>10.2e}{spread:>10.2e}{r['auc_diff']:>+9.4f}{tol:>18}  "
                     f"{r['verdict']}")
    return "\n".join(lines)
