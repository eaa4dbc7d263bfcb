"""The baselines score causally, fresh per series, and rank a clear anomaly on top (fast tier).

Hand-made series with known answers for the closed-form scores; River's detectors are checked for
causality and for finding an injected spike in a real ECG stretch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from seqstream.evaluation.baselines import (
    HalfSpaceTreesDetector,
    PersistenceZ,
    PredictiveDetector,
    RollingZ,
    make_baselines,
)
from stream.errors import ConfigError


def test_persistence_z_uses_training_residual_mean_and_std() -> None:
    # training diffs 1, 3 -> mean 2, std 1; test diffs 2, 0, 5 -> z 0, -2, 3
    det = PersistenceZ().fit([np.array([[0.0], [1.0], [4.0]])])
    out = det.scores(np.array([[0.0], [2.0], [2.0], [7.0]]))
    assert np.isnan(out[0])
    assert out[1:].tolist() == [0.0, 2.0, 3.0]


def test_rolling_z_of_a_hand_made_series() -> None:
    det = RollingZ(window=3).fit([np.zeros((5, 1))])
    out = det.scores(np.array([[1.0], [2.0], [3.0], [10.0], [4.0]]))
    # t=3: previous 1,2,3 -> mean 2, sample std 1 -> |10-2|/1 = 8
    # t=4: previous 2,3,10 -> mean 5, std sqrt(((3)^2+2^2+5^2)/2)=sqrt(19) -> |4-5|/sqrt(19)
    assert np.isnan(out[:3]).all()
    assert out[3] == pytest.approx(8.0)
    assert out[4] == pytest.approx(1 / np.sqrt(19))


def test_rolling_z_equals_a_direct_loop_on_two_features() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).cumsum(axis=0) + 50.0
    det = RollingZ(window=20).fit([x[:100]])
    out = det.scores(x)
    for t in (20, 77, 199):
        past = x[t - 20:t]
        z = (x[t] - past.mean(0)) / past.std(0, ddof=1)
        assert out[t] == pytest.approx(np.sqrt(np.mean(z * z)), rel=1e-9)


def _ecg(data: Path, record: str, n: int) -> np.ndarray:
    rec = wfdb.rdrecord(str(data / "mitdb" / record), channel_names=["MLII"], sampto=n)
    return rec.p_signal[:, :1].astype(np.float64)


def _spiked_scores(detector, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``x`` and of ``x`` with a 3 mV jump at sample 2500 (fitted on 1500 samples),
    far outside the ECG's sample-to-sample changes."""
    det = detector.fit([x[:1500]])
    spiked = x.copy()
    spiked[2500] += 3.0
    return det.scores(x), det.scores(spiked)


DETECTORS = [HalfSpaceTreesDetector(window_size=100), PredictiveDetector(warmup=200)]


@pytest.mark.parametrize("detector", DETECTORS, ids=["hst", "pad"])
def test_river_detectors_are_causal(detector, bundled_data: Path) -> None:
    clean, dirty = _spiked_scores(detector, _ecg(bundled_data, "100", 3000))
    assert np.array_equal(clean[:2500], dirty[:2500], equal_nan=True)  # nothing looks ahead
    assert not np.array_equal(clean[2500:], dirty[2500:], equal_nan=True)


# HST saturates near 1 for any point in an empty leaf, so "top 1 %", not "the top"; on the
# bundled record 100 the spike ties with about 1 % of its samples, on record 103 it stands out.
@pytest.mark.parametrize(("detector", "data", "record"), [
    pytest.param(DETECTORS[0], "shared_data", "103", marks=pytest.mark.shared, id="hst"),
    pytest.param(DETECTORS[1], "bundled_data", "100", id="pad"),
])
def test_river_detectors_rank_an_injected_spike_high(
        request: pytest.FixtureRequest, detector, data: str, record: str) -> None:
    _, dirty = _spiked_scores(detector, _ecg(request.getfixturevalue(data), record, 3000))
    rest = np.delete(dirty[1000:], 2500 - 1000)
    assert dirty[2500] >= np.nanquantile(rest, 0.99)


def test_pad_score_is_not_clipped_at_one(bundled_data: Path) -> None:
    x = _ecg(bundled_data, "100", 2000)
    x[1800] += 5.0
    out = PredictiveDetector(warmup=200).fit([x[:1000]]).scores(x)
    assert out[1800] > 1.0


def test_unknown_baseline_names_are_refused() -> None:
    with pytest.raises(ConfigError, match="expected some of"):
        make_baselines(["persistence_z", "prophet"], period_s=1 / 360, warmup=360)
    dets = make_baselines(["rolling_z"], period_s=1 / 360, warmup=360)
    assert dets[0].window == 360
