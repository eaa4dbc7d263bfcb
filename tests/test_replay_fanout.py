"""Fan-out, chunking and ordering of a replay (pure logic, on a real ECG record)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from seqstream.replay import chunks, event, fan_out
from stream.errors import ConfigError


@pytest.fixture(scope="module")
def ecg(bundled_data: Path) -> tuple[str, np.ndarray, float]:
    """The first 20 s of MIT-BIH record 100, lead MLII, in mV."""
    rec = wfdb.rdrecord(str(bundled_data / "mitdb" / "100"), channel_names=["MLII"],
                        sampto=7200)
    return "100", rec.p_signal.astype(np.float64), 1.0 / rec.fs


def test_fewer_entities_than_records_take_whole_records(ecg) -> None:
    _name, values, period = ecg
    other = ("101", values[::-1].copy(), period)
    lanes = fan_out([ecg, other], 1, prefix="p-")
    assert [(lane.entity_id, lane.start) for lane in lanes] == [("p-100", 0)]


def test_more_entities_than_records_start_at_spaced_offsets(ecg) -> None:
    _name, values, _period = ecg
    lanes = fan_out([ecg], 4)
    starts = [lane.start for lane in lanes]
    assert starts == sorted(set(starts)) and starts[0] == 0
    gaps = np.diff([*starts, len(values)])
    assert gaps.max() - gaps.min() <= 1  # evenly spaced
    assert [lane.entity_id for lane in lanes] == ["100"] + [f"100@{s}" for s in starts[1:]]


def test_uneven_fan_out_over_two_records(ecg) -> None:
    _name, values, period = ecg
    lanes = fan_out([ecg, ("101", values[:1000], period)], 5)
    by_series: dict[int, list[int]] = {}
    for lane in lanes:
        by_series.setdefault(len(lane.values), []).append(lane.start)
    assert sorted(len(v) for v in by_series.values()) == [2, 3]
    assert len({lane.entity_id for lane in lanes}) == 5


@pytest.mark.parametrize("per_event", [1, 7, 36, 360])
def test_chunks_carry_every_sample_once_in_order(ecg, per_event: int) -> None:
    lanes = fan_out([ecg], 3)
    seen: dict[int, list[np.ndarray]] = {i: [] for i in range(3)}
    last_index = dict.fromkeys(range(3), -1)
    for chunk in chunks(lanes, per_event):
        assert 1 <= len(chunk.values) <= per_event
        assert chunk.index > last_index[chunk.lane]
        last_index[chunk.lane] = chunk.index
        seen[chunk.lane].append(chunk.values)
    for i, lane in enumerate(lanes):
        np.testing.assert_array_equal(np.concatenate(seen[i]), lane.values[lane.start:])


def test_events_leave_in_signal_time_order(ecg) -> None:
    _name, values, period = ecg
    slow = ("slow", values[:100], period * 10)
    order = list(chunks(fan_out([ecg, slow], None), 36))
    dues = [c.due_s for c in order]
    assert dues == sorted(dues)
    fast = sum(1 for c in order[:40] if c.lane == 0)
    assert fast > 30  # the 10x faster series sends about 10x as often


def test_loop_restarts_at_the_series_start(ecg) -> None:
    name, values, period = ecg
    lanes = fan_out([(name, values[:10], period)], 1)
    it = chunks(lanes, 4, loop=True)
    got = [next(it) for _ in range(5)]
    assert [c.index for c in got] == [0, 4, 8, 0, 4]
    assert [c.due_s for c in got] == pytest.approx([0, 4 * period, 8 * period, 10 * period,
                                                    14 * period])


def test_event_forms_follow_the_contract(ecg) -> None:
    _name, values, period = ecg
    single = event("100", 12.5, values[:1], period)
    assert single == {"entity_id": "100", "ts": 12.5, "values": [float(values[0, 0])]}
    chunk = event("100", 12.5, values[:3], period)
    assert chunk["period"] == period and chunk["values"] == values[:3].tolist()


def test_bad_counts_are_refused(ecg) -> None:
    name, values, period = ecg
    with pytest.raises(ConfigError, match="too few"):
        fan_out([(name, values[:2], period)], 3)
    with pytest.raises(ConfigError, match="samples-per-event"):
        next(chunks(fan_out([ecg], 1), 0))
    with pytest.raises(ConfigError, match="at least one recorded series"):
        fan_out([], 1)
