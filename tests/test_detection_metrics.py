"""Beat- and window-level precision, recall, F1, false flags per hour and delay, on hand-made
cases whose answers are counted by hand in the comments (fast tier)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqstream.evaluation.metrics import (
    Detection,
    beat_detection,
    beat_windows,
    first_flags,
    runs,
    window_detection,
)

# Six beats on a 60-sample record at 1 sample per second.
#   R peaks:  5    15    25    35    45    55
#   windows: [0,10) [10,20) [20,30) [30,40) [40,50) [50,60)
#   classes:  N    SVEB   N    VEB    F     Q
R = np.array([5, 15, 25, 35, 45, 55])
CLASSES = np.array(["N", "SVEB", "N", "VEB", "F", "Q"])


def _flags(*idx: int, n: int = 60) -> np.ndarray:
    f = np.zeros(n, dtype=bool)
    f[list(idx)] = True
    return f


def test_beat_windows_are_midpoint_partitions() -> None:
    lo, hi = beat_windows(R, 60)
    assert lo.tolist() == [0, 10, 20, 30, 40, 50]
    assert hi.tolist() == [10, 20, 30, 40, 50, 60]


def test_beat_windows_refuse_unsorted_peaks() -> None:
    with pytest.raises(ValueError, match="strictly increasing"):
        beat_windows(np.array([5, 3]), 10)


def test_beat_level_counts_precision_recall_f1_and_false_rate() -> None:
    # flags: 12 and 13 in the SVEB beat (one beat, counted once), 21 in an N beat (false),
    # 58 in the Q beat (unknown class: neither true nor false); VEB and F beats missed.
    d = beat_detection(_flags(12, 13, 21, 58), R, CLASSES, period_s=1.0)
    assert (d.events, d.detected, d.alarms, d.true_alarms, d.false_alarms) == (3, 1, 2, 1, 1)
    assert d.precision == 0.5
    assert d.recall == pytest.approx(1 / 3)
    assert d.f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    # normal signal: two N windows of 10 s each = 20 s; one false flag -> 180 per hour
    assert d.normal_s == 20.0
    assert d.false_per_hour == pytest.approx(180.0)
    # the SVEB's first flag (12) is 3 s before its R peak (15)
    assert d.delays_s == (-3.0,)


def test_per_class_counts_leave_the_other_abnormal_classes_out() -> None:
    flags = _flags(12, 36, 21)
    veb = beat_detection(flags, R, CLASSES, period_s=1.0, positive=("VEB",))
    # events: the one VEB, detected; alarms: VEB + the flagged N beat; the SVEB is left out
    assert (veb.events, veb.detected, veb.alarms, veb.true_alarms) == (1, 1, 2, 1)
    assert veb.precision == 0.5 and veb.recall == 1.0
    assert veb.delays_s == (1.0,)


def test_warm_up_beats_are_left_out() -> None:
    # start=20 drops the beats whose windows begin before sample 20 (the N and SVEB at 5, 15)
    d = beat_detection(_flags(3, 12, 33), R, CLASSES, period_s=1.0, start=20)
    assert (d.events, d.detected, d.alarms) == (2, 1, 1)
    assert d.normal_s == 10.0


def test_no_flags_means_zero_precision_recall_and_f1() -> None:
    d = beat_detection(_flags(n=60), R, CLASSES, period_s=0.5)
    assert (d.precision, d.recall, d.f1, d.false_per_hour) == (0.0, 0.0, 0.0, 0.0)
    assert math.isnan(d.delay_mean_s)


def test_every_beat_flagged_gives_the_prevalence_as_precision() -> None:
    d = beat_detection(np.ones(60, bool), R, CLASSES, period_s=1.0)
    # 3 abnormal + 2 normal known beats flagged
    assert d.precision == pytest.approx(3 / 5) and d.recall == 1.0


def test_runs_and_first_flags() -> None:
    f = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert runs(f).tolist() == [[0, 2], [4, 5], [6, 9]]
    assert runs(np.zeros(3, bool)).tolist() == []
    assert first_flags(f, np.array([0, 2, 5, 9]), np.array([2, 4, 9, 9])).tolist() == [
        0, -1, 6, -1]
    assert first_flags(np.zeros(4, bool), np.array([0]), np.array([4])).tolist() == [-1]


def test_window_level_counts_without_point_adjustment() -> None:
    # windows [10, 30) and [60, 70); 100 samples at 2 s each.
    # alarms (runs): [5, 12) overlaps window 1 (true), [40, 43) outside (false),
    # [90, 91) outside (false). Window 2 is missed.
    flags = np.zeros(100, bool)
    flags[5:12] = True
    flags[40:43] = True
    flags[90] = True
    d = window_detection(flags, [(10, 30), (60, 70)], period_s=2.0)
    assert (d.events, d.detected, d.alarms, d.true_alarms) == (2, 1, 3, 1)
    assert d.precision == pytest.approx(1 / 3) and d.recall == 0.5
    # normal: 100 - 20 - 10 = 70 samples = 140 s; 2 false alarms -> 2 / (140/3600) per hour
    assert d.normal_s == 140.0
    assert d.false_per_hour == pytest.approx(2 / (140 / 3600))
    # first flag inside window 1 is sample 10 = its start: delay 0
    assert d.delays_s == (0.0,)


def test_a_long_window_hit_once_is_one_event_not_its_samples() -> None:
    flags = np.zeros(1000, bool)
    flags[750] = True
    d = window_detection(flags, [(100, 900)], period_s=1.0)
    assert (d.events, d.detected, d.alarms, d.true_alarms) == (1, 1, 1, 1)
    assert d.delays_s == (650.0,)


def test_window_warm_up_clips_windows_and_drops_early_flags() -> None:
    flags = np.zeros(50, bool)
    flags[2] = True  # in the warm-up: ignored
    flags[12] = True
    d = window_detection(flags, [(0, 5), (8, 20)], period_s=1.0, start=10)
    # window 1 ends before the start and is dropped; window 2 is clipped to [10, 20)
    assert (d.events, d.detected, d.alarms) == (1, 1, 1)
    assert d.delays_s == (2.0,)
    assert d.normal_s == 30.0


def test_detections_pool_by_summing_counts() -> None:
    a = beat_detection(_flags(12, 21), R, CLASSES, period_s=1.0)
    b = window_detection(_flags(0, 1, n=10), [(0, 3)], period_s=1.0)
    p = Detection.pool([a, b])
    assert (p.events, p.detected, p.alarms, p.true_alarms) == (
        a.events + b.events, a.detected + b.detected, a.alarms + b.alarms,
        a.true_alarms + b.true_alarms)
    assert p.delays_s == a.delays_s + b.delays_s
