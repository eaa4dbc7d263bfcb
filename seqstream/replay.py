"""Recorded series → the ordered stream of events a replay sends (pure logic, no Kafka).

**Fan-out.** ``n`` entities are drawn from ``S`` recorded series: with ``n <= S`` each entity is its
own series (the first ``n``); with ``n > S`` entity ``i`` reads series ``i mod S``, and the ``c``
entities sharing a series start at evenly spaced offsets ``k * T // c`` (``k = 0..c-1``) into its
``T`` samples, so every entity carries real samples, none is a copy of another in lock step, and
the id says where it started (``100@216666``).

**Chunks.** An event carries ``m`` consecutive samples (``--samples-per-event``): ``m = 1`` gives
``{"entity_id", "ts", "values": [f, ...]}``, ``m > 1`` the chunk form
``{"entity_id", "ts", "period", "values": [[f, ...], ...]}`` whose ``ts`` is its first sample's.
A chunk never crosses the end of a series, so the last chunk may be shorter.

**Order.** Events leave in order of *signal time*, sample index × period from each entity's
start, ties by entity: entities of one sampling rate interleave round-robin, a 360 Hz ECG sends
more often than a 5-minute NAB series, and "real time" pacing is simply waiting until each
event's signal time has passed on the wall clock.

>>> import numpy as np
>>> lanes = fan_out([("a", np.arange(10.0).reshape(10, 1), 0.5)], 2)
>>> [(lane.entity_id, lane.start) for lane in lanes]
[('a', 0), ('a@5', 5)]
>>> [(c.lane, c.index, c.values[:, 0].tolist()) for c in chunks(lanes, 3)]
[(0, 0, [0.0, 1.0, 2.0]), (1, 5, [5.0, 6.0, 7.0]), (0, 3, [3.0, 4.0, 5.0]), (1, 8, [8.0, 9.0]), (0, 6, [6.0, 7.0, 8.0]), (0, 9, [9.0])]
"""  # noqa: E501

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from stream.errors import ConfigError

__all__ = ["Chunk", "Lane", "chunks", "event", "fan_out"]


@dataclass(frozen=True)
class Lane:
    """One published entity: a recorded series read from sample ``start`` on."""

    entity_id: str
    values: np.ndarray  # [T, F] float64, the whole series
    period_s: float
    start: int


@dataclass(frozen=True)
class Chunk:
    """``values`` (``[m, F]``) of lane ``lane`` from sample ``index``; ``due_s`` is its signal
    time, seconds after the replay's start."""

    lane: int
    index: int
    values: np.ndarray
    due_s: float


def fan_out(series: Sequence[tuple[str, np.ndarray, float]], n: int | None,
            prefix: str = "") -> list[Lane]:
    """``n`` lanes (all series when None) over ``(name, values [T, F], period_s)`` series."""
    if not series:
        raise ConfigError("replay: expected at least one recorded series, got none")
    n = len(series) if n is None else n
    if n < 1:
        raise ConfigError(f"--entities: expected an integer >= 1, got {n}")
    share = [len(range(s, n, len(series))) for s in range(len(series))]
    lanes = []
    for i in range(n):
        s, k = i % len(series), i // len(series)
        name, values, period = series[s]
        if len(values) < share[s]:
            raise ConfigError(f"--entities {n}: series {name} has {len(values)} samples, too few "
                              f"to start {share[s]} entities at distinct offsets")
        start = k * len(values) // share[s]
        lanes.append(Lane(f"{prefix}{name}" + (f"@{start}" if k else ""), values, period, start))
    return lanes


def chunks(lanes: Sequence[Lane], samples_per_event: int, loop: bool = False) -> Iterator[Chunk]:
    """Every lane's samples in chunks of ``samples_per_event``, merged by signal time; with
    ``loop`` a lane that reaches its series' end starts again at sample 0 (endless)."""
    if samples_per_event < 1:
        raise ConfigError(f"--samples-per-event: expected an integer >= 1, got "
                          f"{samples_per_event}")
    # heap of (signal time, lane, next sample index, samples sent so far)
    heap = [(0.0, i, lane.start, 0) for i, lane in enumerate(lanes) if lane.start < len(
        lane.values)]
    heapq.heapify(heap)
    while heap:
        due, i, index, sent = heapq.heappop(heap)
        lane = lanes[i]
        stop = min(index + samples_per_event, len(lane.values))
        yield Chunk(i, index, lane.values[index:stop], due)
        sent += stop - index
        if stop < len(lane.values):
            heapq.heappush(heap, (sent * lane.period_s, i, stop, sent))
        elif loop:
            heapq.heappush(heap, (sent * lane.period_s, i, 0, sent))


def event(entity_id: str, ts: float, values: np.ndarray, period_s: float) -> dict:
    """The event record of one chunk: the plain form for one sample, the chunk form for more."""
    if len(values) == 1:
        return {"entity_id": entity_id, "ts": ts, "values": values[0].tolist()}
    return {"entity_id": entity_id, "ts": ts, "period": period_s, "values": values.tolist()}
