"""Beat-level EC57 counts on hand-made records whose answers are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from seqstream.evaluation.beatmetrics import BeatTally, beat_tally, flags_on_beats, match_of


def test_a_perfect_classifier_scores_one_everywhere() -> None:
    ref = ["N", "V", "N", "S", "F", "N"]
    t = beat_tally(ref, ["N", "V", "N", "S", "F", "N"], [False, True, False, True, True, False],
                   match=[0, 1, 2, 3, 4, 5], hours=1.0)
    for c in ("V", "S", "F"):
        assert (t.classes[c].tp, t.classes[c].fn, t.classes[c].fp) == (1, 0, 0)
        assert t.classes[c].f1 == 1.0 and t.flagged_by_class[c].se == 1.0
    assert (t.abnormal.se, t.abnormal.ppv, t.abnormal.f1) == (1.0, 1.0, 1.0)
    assert t.false_flags_per_hour == 0.0 and t.qrs.se == t.qrs.ppv == 1.0


def test_ec57_conventions_q_ignored_fusion_called_v_excused_unmatched_flag_is_false() -> None:
    # reference: N V F Q S N ; detections: d0..d5 below (d5 is an extra detection)
    ref = ["N", "V", "F", "Q", "S", "N"]
    det_cls = ["V", "V", "V", "V", "N", "S"]
    flags = [True, True, True, True, False, True]
    match = [0, 1, 2, 3, 4, -1]  # reference 5 (N) was missed
    t = beat_tally(ref, det_cls, flags, match, hours=2.0)
    # V: d1 right; d0 on N is a false V; d2 on F is excused; d3 on Q ignored
    assert (t.classes["V"].tp, t.classes["V"].fn, t.classes["V"].fp) == (1, 0, 1)
    # S: the reference S was called N (FN); the unmatched detection called S is a false S
    assert (t.classes["S"].tp, t.classes["S"].fn, t.classes["S"].fp) == (0, 1, 1)
    assert t.classes["S"].f1 == 0.0
    # F: the reference F was called V
    assert (t.classes["F"].tp, t.classes["F"].fn, t.classes["F"].fp) == (0, 1, 0)
    assert math.isnan(t.classes["F"].ppv)
    # flags: V and F flagged, S not (TP 2, FN 1); false flags: d0 on N and the unmatched d5;
    # the flag on the Q beat counts nowhere
    assert (t.abnormal.tp, t.abnormal.fn, t.abnormal.fp) == (2, 1, 2)
    assert t.false_flags_per_hour == 1.0
    assert t.flagged_by_class["S"].se == 0.0 and t.flagged_by_class["V"].se == 1.0
    # QRS: 5 of 6 reference beats matched, 5 of 6 detections matched
    assert t.qrs[:3] == (5, 1, 1)


def test_missed_abnormal_beats_count_against_sensitivity() -> None:
    t = beat_tally(["N", "V", "V"], ["N"], [False], match=[0], hours=1.0)
    assert (t.classes["V"].tp, t.classes["V"].fn) == (0, 2)
    assert (t.abnormal.tp, t.abnormal.fn, t.abnormal.fp) == (0, 2, 0)
    assert t.qrs.se == pytest.approx(1 / 3)


def test_pooling_is_gross_not_an_average_of_records() -> None:
    a = beat_tally(["V"] * 9 + ["N"], ["V"] * 9 + ["N"], [True] * 9 + [False], list(range(10)),
                   hours=1.0)  # Se 9/9
    b = beat_tally(["V", "N"], ["N", "N"], [False, False], [0, 1], hours=1.0)  # Se 0/1
    pooled = BeatTally.pool([a, b])
    assert pooled.classes["V"].se == 0.9  # 9/10, not the mean of 1.0 and 0.0
    assert pooled.abnormal.se == 0.9 and pooled.hours == 2.0
    assert pooled.qrs[:3] == (12, 0, 0)


def test_a_flag_only_detector_leaves_the_class_counts_empty() -> None:
    t = beat_tally(["N", "V"], None, [True, True], [0, 1], hours=1.0)
    assert t.classes["V"].tp == t.classes["V"].fp == 0 and t.classes["V"].fn == 0
    assert (t.abnormal.tp, t.abnormal.fp) == (1, 1)


def test_bad_matches_are_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="one per detected beat"):
        beat_tally(["N"], ["N", "N"], [False], [0], hours=1.0)
    with pytest.raises(ValueError, match="distinct reference indexes"):
        beat_tally(["N", "N"], ["N", "N"], [False, False], [0, 0], hours=1.0)
    with pytest.raises(ValueError, match="distinct reference indexes"):
        beat_tally(["N"], ["N"], [False], [3], hours=1.0)


def test_sample_flags_land_on_the_detected_beat_whose_half_rr_window_holds_them() -> None:
    flags = np.zeros(100, dtype=bool)
    flags[[12, 55]] = True  # 12: in beat 10's window [0, 20); 55: in beat 60's [45, 75)
    assert flags_on_beats(flags, np.array([10, 30, 60, 90])).tolist() == [True, False, True,
                                                                        False]


def test_detections_match_reference_beats_within_150_ms_one_to_one() -> None:
    # 360 Hz: 150 ms = 54 samples. 1054 is 54 from 1000 (in); 2055 is 55 from 2000 (out);
    # 2990 and 3010 both reach 3000: the closer one takes it, the other is unmatched
    ref = np.array([1000, 2000, 3000])
    det = np.array([1054, 2055, 2990, 3005])
    assert match_of(ref, det, fs=360.0).tolist() == [0, -1, -1, 2]
