"""The referral band, risk-coverage and temperature scaling on known numbers (no model)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from tfbonemet import metrics, referral
from tfbonemet.config import resolve
from tfbonemet.errors import ConfigError
from tfbonemet.run import validate


def scores(n=400, seed=0):
    """Labels and P(metastasis) whose errors crowd near 0.5, as a trained model's do."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1.5, n) + 2.0 * (2 * y - 1))))
    return y, p


def test_coverage_band_answers_the_target_share_and_errs_less_among_them():
    y, p = scores()
    chosen = referral.choose_band(y, p, 0.5, coverage=0.85)
    low, high = chosen["band"]
    assert low < 0.5 < high
    answered = ~referral.referred(p, chosen["band"])
    assert answered.mean() == pytest.approx(0.85, abs=1 / len(p))
    f = chosen["figures"]
    assert f["coverage"] == pytest.approx(answered.mean())
    assert f["error_answered"] < f["error_all"]
    assert f["sensitivity_answered"] > f["sensitivity_all"] and f["specificity_answered"] > f["specificity_all"]
    assert chosen["rule"] == "coverage" and chosen["chosen_on"] == "validation"


def test_band_edges_fall_between_studies_so_float32_agrees():
    y, p = scores()
    chosen = referral.choose_band(y, p, 0.4, coverage=0.8)
    inside = referral.referred(p, chosen["band"])
    assert np.array_equal(inside, referral.referred(p.astype(np.float32), np.float32(chosen["band"])))


def test_sensitivity_band_is_the_narrowest_reaching_the_target():
    y, p = scores()
    base = referral.answered_figures(y, p, 0.5, None)["sensitivity_all"]
    target = min(0.99, base + 0.05)
    chosen = referral.choose_band(y, p, 0.5, sensitivity=target)
    assert chosen["figures"]["sensitivity_answered"] >= target
    narrower = referral.band(0.5, chosen["width_logit"] * 0.98)
    assert referral.answered_figures(y, p, 0.5, narrower)["sensitivity_answered"] < target
    # already met: no band at all
    met = referral.choose_band(y, p, 0.5, sensitivity=base / 2)
    assert met["band"] is None and not referral.referred(p, met["band"]).any()


def test_unreachable_sensitivity_gives_no_band_and_says_so():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.9, 0.2, 0.3])  # every positive below the threshold
    assert referral.choose_band(y, p, 0.5, sensitivity=1.0) is None
    assert "no band" in referral.describe(None)


def test_risk_coverage_falls_with_a_score_that_ranks_errors():
    y, p = scores()
    curve = referral.risk_coverage(y, p, 0.5, referral.margin(p, 0.5))
    assert curve["coverage"][-1] == 1.0
    assert curve["error"][-1] == pytest.approx(np.mean((p >= 0.5) != y))
    assert curve["error"][len(curve["error"]) // 2] < curve["error"][-1]
    rng = np.random.default_rng(1)
    assert referral.aurc(y, p, 0.5, referral.margin(p, 0.5)) < referral.aurc(y, p, 0.5, rng.random(len(y)))


def test_temperature_scaling_recovers_an_overconfident_model():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-z))).astype(int)  # calibrated at logits z
    over = 1 / (1 + np.exp(-3 * z))  # three times too confident
    probabilities = np.stack([1 - over, over], 1)
    temperature = metrics.fit_temperature(y, probabilities)
    assert temperature == pytest.approx(3.0, rel=0.15)
    scaled = metrics.with_temperature(probabilities, temperature)
    assert np.allclose(scaled.sum(1), 1.0)
    assert np.array_equal(np.argsort(scaled[:, 1]), np.argsort(probabilities[:, 1]))
    assert metrics.calibration(y, scaled)["ece"] < metrics.calibration(y, probabilities)["ece"] / 2


@pytest.mark.parametrize("overrides, message", [
    ({"refer_coverage": 1.5}, "refer_coverage must be in (0, 1]"),
    ({"refer_coverage": 0.8, "refer_sensitivity": 0.9}, "not both"),
    ({"refer_coverage": 0.8, "task": "multiclass"}, "needs the binary task"),
    ({"uncertainty_shift": 0.5}, "uncertainty_shift must be in (0, 0.1]"),
])
def test_bad_referral_options_are_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(resolve(overrides=overrides))
