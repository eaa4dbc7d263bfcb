"""SKAB's leaderboard metrics (evaluation.skab_score) on hand-made files whose answers are
worked out by hand from SKAB's rules (fast tier). Rows are one second apart."""

from __future__ import annotations

import numpy as np
import pytest

from seqstream.evaluation.skab_score import (
    changepoint_score,
    changepoint_windows,
    changepoints_of,
    outlier_counts,
)

N = 300
T = np.arange(N, dtype=np.float64)


def run(lo: int, hi: int) -> np.ndarray:
    """0/1 prediction (or label) that is 1 on rows lo .. hi - 1."""
    p = np.zeros(N, dtype=np.int8)
    p[lo:hi] = 1
    return p


def cps(*rows: int) -> np.ndarray:
    c = np.zeros(N, dtype=np.int8)
    c[list(rows)] = 1
    return c


def test_outlier_counts_pool_rows_over_files() -> None:
    # file 1: label 100..199, prediction 150..249 -> TP 50, FP 50, FN 50, TN 150
    # file 2: label none, prediction 0..9        -> FP 10, TN 290
    c = outlier_counts([run(100, 200), run(0, 0)], [run(150, 250), run(0, 10)])
    assert (c.tp, c.fp, c.fn, c.tn) == (50, 60, 50, 440)
    s = c.summary()
    assert s["f1"] == pytest.approx(50 / (50 + (50 + 60) / 2))
    assert s["far_pct"] == pytest.approx(100 * 60 / 500)
    assert s["mar_pct"] == pytest.approx(50.0)


def test_outlier_counts_refuse_a_length_mismatch() -> None:
    with pytest.raises(ValueError, match="one prediction per row"):
        outlier_counts([run(0, 1)], [np.zeros(N - 1)])


def test_changepoints_are_the_changes_of_the_prediction() -> None:
    assert np.flatnonzero(changepoints_of(run(100, 200))).tolist() == [100, 200]
    assert np.flatnonzero(changepoints_of(run(0, 5))).tolist() == [0, 5]


def test_windows_are_centred_and_cut_on_the_right() -> None:
    assert changepoint_windows(T, cps(100, 110)) == [(85.0, 115.0), (115.0, 125.0)]


def test_a_change_on_the_window_start_is_perfect_and_its_end_a_false_positive() -> None:
    # the alarm starts at 85 (window start: A_tp = 1) and ends at 250, outside the window:
    # that second change is a false positive (A_fp)
    got = changepoint_score([T], [cps(100)], [run(85, 250)])
    assert got["standard"] == pytest.approx(100 * (1 - 0.11 + 1) / 2)
    assert got["reward_low_FP_rate"] == pytest.approx(100 * (1 - 0.22 + 1) / 2)
    assert got["reward_low_FN_rate"] == pytest.approx(100 * (1 - 0.11 + 2) / 3)


def test_given_changepoints_are_scored_as_they_are() -> None:
    # the alarm's onset alone (its end not a changepoint): no false positive at 250
    onset = np.zeros(N, dtype=np.int8)
    onset[85] = 1
    got = changepoint_score([T], [cps(100)], [onset], given=True)
    assert got["standard"] == pytest.approx(100.0)
    assert changepoint_score([T], [cps(100)], [run(85, 250)], given=True)["standard"] < 100


def test_a_change_to_the_end_of_the_series_is_perfect() -> None:
    got = changepoint_score([T], [cps(100)], [run(85, N)])
    assert got == pytest.approx({"standard": 100.0, "reward_low_FP_rate": 100.0,
                                 "reward_low_FN_rate": 100.0})


def test_a_change_at_the_window_centre() -> None:
    # k = int(0.5 * 1000) = 500 of linspace(-pi/2, pi/2, 1000): x = pi / 1998;
    # score = (1 + 0.11) / 2 * (1 - tanh(x) / tanh(pi / 2)) - 0.11
    x = np.pi / 1998
    s = 1.11 / 2 * (1 - np.tanh(x) / np.tanh(np.pi / 2)) - 0.11
    got = changepoint_score([T], [cps(100)], [run(100, N)])
    assert got["standard"] == pytest.approx(100 * (s + 1) / 2)


def test_nothing_flagged_is_the_null_score_and_misses_pool_over_files() -> None:
    assert changepoint_score([T], [cps(100)], [run(0, 0)])["standard"] == 0.0
    # one file perfect, one missed: (1 + -1) - (-2) over 2 - (-2)
    got = changepoint_score([T, T], [cps(100), cps(100)], [run(85, N), run(0, 0)])
    assert got["standard"] == pytest.approx(50.0)
