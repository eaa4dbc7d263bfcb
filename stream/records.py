"""Incoming events: fast validation of raw Kafka values, and the dead-letter record for rejects.

An event is UTF-8 JSON, keyed in Kafka by its ``entity_id`` (so all of an entity's events share a
partition and arrive in order), in one of two shapes::

    {"entity_id": "p100", "ts": 1700000000.25, "values": [0.12, -0.4]}            # one sample
    {"entity_id": "p100", "ts": "2024-05-01T12:00:00Z", "period": 0.0027778,
     "values": [[0.12, -0.4], [0.13, -0.41], ...]}                                 # a chunk

``ts`` is seconds since the Unix epoch (a JSON number) or an ISO-8601 time *with* a UTC offset
(``Z`` or ``+01:00``; a naive time is refused rather than guessed). In a chunk, ``ts`` is the time
of the first sample and sample ``i`` is at ``ts + i * period``. Every value must be a JSON number
(not a boolean, not a string) that fits a float32; the feature count must match the model's.

Anything else raises :class:`~stream.errors.RecordError` whose ``reason`` is one of
:data:`REASONS`, a small fixed set used as a metric label and in the dead-letter record (its
last two, ``future_ts`` and ``late``, are decided by :class:`stream.engine.Engine` against the
worker's clock and the entity's watermark, not here). A valid event is decoded and checked by
msgspec's typed decoder in C; whatever it refuses is decoded again with orjson and checked in
Python, which words the refusal (``tests/test_typed_decode.py`` holds the two ways to the same
answers). orjson refuses the non-standard ``NaN``/``Infinity`` tokens and numbers that overflow
a double; only on that error path is the payload re-read by the standard library to tell a
``non_finite`` value from plain ``malformed_json``.

The dead-letter record keeps the first :data:`RAW_LIMIT` bytes of the payload as *text*, decoded
as UTF-8 with U+FFFD for undecodable bytes (readable in any consumer; binary garbage is lossy by
design), plus its full length and whether it was cut.

>>> e = parse_event(b'{"entity_id": "s1", "ts": "1970-01-01T00:00:10Z", "values": [1, 2.5]}', 2)
>>> e.entity_id, e.ts, e.rows, e.chunk
('s1', 10.0, [[1, 2.5]], False)
>>> parse_event(b'{"entity_id": "s1", "ts": 10, "values": [NaN, 1]}', 2)
Traceback (most recent call last):
...
stream.errors.RecordError: non_finite: values must be finite numbers; got NaN
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import orjson

from stream.errors import RecordError

if TYPE_CHECKING:
    from stream.beats import BeatOut

__all__ = [
    "FLOAT32_MAX",
    "MAX_ENTITY_ID_BYTES",
    "RAW_LIMIT",
    "REASONS",
    "TS_MAX",
    "Event",
    "beat_record",
    "deadletter_record",
    "parse_event",
    "prediction_record",
    "schema",
]

REASONS = (
    "too_large",        # payload over the configured size
    "malformed_json",   # not UTF-8 JSON
    "not_object",       # valid JSON, but not an object
    "missing_field",    # entity_id, ts or values (or period for a chunk) absent
    "extra_field",      # a key outside the schema
    "wrong_type",       # a field of the wrong JSON type
    "empty_entity_id",  # "" or only whitespace
    "bad_entity_id",    # longer than MAX_ENTITY_ID_BYTES
    "key_mismatch",     # Kafka key differs from entity_id (events would leave their partition)
    "bad_ts",           # unparseable, naive, negative or beyond year 9999
    "bad_period",       # a chunk's period not a positive finite number
    "empty_chunk",      # a chunk with no samples
    "feature_count",    # a sample with the wrong number of values
    "non_finite",       # NaN, Infinity, or a value outside float32 (also after scaling)
    # refused by the engine against a clock, not by parse_event:
    "future_ts",        # its (last sample's) ts too far ahead of the worker's clock
    "late",             # older than its entity's watermark, and not a replay of an applied offset
)

RAW_LIMIT = 1024
MAX_ENTITY_ID_BYTES = 256
FLOAT32_MAX = 3.4028234663852886e38
TS_MAX = 253402300800.0  # 10000-01-01T00:00:00Z
_SINGLE = frozenset(("entity_id", "ts", "values"))
_CHUNK = frozenset(("entity_id", "ts", "period", "values"))

# The typed shapes of a valid event for msgspec (see parse_event): a JSON number that fits int64
# stays an int as orjson keeps it, a float must fit float32; a bigger int goes the checked way.
_Value = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)] | Annotated[
    float, msgspec.Meta(ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
_Ts = Annotated[int, msgspec.Meta(ge=0, le=(1 << 63) - 1)] | Annotated[
    float, msgspec.Meta(ge=0.0, lt=TS_MAX)] | str


class _Single(msgspec.Struct, forbid_unknown_fields=True):
    entity_id: str
    ts: _Ts
    values: list[_Value]


class _Chunk(msgspec.Struct, forbid_unknown_fields=True):
    entity_id: str
    ts: _Ts
    period: Annotated[int, msgspec.Meta(gt=0, le=86400 * 365)] | Annotated[
        float, msgspec.Meta(gt=0.0, le=86400.0 * 365)]
    values: Annotated[list[list[_Value]], msgspec.Meta(min_length=1)]


_DECODE_SINGLE = msgspec.json.Decoder(_Single).decode
_DECODE_CHUNK = msgspec.json.Decoder(_Chunk).decode


class Event:
    """One validated event: ``rows`` holds its samples (one row for a single sample)."""

    __slots__ = ("chunk", "entity_id", "period", "rows", "ts")

    def __init__(self, entity_id: str, ts: float, period: float, rows: list[list[float]],
                 chunk: bool) -> None:
        self.entity_id = entity_id
        self.ts = ts  # seconds, time of rows[0]
        self.period = period  # seconds between rows (0.0 for a single sample)
        self.rows = rows
        self.chunk = chunk

    def __repr__(self) -> str:
        return (f"Event({self.entity_id!r}, ts={self.ts}, period={self.period}, "
                f"samples={len(self.rows)}, chunk={self.chunk})")


def parse_event(raw: bytes, n_features: int, max_bytes: int = 1 << 20,
                key: bytes | None = None, check_key: bool = False) -> Event:
    """Validate one Kafka value into an :class:`Event`, or raise ``RecordError``.

    With ``check_key``, the Kafka ``key`` must equal the UTF-8 ``entity_id``: an event keyed
    otherwise (or not at all) may sit on another partition than the entity's other events, and
    then neither order nor a single owner of its state is guaranteed.

    Why two ways: a valid event is decoded and type-checked by msgspec in C (:func:`_typed`,
    about a seventh of the checked way's time on a single sample); anything msgspec refuses or
    any doubt goes the checked way below, which alone words the reason and detail of a refusal,
    so a dead letter reads the same whichever way came first.
    """
    if len(raw) > max_bytes:
        raise RecordError("too_large", f"expected at most {max_bytes} bytes, got {len(raw)}")
    event = _typed(raw, n_features, key, check_key)
    return event if event is not None else _checked(raw, n_features, key, check_key)


def _checked(raw: bytes, n_features: int, key: bytes | None, check_key: bool) -> Event:
    """:func:`parse_event` the checked way: orjson, then every check in Python, worded."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as ex:
        raise _classify_bad_json(raw, ex) from ex
    if type(obj) is not dict:
        raise RecordError("not_object", f"expected a JSON object, got {_json_type(obj)}")
    keys = obj.keys()
    chunk = "period" in obj
    allowed = _CHUNK if chunk else _SINGLE
    if len(keys) != len(allowed) or keys != allowed:
        missing = sorted(allowed - keys)
        if missing:
            raise RecordError("missing_field", f"expected fields {', '.join(sorted(allowed))}; "
                                               f"missing {', '.join(missing)}")
        extra = sorted(keys - allowed)
        raise RecordError("extra_field", f"expected only {', '.join(sorted(allowed))}; got "
                                         f"also {', '.join(repr(k)[:40] for k in extra[:5])}")
    entity_id = obj["entity_id"]
    if type(entity_id) is not str:
        raise RecordError("wrong_type", f"entity_id: expected a string, got "
                                        f"{_json_type(entity_id)}")
    if not entity_id.strip():
        raise RecordError("empty_entity_id", f"entity_id: expected a non-blank string, got "
                                             f"{entity_id!r}")
    encoded = entity_id.encode()
    if len(encoded) > MAX_ENTITY_ID_BYTES:
        raise RecordError("bad_entity_id", f"entity_id: expected at most {MAX_ENTITY_ID_BYTES}"
                                           f" UTF-8 bytes, got {len(encoded)}")
    if check_key and key != encoded:
        raise RecordError("key_mismatch", f"expected the Kafka key to be the entity_id "
                          f"{entity_id[:60]!r} (all of an entity's events must share one "
                          f"partition), got {key[:60] if key is not None else 'no key'!r}")
    ts = _parse_ts(obj["ts"])
    values = obj["values"]
    if type(values) is not list:
        raise RecordError("wrong_type", f"values: expected an array, got {_json_type(values)}")
    if chunk:
        period = obj["period"]
        if type(period) is not float and type(period) is not int:
            raise RecordError("wrong_type", f"period: expected a number of seconds, got "
                                            f"{_json_type(period)}")
        if not 0.0 < period <= 86400.0 * 365:
            raise RecordError("bad_period", f"period: expected seconds in (0, 1 year], got "
                                            f"{period!r}")
        if not values:
            raise RecordError("empty_chunk", "values: expected at least one sample, got []")
        for i, row in enumerate(values):
            if type(row) is not list:
                raise RecordError("wrong_type", f"values[{i}]: expected an array of "
                                                f"{n_features} numbers, got {_json_type(row)}")
            _check_row(row, n_features, f"values[{i}]")
        if ts + period * (len(values) - 1) >= TS_MAX:
            raise RecordError("bad_ts", "ts: the chunk's last sample falls after year 9999")
        return Event(entity_id, ts, float(period), values, True)
    if values and type(values[0]) is list:
        raise RecordError("missing_field", "period: an array of samples (a chunk) needs "
                                           "'period', the seconds between them")
    _check_row(values, n_features, "values")
    return Event(entity_id, ts, 0.0, [values], False)


def _typed(raw: bytes, n_features: int, key: bytes | None, check_key: bool) -> Event | None:
    """The event if msgspec's typed decode and the few checks left to Python all pass, the same
    :class:`Event` the checked way makes of it; ``None`` for anything else, never an error."""
    try:
        e: _Single | _Chunk = _DECODE_SINGLE(raw)
    except msgspec.DecodeError:  # a chunk has a field ('period') that a single sample has not
        try:
            e = _DECODE_CHUNK(raw)
        except msgspec.DecodeError:
            return None
    entity_id = e.entity_id
    encoded = entity_id.encode()  # msgspec decodes valid UTF-8 only: no lone surrogates
    if (not entity_id.strip() or len(encoded) > MAX_ENTITY_ID_BYTES
            or (check_key and key != encoded)):
        return None
    ts = e.ts
    if type(ts) is str:
        try:
            ts = _parse_ts(ts)
        except RecordError:
            return None
    else:
        ts = float(ts)
        if ts >= TS_MAX:  # an int ts under 2**63 can still be past year 9999
            return None
    values = e.values
    if type(e) is _Single:
        return Event(entity_id, ts, 0.0, [values], False) if len(values) == n_features else None
    period = e.period
    for row in values:
        if len(row) != n_features:
            return None
    if ts + period * (len(values) - 1) >= TS_MAX:
        return None
    return Event(entity_id, ts, float(period), values, True)


def _check_row(row: list[Any], n_features: int, where: str) -> None:
    if len(row) != n_features:
        raise RecordError("feature_count", f"{where}: expected {n_features} values, got "
                                           f"{len(row)}")
    lo, hi = -FLOAT32_MAX, FLOAT32_MAX
    for v in row:
        t = type(v)
        if t is not float and t is not int:
            raise RecordError("wrong_type", f"{where}: expected numbers, got {_json_type(v)}")
        if not lo <= v <= hi:
            raise RecordError("non_finite", f"{where}: expected finite float32 numbers, got "
                                            f"{v!r}")


def _parse_ts(ts: Any) -> float:
    t = type(ts)
    if t is float or t is int:
        if not 0.0 <= ts < TS_MAX:
            raise RecordError("bad_ts", f"ts: expected seconds since 1970 in [0, {TS_MAX:.0f})"
                                        f", got {ts!r}")
        return float(ts)
    if t is str:
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError as ex:
            raise RecordError("bad_ts", f"ts: expected ISO-8601 with a UTC offset, got "
                                        f"{ts[:60]!r}") from ex
        if moment.tzinfo is None:
            raise RecordError("bad_ts", f"ts: expected ISO-8601 with a UTC offset (Z or "
                                        f"+hh:mm), got the naive time {ts[:60]!r}")
        try:
            seconds = moment.timestamp()
        except (OverflowError, ValueError, OSError) as ex:
            raise RecordError("bad_ts", f"ts: expected a time after 1970, got {ts[:60]!r}") \
                from ex
        if not 0.0 <= seconds < TS_MAX:
            raise RecordError("bad_ts", f"ts: expected a time from 1970 to 9999, got "
                                        f"{ts[:60]!r}")
        return seconds
    raise RecordError("wrong_type", f"ts: expected a number or an ISO-8601 string, got "
                                    f"{_json_type(ts)}")


def _classify_bad_json(raw: bytes, ex: orjson.JSONDecodeError) -> RecordError:
    """orjson refuses NaN/Infinity tokens and overflowing numbers as syntax; the standard
    library accepts them, which tells ``non_finite`` apart from ``malformed_json``."""
    seen: list[str] = []

    def constant(name: str) -> float:
        seen.append(name)
        return 0.0

    def number(text: str) -> float:
        value = float(text)
        if math.isinf(value):
            seen.append(text[:30])
        return value

    try:
        json.loads(raw.decode("utf-8"), parse_constant=constant, parse_float=number)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return RecordError("malformed_json", f"expected UTF-8 JSON, got {ex}")
    if seen:
        return RecordError("non_finite", f"values must be finite numbers; got "
                                         f"{' or '.join(sorted(set(seen))[:3])}")
    return RecordError("malformed_json", f"expected UTF-8 JSON, got {ex}")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def deadletter_record(error: RecordError, raw: bytes, topic: str, partition: int, offset: int,
                      limit: int = RAW_LIMIT) -> dict[str, Any]:
    """The record written to the dead-letter topic for one rejected event."""
    return {
        "reason": error.reason,
        "detail": error.detail,
        "raw": raw[:limit].decode("utf-8", "replace"),
        "raw_bytes": len(raw),
        "raw_truncated": len(raw) > limit,
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }


def prediction_record(entity_id: str, ts: float, forecast: Any, score: Any, anomaly: Any,
                      threshold: float, model_id: str, period: float | None = None,
                      skipped: int = 0) -> dict[str, Any]:
    """The record of ``stream/schemas/prediction.json`` answering one event: for one sample
    (``period`` None), or for a chunk, whose ``forecast``, ``score`` and ``anomaly`` then hold
    one entry per sample from ``ts`` on, ``skipped`` counting the samples left out before it.
    A flagged sample of a chunk goes to the anomalies topic as a one-sample record of its own.

    >>> prediction_record("p1", 10.0, [[0.5]], 3.2, True, 3.0, "m")
    {'entity_id': 'p1', 'ts': 10.0, 'forecast': [[0.5]], 'score': 3.2, 'anomaly': True, \
'threshold': 3.0, 'model_id': 'm'}
    >>> prediction_record("p1", 10.0, [[[0.5]]], [None], [False], 3.0, "m", 0.25, 2)["skipped"]
    2
    """
    if period is None:
        return {"entity_id": entity_id, "ts": ts, "forecast": forecast, "score": score,
                "anomaly": anomaly, "threshold": threshold, "model_id": model_id}
    record = {"entity_id": entity_id, "ts": ts, "period": period, "forecast": forecast,
              "score": score, "anomaly": anomaly, "threshold": threshold, "model_id": model_id}
    if skipped:
        record["skipped"] = skipped  # samples before ts, at or before the watermark
    return record


def beat_record(entity_id: str, beat: BeatOut, decided_ts: float, period_s: float,
                threshold: float, model_id: str) -> dict[str, Any]:
    """The record of one decided beat (``stream/schemas/beat.json``).

    ``decided_ts`` is the time of the sample at which the beat was decided; the R peak's time is
    counted back from it by the card's period, ``decided_ts - (decided - sample) * period_s``,
    always, even when the R peak's own sample is at hand: its sample may have come in an earlier
    batch (only the beat stage's state remembers it), and one formula for every beat makes the
    time independent of how the stream was cut into batches (the offline replay uses it too).
    """
    sample, rr = int(beat.sample), beat.rr_s
    return {"kind": "beat", "entity_id": entity_id,
            "ts": decided_ts - (int(beat.decided) - sample) * period_s, "sample": sample,
            "rr": None if rr is None else float(rr), "class": str(beat.cls),
            "p_abnormal": float(beat.p_abnormal), "anomaly": bool(beat.anomaly),
            "threshold": threshold, "model_id": model_id, "decided_ts": decided_ts,
            "irregular": bool(beat.irregular)}


@cache
def schema(name: str) -> dict[str, Any]:
    """The JSON Schema ``stream/schemas/<name>.json`` (event, prediction, beat or deadletter)."""
    text = resources.files("stream").joinpath("schemas", f"{name}.json").read_text("utf-8")
    return json.loads(text)
