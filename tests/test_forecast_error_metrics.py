"""MAE, RMSE and MASE against persistence on hand-made series with known answers (fast tier)."""

from __future__ import annotations

import numpy as np
import pytest

from seqstream.evaluation.metrics import ForecastErrors, forecast_errors


def test_errors_of_a_hand_made_two_feature_series() -> None:
    actual = np.array([[1.0, 10.0], [2.0, 10.0], [4.0, 13.0]])
    forecast = np.array([[1.0, 11.0], [3.0, 10.0], [4.0, 10.0]])
    previous = np.array([[0.0, 10.0], [1.0, 12.0], [2.0, 10.0]])
    e = forecast_errors(actual, forecast, previous)
    # feature 0: |e| = 0, 1, 0 -> MAE 1/3, RMSE sqrt(1/3); persistence |.| = 1, 1, 2 -> 4/3
    # feature 1: |e| = 1, 0, 3 -> MAE 4/3, RMSE sqrt(10/3); persistence 0, 2, 3 -> 5/3
    assert e.mae == pytest.approx([1 / 3, 4 / 3])
    assert e.rmse == pytest.approx([np.sqrt(1 / 3), np.sqrt(10 / 3)])
    assert e.mae_persistence == pytest.approx([4 / 3, 5 / 3])
    # MASE: mean of (1/3)/(4/3) = 1/4 and (4/3)/(5/3) = 4/5
    assert e.mase == pytest.approx((0.25 + 0.8) / 2)


def test_persistence_itself_has_mase_one_and_a_perfect_forecast_zero() -> None:
    x = np.cumsum(np.array([0.5, -1.0, 2.0, 0.25, 1.0]))[:, None]
    prev, cur = x[:-1], x[1:]
    assert forecast_errors(cur, prev, prev).mase == 1.0
    assert forecast_errors(cur, cur, prev).mase == 0.0


def test_pooled_errors_equal_errors_over_the_concatenation() -> None:
    rng = np.random.default_rng(3)
    parts = [rng.normal(size=(n, 3, 2)) for n in (5, 8, 2)]
    pooled = ForecastErrors.pool([forecast_errors(p[:, 0], p[:, 1], p[:, 2]) for p in parts])
    whole = np.concatenate(parts)
    direct = forecast_errors(whole[:, 0], whole[:, 1], whole[:, 2])
    assert pooled.n == 15
    assert pooled.mae == pytest.approx(direct.mae)
    assert pooled.rmse == pytest.approx(direct.rmse)
    assert pooled.mase == pytest.approx(direct.mase)


def test_shapes_must_agree() -> None:
    with pytest.raises(ValueError, match="expected one shape"):
        forecast_errors(np.zeros((3, 1)), np.zeros((3, 2)), np.zeros((3, 1)))
