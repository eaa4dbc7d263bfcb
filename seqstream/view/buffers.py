"""What ``seqstream view`` remembers: per entity, rings of the latest samples, predictions, beats.

Three topics feed an entity (see ``stream/schemas`` and ``stream/records.py``):

* events: ``{"entity_id", "ts", "values"}`` or a chunk with ``"period"`` (sample ``i`` at
  ``ts + i * period``) — the observed signal;
* predictions: per sample the forecast of the next H samples made *after* it, its score and flag
  (a chunk's record has per-sample lists) — the view keeps the 1-step forecast, plotted at the
  time it is for, ``ts + period`` (the chunk's period, else the entity's last gap between
  samples);
* beats: ``{"kind": "beat", "entity_id", "ts", "sample", "rr", "class", "p_abnormal", "anomaly",
  "threshold", "model_id", "decided_ts"}``, one per detected heartbeat.

Memory is bounded: each ring holds at most ``samples`` rows (a row is one sample's F values, or
its F-value forecast with score and flag, or one beat), and at most ``entities`` entities are
kept, the least recently heard dropped first. So the view holds at most
``entities * samples * (2 F + 3)`` numbers plus ``entities * samples`` beats, whatever the input
rate. A page asks with the cursors it holds and gets only newer rows, at most ``samples`` each.

Records that do not parse are counted in ``ignored`` and dropped: the worker dead-letters bad
events, and the view shows what is well formed.

>>> b = Buffers(samples=4, entities=10)
>>> b.add("events", {"entity_id": "p1", "ts": 10.0, "period": 0.5, "values": [[1], [2], [3]]})
>>> b.add("predictions", {"entity_id": "p1", "ts": 10.0, "period": 0.5,
...        "forecast": [[[1.5]], [[2.5]], [[3.5]]], "score": [None, 0.2, 5.0],
...        "anomaly": [False, False, True], "threshold": 4.0, "model_id": "m"})
>>> b.add("events", {"entity_id": "p1", "ts": 11.5, "values": [4]})
>>> b.add("events", {"entity_id": "p1", "ts": 12.0, "values": [5]})
>>> view = b.view("p1", signal=0, predictions=0, beats=0)
>>> view["signal"]["ts"], view["signal"]["next"]  # the ring kept the last 4 of 5 samples
([10.5, 11.0, 11.5, 12.0], 5)
>>> view["predictions"]["forecast_ts"], view["predictions"]["anomaly"]
([10.5, 11.0, 11.5], [False, False, True])
>>> b.view("p1", signal=5, predictions=3, beats=0)["signal"]["ts"]  # nothing newer
[]
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

__all__ = ["Buffers", "Ring"]

_BEAT_FIELDS = ("ts", "sample", "rr", "class", "p_abnormal", "anomaly")


class Ring:
    """At most ``capacity`` rows, each numbered: row ``k`` is the k-th ever appended."""

    def __init__(self, capacity: int) -> None:
        self.rows: deque[Any] = deque(maxlen=capacity)
        self.total = 0

    def append(self, row: Any) -> None:
        self.rows.append(row)
        self.total += 1

    def since(self, cursor: int) -> list[Any]:
        """Rows numbered ``cursor`` and later that are still held."""
        first = self.total - len(self.rows)
        return list(itertools.islice(self.rows, max(0, cursor - first), None))


class _Entity:
    def __init__(self, samples: int) -> None:
        self.signal = Ring(samples)  # (ts, values)
        self.predictions = Ring(samples)  # (ts, forecast_ts | None, forecast row, score, flag)
        self.beats = Ring(samples)  # dict of _BEAT_FIELDS
        self.period: float | None = None  # seconds between samples, once seen
        self.last_prediction_ts: float | None = None
        self.threshold: float | None = None
        self.model_id: str | None = None
        self.heard = time.time()  # wall clock of the last record, for the listing
        self.last_ts: float | None = None  # data time of the latest sample seen


def _ts(raw: Any) -> float:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is not None:
            return moment.timestamp()
    raise ValueError(f"expected seconds or an ISO-8601 time with offset, got {raw!r}")


def _rows(values: Any) -> list[list[float]]:
    if not isinstance(values, list) or not values:
        raise ValueError("expected a non-empty array of values")
    return values if isinstance(values[0], list) else [values]


class Buffers:
    """Every entity's rings, fed one decoded record at a time by the Kafka follower."""

    def __init__(self, samples: int, entities: int) -> None:
        self.samples, self.entities = samples, entities
        self._by_id: OrderedDict[str, _Entity] = OrderedDict()
        self.ignored = 0
        self.records = 0

    def add(self, kind: str, body: Any) -> None:
        """Take one record of ``kind`` events, predictions or beats; drop what does not parse."""
        try:
            entity_id = body["entity_id"]
            if not isinstance(entity_id, str):
                raise TypeError("entity_id: expected a string")
            entity = self._entity(entity_id)
            {"events": self._event, "predictions": self._prediction,
             "beats": self._beat}[kind](entity, body)
        except (KeyError, TypeError, ValueError, IndexError):
            self.ignored += 1
            return
        self.records += 1

    def _entity(self, entity_id: str) -> _Entity:
        entity = self._by_id.get(entity_id)
        if entity is None:
            entity = self._by_id[entity_id] = _Entity(self.samples)
            if len(self._by_id) > self.entities:
                self._by_id.popitem(last=False)
        else:
            self._by_id.move_to_end(entity_id)
        entity.heard = time.time()
        return entity

    def _event(self, entity: _Entity, body: dict[str, Any]) -> None:
        ts, rows = _ts(body["ts"]), _rows(body["values"])
        period = body.get("period")
        if period is not None:
            entity.period = float(period)
        for i, row in enumerate(rows):
            entity.signal.append((ts + i * (period or 0.0), row))
        entity.last_ts = max(entity.last_ts or ts, ts + (len(rows) - 1) * (period or 0.0))

    def _prediction(self, entity: _Entity, body: dict[str, Any]) -> None:
        ts = float(body["ts"])
        if "period" in body:
            period = entity.period = float(body["period"])
            rows = zip(body["forecast"], body["score"], body["anomaly"], strict=True)
        else:
            if entity.last_prediction_ts is not None and ts > entity.last_prediction_ts:
                entity.period = ts - entity.last_prediction_ts
            period = 0.0
            rows = iter([(body["forecast"], body["score"], body["anomaly"])])
        entity.threshold, entity.model_id = float(body["threshold"]), str(body["model_id"])
        for i, (horizon, score, flag) in enumerate(rows):
            t = ts + i * period
            ahead = None if entity.period is None else t + entity.period
            entity.predictions.append((t, ahead, horizon[0], score, bool(flag)))
            entity.last_prediction_ts = t

    def _beat(self, entity: _Entity, body: dict[str, Any]) -> None:
        if body.get("kind", "beat") != "beat":
            raise ValueError(f"expected kind 'beat', got {body.get('kind')!r}")
        beat = {k: body.get(k) for k in _BEAT_FIELDS}
        beat["ts"] = _ts(body["ts"])
        entity.beats.append(beat)

    def listing(self) -> list[dict[str, Any]]:
        """Each entity kept: id, latest data time, seconds since heard, flags in its window."""
        now = time.time()
        return [{"entity_id": name, "last_ts": e.last_ts or e.last_prediction_ts,
                 "heard_s_ago": round(now - e.heard, 1),
                 "flags": sum(row[4] for row in e.predictions.rows),
                 "abnormal_beats": sum(bool(b["anomaly"]) for b in e.beats.rows)}
                for name, e in sorted(self._by_id.items())]

    def view(self, entity_id: str, *, signal: int, predictions: int, beats: int,
             ) -> dict[str, Any] | None:
        """The rows of one entity newer than the page's cursors (``None`` if not kept)."""
        e = self._by_id.get(entity_id)
        if e is None:
            return None
        sig = e.signal.since(signal)
        pred = e.predictions.since(predictions)
        return {
            "entity_id": entity_id, "threshold": e.threshold, "model_id": e.model_id,
            "period": e.period, "window": self.samples,
            "signal": {"next": e.signal.total, "ts": [r[0] for r in sig],
                       "values": [r[1] for r in sig]},
            "predictions": {"next": e.predictions.total, "ts": [r[0] for r in pred],
                            "forecast_ts": [r[1] for r in pred],
                            "forecast": [r[2] for r in pred], "score": [r[3] for r in pred],
                            "anomaly": [r[4] for r in pred]},
            "beats": {"next": e.beats.total, "rows": e.beats.since(beats)},
        }
