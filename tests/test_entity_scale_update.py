"""The per-entity scale's vectorised update (stream.entity_scale) equals the sample-by-sample
recursion it stands for, however a series is cut, for every period (block sizes and decays)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stream.entity_scale import BLOCK, EntityScale, typical_log_peak
from stream.errors import ArtifactError


def recursion(s: np.ndarray, period: float, es: EntityScale, p: float = 0.0,
              mu: float | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The definition, one sample at a time (float64)."""
    g = 0.5 ** (period / es.peak_hold_s)
    alpha = min(1.0, period / es.average_s)
    mu = es.mu0 if mu is None else mu
    out, lps = [], []
    for x in s.tolist():
        if not math.isnan(x):
            out.append(x / math.exp(mu))
            p = max(x, g * p)
            mu += alpha * (math.log(max(p, 1e-6)) - mu)
        else:
            out.append(math.nan)
        lps.append(math.log(max(p, 1e-6)))
    return np.array(out), np.array(lps), p, mu


@pytest.mark.parametrize(("period", "hold", "average"),
                         [(1 / 360, 0.3, 10.0), (1.0, 1.0, 2.0), (300.0, 0.3, 10.0),
                          (5.0, 0.3, 10.0)])
def test_vectorised_rows_equal_the_recursion(period, hold, average):
    rng = np.random.default_rng(1)
    n = 3 * BLOCK + 17
    s = rng.exponential(size=(4, n)) * rng.uniform(0.5, 3.0, size=(4, 1))
    s[:, 0] = np.nan  # no forecast before the first sample
    s[1, n // 2:] = np.nan  # a shorter (NaN-padded) row
    s[2, ::7] = np.nan  # holes hold the state
    s[3] = 0.0  # a perfect forecast: the peak falls to the floor
    es = EntityScale(mu0=0.4, peak_hold_s=hold, average_s=average)
    out = es.apply(s, period)
    for r in range(4):
        scaled, log_peak, p, mu = recursion(s[r], period, es)
        np.testing.assert_allclose(out.scaled[r], scaled, rtol=1e-10)
        np.testing.assert_allclose(out.log_peak[r], log_peak, rtol=1e-10, atol=1e-9)
        assert out.peak[r] == pytest.approx(p, rel=1e-9)
        assert out.log_mu[r] == pytest.approx(mu, rel=1e-9, abs=1e-12)


def test_cut_anywhere_and_carried_equals_one_pass():
    rng = np.random.default_rng(2)
    s = rng.exponential(size=(3, 500))
    es = EntityScale(mu0=-0.2)
    whole = es.apply(s, 1 / 360)
    parts, peak, mu, at = [], None, None, 0
    for size in (1, 63, 64, 65, 200, 107):
        done = es.apply(s[:, at:at + size], 1 / 360, peak, mu)
        parts.append(done.scaled)
        peak, mu, at = done.peak, done.log_mu, at + size
    np.testing.assert_allclose(np.concatenate(parts, axis=1), whole.scaled, rtol=1e-10)
    np.testing.assert_allclose(mu, whole.log_mu, rtol=1e-10)


def test_typical_log_peak_pools_the_marked_samples():
    s = [np.array([np.nan, 4.0, 1.0, 3.0]), np.array([2.0, 2.0])]
    marks = [np.array([False, False, True, True]), np.array([True, False])]
    # hold with g = 1/2: 4 -> 2 -> 3 (series 1), 2 (series 2)
    want = np.mean(np.log([2.0, 3.0, 2.0]))
    assert typical_log_peak(s, marks, period_s=1.0, peak_hold_s=1.0) == pytest.approx(want)


def test_the_card_section_is_read_or_refused():
    assert EntityScale.from_card({"score": {"kind": "rms_z"}}) is None
    es = EntityScale.from_card({"score": {"entity_scale": {"mu0": 1.5}}})
    assert es == EntityScale(1.5) and es.card() == {"peak_hold_s": 0.3, "average_s": 10.0,
                                                    "mu0": 1.5}
    with pytest.raises(ArtifactError, match="entity_scale"):
        EntityScale.from_card({"score": {"entity_scale": {"mu0": "x"}}})
    with pytest.raises(ArtifactError, match="positive"):
        EntityScale.from_card({"score": {"entity_scale": {"mu0": 0.0, "average_s": 0}}})
