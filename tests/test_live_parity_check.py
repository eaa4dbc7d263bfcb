"""The streamed-vs-offline check passes equal numbers and fails a missing sample, a difference
beyond 1e-5, a wrong flag or another model's predictions (fast tier, hand-made runs)."""

from __future__ import annotations

import numpy as np

from seqstream.evaluation.live import LiveRun, compare

SCORES = np.array([np.nan, 0.5, 3.0, 0.2, 5.0])
FORECASTS = np.arange(5.0).reshape(5, 1, 1) * 0.1


def _run(**changes) -> LiveRun:
    base = {"entities": ["e"], "forecasts": [FORECASTS.copy()], "scores": [SCORES.copy()],
            "flags": [np.array([False, False, False, False, True])],
            "received": [np.ones(5, bool)], "model_ids": {"m1"}, "events": 2, "records": 2,
            "publish_s": 0.1, "total_s": 1.0, "mode": "spawn", "topics": {}}
    base.update(changes)
    return LiveRun(**base)


def _check(run: LiveRun) -> dict:
    # threshold 4, warm-up 3: only sample 4 (score 5) flags; sample 2 (3.0) is in the warm-up
    return compare(run, [FORECASTS], [SCORES], threshold=4.0, warmup=3, model_id="m1")


def test_identical_streams_pass() -> None:
    out = _check(_run())
    assert out["passed"] and out["received"] == out["samples"] == 5
    assert out["max_abs_diff_forecast"] == 0.0 and out["flags_differing"] == 0


def test_a_difference_beyond_the_tolerance_fails() -> None:
    f = FORECASTS.copy()
    f[2, 0, 0] += 3e-5
    out = _check(_run(forecasts=[f]))
    assert not out["passed"] and not out["forecasts_within_tol"]
    s = SCORES.copy()
    s[3] += 5e-6  # within 1e-5: passes
    assert _check(_run(scores=[s]))["passed"]


def test_missing_predictions_fail() -> None:
    received = np.ones(5, bool)
    received[4] = False
    out = _check(_run(received=[received]))
    assert not out["passed"] and out["received"] == 4


def test_scores_are_compared_as_residuals() -> None:
    # residual scale 0.1: a score 5e-5 off is a residual 5e-6 off, within 1e-5
    s = SCORES.copy()
    s[1] += 5e-5
    assert not _check(_run(scores=[s]))["passed"]
    out = compare(_run(scores=[s]), [FORECASTS], [SCORES], threshold=4.0, warmup=3,
                  model_id="m1", residual_scale=0.1)
    assert out["passed"] and out["max_abs_diff_score"] > 4e-5


def test_a_null_score_must_meet_a_nan() -> None:
    s = SCORES.copy()
    s[0] = 0.0
    assert not _check(_run(scores=[s]))["passed"]


def test_a_wrong_flag_or_another_model_fails() -> None:
    flags = np.array([False, False, True, False, True])  # flagged inside the warm-up
    assert _check(_run(flags=[flags]))["flags_differing"] == 1
    assert not _check(_run(model_ids={"m1", "m2"}))["passed"]
