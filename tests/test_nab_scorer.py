"""The NAB scorer (evaluation.nab_score) on hand-made series whose scores are worked out by hand
from NAB's rules (fast tier). Weights: standard A_tp 1, A_fp 0.11, A_fn 1."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqstream.evaluation.nab_score import (
    LOW_FN,
    LOW_FP,
    STANDARD,
    normalised,
    probation_rows,
    scaled_sigmoid,
    score_series,
    windows_from_stamps,
)

N = 100  # rows; probation floor(0.15 * 100) = 15 rows
W = [(40, 49), (70, 79)]  # two windows of width 10


def sig(y: float) -> float:
    """2 / (1 + e^{5y}) - 1, written out again so the tests do not trust the module's."""
    return 2 / (1 + math.exp(5 * y)) - 1


def flags(*rows: int) -> np.ndarray:
    d = np.zeros(N, dtype=bool)
    d[list(rows)] = True
    return d


def test_no_detection_is_the_null_score() -> None:
    s = score_series(flags(), W, STANDARD)
    assert (s.raw, s.null, s.perfect) == (-2.0, -2.0, 2.0)
    assert (s.tp, s.fn, s.fp) == (0, 2, 0)
    assert normalised([s]) == 0.0


def test_first_row_of_each_window_is_perfect() -> None:
    s = score_series(flags(40, 70), W, STANDARD)
    assert s.raw == pytest.approx(2.0)
    assert normalised([s]) == pytest.approx(100.0)


def test_later_detections_in_a_window_add_nothing() -> None:
    assert score_series(flags(40, 41, 45, 49), W[:1], STANDARD).raw == pytest.approx(1.0)


def test_detection_on_a_window_last_row() -> None:
    # position -(49 - 49 + 1) / 10 = -0.1, weighted by 1 / sigma(-1)
    s = score_series(flags(49), W[:1], STANDARD)
    assert s.raw == pytest.approx(sig(-0.1) / sig(-1.0))
    assert s.raw == pytest.approx(0.24824, abs=1e-5)


def test_false_positive_before_any_window_costs_the_full_weight() -> None:
    assert score_series(flags(20, 40), W[:1], STANDARD).raw == pytest.approx(1.0 - 0.11)
    assert score_series(flags(20, 40), W[:1], LOW_FP).raw == pytest.approx(1.0 - 0.22)


def test_false_positive_after_a_window_is_weighted_by_distance() -> None:
    # row 50, one past the window ending at 49: y = 1 / (10 - 1)
    near = score_series(flags(40, 50), W[:1], STANDARD)
    assert near.raw == pytest.approx(1.0 + 0.11 * sig(1 / 9))
    assert near.raw - 1.0 == pytest.approx(-0.02979, abs=1e-5)
    # 27 rows past it: y = 27 / 9 = 3, the full penalty
    far = score_series(flags(40, 76), [(40, 49)], STANDARD)
    assert far.raw == pytest.approx(1.0 - 0.11)
    assert far.fp == 1


def test_false_positive_uses_the_closest_preceding_window() -> None:
    # row 81 follows the second window (ends 79): y = 2 / 9
    s = score_series(flags(40, 70, 81), W, STANDARD)
    assert s.raw == pytest.approx(2.0 + 0.11 * sig(2 / 9))


def test_low_fn_profile_doubles_a_miss() -> None:
    # one window found (+1), one missed (-2); null -4, perfect 2
    s = score_series(flags(40), W, LOW_FN)
    assert (s.raw, s.null, s.perfect) == (pytest.approx(-1.0), -4.0, 2.0)
    assert normalised([s]) == pytest.approx(100 * 3 / 6)


def test_probation_is_not_scored() -> None:
    assert probation_rows(N) == 15
    # a detection at row 10 is inside the probation: no false positive
    assert score_series(flags(10, 40), W[:1], STANDARD).raw == pytest.approx(1.0)
    # a window wholly inside the probation is neither missed nor found
    s = score_series(flags(), [(2, 5), (40, 49)], STANDARD)
    assert (s.null, s.fn) == (-1.0, 1)


def test_probation_is_capped_at_750_rows() -> None:
    assert probation_rows(4000) == 600
    assert probation_rows(100_000) == 750


def test_corpus_score_sums_before_normalising() -> None:
    found = score_series(flags(40), W[:1], STANDARD)  # raw 1, null -1, perfect 1
    missed = score_series(flags(), W[:1], STANDARD)  # raw -1, null -1, perfect 1
    assert normalised([found, missed]) == pytest.approx(50.0)


def test_scaled_sigmoid_is_minus_one_from_three_on() -> None:
    assert scaled_sigmoid(3.0) == -1.0
    assert scaled_sigmoid(2.999) == pytest.approx(sig(2.999))


def test_windows_from_timestamps_include_both_ends() -> None:
    stamps = [f"2014-01-01 00:{m:02d}:00" for m in range(0, 50, 5)]
    got = windows_from_stamps(stamps, [["2014-01-01 00:10:00", "2014-01-01 00:22:00"],
                                       ["2014-02-01 00:00:00", "2014-02-02 00:00:00"]])
    assert got == [(2, 4)]


def test_overlapping_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="disjoint"):
        score_series(flags(), [(40, 49), (45, 60)], STANDARD)
