"""Threshold calibration: the quantile is exact, POT tracks the tail, fallbacks say why."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from stream.errors import ConfigError
from training.calibrate import MIN_PEAKS, calibrate_threshold, residual_scale


def test_quantile_method_is_the_empirical_quantile() -> None:
    scores = np.random.default_rng(1).gamma(2.0, size=50_000)
    t = calibrate_threshold(scores, "quantile", risk=1e-3)
    assert t["value"] == pytest.approx(float(np.quantile(scores, 0.999)))
    assert t["method"] == "quantile" and t["n"] == len(scores)
    assert np.mean(scores > t["value"]) == pytest.approx(1e-3, abs=2e-4)


@pytest.mark.parametrize("dist", [stats.expon(), stats.lognorm(0.6), stats.t(5)])
def test_pot_lands_near_the_true_tail_quantile(dist) -> None:
    risk = 1e-4
    scores = np.abs(dist.rvs(size=200_000, random_state=np.random.default_rng(2)))
    truth = float(np.quantile(np.abs(dist.rvs(size=4_000_000,
                                               random_state=np.random.default_rng(3))),
                              1 - risk))
    t = calibrate_threshold(scores, "pot", risk=risk, initial_quantile=0.98)
    assert t["method"] == "pot" and t["n_peaks"] == pytest.approx(0.02 * len(scores), rel=0.01)
    assert t["value"] == pytest.approx(truth, rel=0.15)
    assert t["initial_threshold"] < t["value"]


def test_pot_extrapolates_past_the_largest_score_for_tiny_risks() -> None:
    scores = np.random.default_rng(4).exponential(size=50_000)
    t = calibrate_threshold(scores, "pot", risk=1e-6)  # risk·n = 0.05 of a sample
    assert t["method"] == "pot" and t["value"] > scores.max()
    # exp(1): the true quantile is -log(risk); 1,000 peaks pin it to within ~15 % this far out.
    assert t["value"] == pytest.approx(np.log(1e6), rel=0.15)


def test_pot_falls_back_to_the_quantile_and_says_why() -> None:
    scores = np.random.default_rng(5).exponential(size=1_000)
    t = calibrate_threshold(scores, "pot", risk=0.05, initial_quantile=0.98)
    assert t["method"] == "quantile" and "fell back" in t["note"]
    few = calibrate_threshold(scores[:MIN_PEAKS * 20], "pot", risk=0.001,
                              initial_quantile=0.99)
    assert few["method"] == "quantile" and "peaks" in few["note"]


def test_bad_settings_are_refused() -> None:
    scores = np.ones(1000)
    with pytest.raises(ConfigError, match="risk"):
        calibrate_threshold(scores, "pot", risk=0.0)
    with pytest.raises(ConfigError, match="pot or quantile"):
        calibrate_threshold(scores, "zscore")
    with pytest.raises(ConfigError, match="at least 100"):
        calibrate_threshold(scores[:10])


def test_residual_scale_is_the_per_feature_std_ignoring_nan_rows() -> None:
    rng = np.random.default_rng(6)
    res = rng.normal(0, [0.5, 2.0], size=(10_000, 2))
    res[0] = np.nan
    assert np.allclose(residual_scale(res), res[1:].std(0))
    assert residual_scale(np.zeros((10, 1)))[0] > 0  # floored: scores stay finite
