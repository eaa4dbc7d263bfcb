"""ROC-AUC and PR-AUC (average precision) of a score, and beat scores, on hand-made cases with
known answers, plus the pairwise definition of ROC-AUC checked on random draws (fast tier)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqstream.evaluation.metrics import average_precision, beat_scores, roc_auc

S = np.array([0.1, 0.4, 0.35, 0.8])
Y = np.array([0, 0, 1, 1])


def test_roc_auc_of_the_textbook_example() -> None:
    # pairs (pos, neg): (0.35, 0.1) win, (0.35, 0.4) lose, (0.8, *) win twice -> 3/4
    assert roc_auc(S, Y) == 0.75


def test_average_precision_of_the_textbook_example() -> None:
    # ranked: 0.8 (+) P=1 R=.5 ; 0.4 (-) ; 0.35 (+) P=2/3 R=1 -> .5*1 + .5*2/3
    assert average_precision(S, Y) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_perfect_and_inverted_rankings() -> None:
    y = np.array([0, 0, 0, 1, 1])
    s = np.arange(5.0)
    assert roc_auc(s, y) == 1.0 and average_precision(s, y) == 1.0
    assert roc_auc(-s, y) == 0.0
    # inverted: positives ranked 4th and 5th -> (1/2)*(1/4) + (1/2)*(2/5)
    assert average_precision(-s, y) == pytest.approx(0.5 * 0.25 + 0.5 * 0.4)


def test_ties_count_half_and_a_constant_score_gives_the_prevalence() -> None:
    y = np.array([0, 1, 0, 1, 0])
    c = np.ones(5)
    assert roc_auc(c, y) == 0.5
    assert average_precision(c, y) == pytest.approx(2 / 5)


def test_nan_scores_are_dropped_and_a_missing_class_gives_nan() -> None:
    assert roc_auc(np.r_[S, np.nan], np.r_[Y, 1]) == 0.75
    assert math.isnan(roc_auc(np.array([1.0, 2.0]), np.array([1, 1])))
    assert math.isnan(average_precision(np.array([1.0, 2.0]), np.array([0, 0])))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_roc_auc_equals_the_share_of_winning_pairs(pairs: list[tuple[int, bool]]) -> None:
    s = np.array([p[0] for p in pairs], dtype=float)
    y = np.array([p[1] for p in pairs])
    pos, neg = s[y], s[~y]
    if len(pos) == 0 or len(neg) == 0:
        assert math.isnan(roc_auc(s, y))
        return
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    assert roc_auc(s, y) == pytest.approx(wins / (len(pos) * len(neg)))


def test_beat_scores_take_the_largest_score_in_each_window() -> None:
    # R peaks 2, 6, 9 -> windows [0,4), [4,7), [7,10)
    scores = np.array([np.nan, 1.0, 3.0, 2.0, 0.5, np.nan, 0.2, np.nan, np.nan, np.nan])
    out = beat_scores(scores, np.array([2, 6, 9]))
    assert out[:2].tolist() == [3.0, 0.5]
    assert math.isnan(out[2])
