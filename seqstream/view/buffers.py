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

Memory is bounded whatever the input rate: an entity's signal and prediction rings are numpy
columns of ``samples`` rows, allocated at its first record (a signal row is its time and F
float64 values, a prediction row the time, the time its forecast is for, the F-value 1-step
forecast, the score and the flag: ``samples * (16 F + 33)`` bytes in all, 0.23 MB for two-lead
ECG at the default 3600), beats are kept while they fall within the signal's window (at most
``samples`` of them), and at most ``entities`` entities are kept, the least recently heard
dropped first. A page asks with the cursors it holds and gets only newer rows, at most
``samples`` of each.

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

import math
import time
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

import numpy as np

__all__ = ["Buffers", "Ring"]

_BEAT_FIELDS = ("ts", "sample", "rr", "class", "p_abnormal", "anomaly")


class Ring:
    """The last ``capacity`` rows of named numpy columns; row ``k`` is the k-th ever appended.

    The columns are allocated at the first ``extend`` with the shapes it brings; rows of another
    width (an entity whose model changed its feature count) start the ring afresh.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.columns: dict[str, np.ndarray] = {}
        self.total = 0
        self.floor = 0  # rows before this were dropped by a change of width

    def extend(self, **columns: np.ndarray) -> None:
        n = len(next(iter(columns.values())))
        shapes = {k: v.shape[1:] for k, v in columns.items()}
        if {k: v.shape[1:] for k, v in self.columns.items()} != shapes:
            self.columns = {k: np.empty((self.capacity, *v.shape[1:]), dtype=v.dtype)
                            for k, v in columns.items()}
            self.floor = self.total
        keep = min(n, self.capacity)
        start = (self.total + n - keep) % self.capacity
        end = start + keep  # two slices when the rows wrap past the end
        for name, values in columns.items():
            column, rows = self.columns[name], values[n - keep:]
            split = min(end, self.capacity) - start
            column[start:start + split] = rows[:split]
            column[:keep - split] = rows[split:]
        self.total += n

    @property
    def first(self) -> int:
        """The number of the oldest row held."""
        return max(self.total - self.capacity, self.floor)

    def since(self, cursor: int) -> dict[str, np.ndarray]:
        """The held rows numbered ``cursor`` and later, column by column."""
        where = np.arange(max(cursor, self.first), self.total) % self.capacity
        return {name: column[where] for name, column in self.columns.items()}


class _Entity:
    def __init__(self, samples: int) -> None:
        self.signal = Ring(samples)  # ts, values [F]
        self.predictions = Ring(samples)  # ts, forecast_ts, forecast [F], score, anomaly
        self.beats: deque[dict[str, Any]] = deque(maxlen=samples)
        self.beats_total = 0
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


def _matrix(rows: Any) -> np.ndarray:
    """Rows of numbers as a float64 ``[n, F]`` array (one sample's values become one row)."""
    if not isinstance(rows, list) or not rows:
        raise ValueError("expected a non-empty array of values")
    out = np.asarray(rows if isinstance(rows[0], list) else [rows], dtype=np.float64)
    if out.ndim != 2:
        raise ValueError(f"expected [samples][features] numbers, got shape {out.shape}")
    return out


def _column(rows: dict[str, np.ndarray], name: str) -> list[Any]:
    """A column as JSON-ready lists; NaN (no score, no forecast time yet) becomes None."""
    if name not in rows:  # the ring has had no row yet
        return []
    values = rows[name].tolist()
    if rows[name].dtype.kind == "f" and rows[name].ndim == 1:
        return [None if math.isnan(v) else v for v in values]
    return values


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
            parse = {"events": self._event, "predictions": self._prediction,
                     "beats": self._beat}[kind]
            parse(self._entity(entity_id), body)
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
        ts, values = _ts(body["ts"]), _matrix(body["values"])
        period = float(body["period"]) if "period" in body else 0.0
        if period > 0:
            entity.period = period
        times = ts + period * np.arange(len(values))
        entity.signal.extend(ts=times, values=values)
        entity.last_ts = max(entity.last_ts or -math.inf, float(times[-1]))
        oldest = entity.signal.columns["ts"][entity.signal.first % entity.signal.capacity]
        while entity.beats and entity.beats[0]["ts"] < oldest:
            entity.beats.popleft()  # beats older than the signal's window go with it

    def _prediction(self, entity: _Entity, body: dict[str, Any]) -> None:
        ts = float(body["ts"])
        if "period" in body:
            period = entity.period = float(body["period"])
            horizons, scores, flags = body["forecast"], body["score"], body["anomaly"]
            if not len(horizons) == len(scores) == len(flags):
                raise ValueError("expected forecast, score and anomaly of one length")
        else:
            if entity.last_prediction_ts is not None and ts > entity.last_prediction_ts:
                entity.period = ts - entity.last_prediction_ts
            period = 0.0
            horizons, scores, flags = [body["forecast"]], [body["score"]], [body["anomaly"]]
        forecast = _matrix([horizon[0] for horizon in horizons])
        times = ts + period * np.arange(len(forecast))
        ahead = times + (math.nan if entity.period is None else entity.period)
        score = np.array([math.nan if s is None else s for s in scores], dtype=np.float64)
        entity.threshold, entity.model_id = float(body["threshold"]), str(body["model_id"])
        entity.predictions.extend(ts=times, forecast_ts=ahead, forecast=forecast, score=score,
                                  anomaly=np.asarray(flags, dtype=bool))
        entity.last_prediction_ts = float(times[-1])

    def _beat(self, entity: _Entity, body: dict[str, Any]) -> None:
        if body.get("kind", "beat") != "beat":
            raise ValueError(f"expected kind 'beat', got {body.get('kind')!r}")
        beat = {k: body.get(k) for k in _BEAT_FIELDS}
        beat["ts"] = _ts(body["ts"])
        entity.beats.append(beat)
        entity.beats_total += 1

    def listing(self) -> list[dict[str, Any]]:
        """Each entity kept: id, latest data time, seconds since heard, flags in its window."""
        now = time.time()
        out = []
        for name, e in sorted(self._by_id.items()):
            flags = e.predictions.since(e.predictions.first).get("anomaly")
            out.append({"entity_id": name, "last_ts": e.last_ts or e.last_prediction_ts,
                        "heard_s_ago": round(now - e.heard, 1),
                        "flags": 0 if flags is None else int(flags.sum()),
                        "abnormal_beats": sum(bool(b["anomaly"]) for b in e.beats)})
        return out

    def view(self, entity_id: str, *, signal: int, predictions: int, beats: int,
             ) -> dict[str, Any] | None:
        """The rows of one entity newer than the page's cursors (``None`` if not kept)."""
        e = self._by_id.get(entity_id)
        if e is None:
            return None
        sig = e.signal.since(signal)
        pred = e.predictions.since(predictions)
        first_beat = e.beats_total - len(e.beats)
        return {
            "entity_id": entity_id, "threshold": e.threshold, "model_id": e.model_id,
            "period": e.period, "window": self.samples,
            "signal": {"next": e.signal.total, "ts": _column(sig, "ts"),
                       "values": _column(sig, "values")},
            "predictions": {"next": e.predictions.total, "ts": _column(pred, "ts"),
                            "forecast_ts": _column(pred, "forecast_ts"),
                            "forecast": _column(pred, "forecast"),
                            "score": _column(pred, "score"), "anomaly": _column(pred, "anomaly")},
            "beats": {"next": e.beats_total,
                      "rows": list(e.beats)[max(0, beats - first_beat):]},
        }
