"""seqstream.alarms: flags folded into alarms (start, end) for ``seqstream tail``; on the real
flags of the sensor score over a SKAB experiment, and on hand-made sequences."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seqstream.alarms import AlarmTracker
from stream.sensor_score import SensorScore
from training.sources import SKAB_FEATURES


def test_a_sustained_fault_is_one_alarm_with_its_start_and_end(shared_data) -> None:
    frame = pd.read_csv(shared_data / "skab" / "data" / "valve1" / "3.csv", sep=";")
    run = SensorScore(warmup=400, adapt_half_life=120.0).run(
        frame[[f for f, _ in SKAB_FEATURES]].to_numpy(np.float64))
    tracker = AlarmTracker(gap_s=32.0)  # the sensor score's hold: 32 samples at 1 Hz
    statuses = [tracker.update("valve1/3", float(t), bool(f)) for t, f in enumerate(run.flags)]
    started = [i for i, s in enumerate(statuses)
               if s.startswith("ALARM") and (i == 0 or not statuses[i - 1].startswith("ALARM"))]
    ended = [s for s in statuses if s.endswith("ended")]
    assert int(run.flags.sum()) > 100, "expected a fault flagged on many samples"
    assert started == list(np.flatnonzero(run.onsets))  # the worker's alarm onsets
    assert len(started) < int(run.flags.sum()) / 20
    assert len(ended) >= len(started) - 1


def test_flags_no_further_apart_than_the_gap_are_one_alarm() -> None:
    t = AlarmTracker(gap_s=10.0)
    out = [t.update("e", ts, ts in (0, 4, 8, 30)) for ts in range(0, 45)]
    assert out[0] == "ALARM since 0.000 s"
    assert out[8] == "ALARM since 0.000 s (8 s)"
    assert out[18] == "ALARM since 0.000 s (8 s)"  # 10 s after the last flag: still one
    assert out[19] == "alarm 0.000 s - 8.000 s ended"
    assert out[20:30] == [""] * 10
    assert out[30] == "ALARM since 30.000 s"
    assert out[41] == "alarm 30.000 s - 30.000 s ended"


def test_entities_keep_separate_alarms() -> None:
    t = AlarmTracker(gap_s=5.0)
    assert t.update("a", 0.0, True) == "ALARM since 0.000 s"
    assert t.update("b", 1.0, False) == ""
    assert t.update("a", 2.0, False) == "ALARM since 0.000 s"


def test_a_gap_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        AlarmTracker(gap_s=0.0)
