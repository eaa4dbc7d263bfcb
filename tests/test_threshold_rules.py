"""Both threshold rules on hand-made validation data with known answers (fast tier)."""

from __future__ import annotations

import numpy as np
import pytest

from seqstream.evaluation.metrics import Detection, beat_detection, window_detection
from seqstream.evaluation.thresholds import best_f1_beats, best_f1_windows, calibrated, flags_of


def test_flags_respect_warm_up_and_nan() -> None:
    out = flags_of(np.array([9.0, np.nan, 3.0, 1.0, 3.0]), threshold=2.0, warmup=1)
    assert out.tolist() == [False, False, True, False, True]


def test_best_f1_beats_picks_the_top_three() -> None:
    # ranked beats: 0.9 VEB, 0.8 N, 0.7 SVEB, 0.1 N (and a Q beat that never counts)
    # flag top 1: F1 2/3; top 2: 1/2; top 3: 4/5; top 4: 2/3  -> top 3, threshold (0.7+0.1)/2
    scores = [np.array([0.9, 0.8]), np.array([0.7, 0.1, 5.0])]
    classes = [np.array(["VEB", "N"]), np.array(["SVEB", "N", "Q"])]
    thr, f1 = best_f1_beats(scores, classes)
    assert thr == pytest.approx(0.4) and f1 == pytest.approx(0.8)


def test_best_f1_beats_matches_beat_detection_at_that_threshold() -> None:
    rng = np.random.default_rng(1)
    r = np.arange(50, 5000, 100)
    classes = np.where(rng.random(len(r)) < 0.2, "VEB", "N")
    scores = rng.exponential(size=5000)
    scores[r[classes == "VEB"]] += 2.0
    lo = np.r_[0, (r[:-1] + r[1:]) // 2]
    beat_max = np.maximum.reduceat(scores, lo)
    thr, f1 = best_f1_beats([beat_max], [classes])
    d = beat_detection(flags_of(scores, thr), r, classes, period_s=1.0)
    assert d.f1 == pytest.approx(f1)


def test_best_f1_windows_on_a_hand_made_series() -> None:
    # one window [40, 60); noise 1.0 elsewhere except a false peak of 3 at 10, true peak 5 at 50
    s = np.ones(100)
    s[10], s[50] = 3.0, 5.0
    thr, f1 = best_f1_windows([s], [np.array([[40, 60]])], period_s=1.0, warmup=0)
    assert 3.0 <= thr < 5.0 and f1 == 1.0
    d = Detection.pool([window_detection(flags_of(s, thr), [(40, 60)], 1.0)])
    assert d.f1 == 1.0


def test_calibrated_applies_the_cards_rule() -> None:
    s = np.arange(1.0, 1001.0)
    out = calibrated(s, {"method": "quantile", "risk": 0.01, "value": 123.0})
    assert out["value"] == pytest.approx(np.quantile(s, 0.99))
    assert out["method"] == "quantile"
