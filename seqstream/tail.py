"""``seqstream tail``: follow the predictions, anomalies or beats topic as a table or JSON lines.

A prediction record (``stream/schemas/prediction.json``) carries, per sample, the forecast of the
next H samples made after it, the anomaly score of the sample against the forecast made for it one
step earlier, the flag, the threshold and the model id; a chunk's record carries per-sample lists
(sample ``i`` at ``ts + i * period``). It does not repeat the observed value, so ``tail`` also
reads the events topic and joins each sample's value by (entity, ts) (``--no-values`` skips
that); a value shows as ``-`` when its event came before ``tail`` started.

The table shows one row per prediction record: for a chunk, its last sample's value and next-step
forecast, the highest score in it and how many of its samples were flagged (``--per-sample``
gives a row per sample). ``--json`` prints one object per sample, always flat::

    {"entity_id", "ts", "value", "forecast", "score", "anomaly", "threshold", "model_id"}

For an ECG model with a beat stage, ``--beats`` follows the beats topic instead: one row per
decided heartbeat (its R peak's time, the RR interval before it, the AAMI class, p_abnormal,
the flag and ``irregular rhythm`` where the beat stage's rhythm rule held; ``--json`` prints the
beat record itself, ``stream/schemas/beat.json``), and with ``--anomalies-only`` the flagged
beats only. The anomalies topic carries flagged beats beside
flagged samples (told apart by ``"kind": "beat"``); without ``--beats`` they show there as beat
rows among the sample rows.

>>> rec = {"entity_id": "100", "ts": 10.0, "period": 0.5, "forecast": [[[1.0]], [[2.0]]],
...        "score": [None, 3.5], "anomaly": [False, True], "threshold": 3.0, "model_id": "ab"}
>>> [(s.ts, s.forecast, s.score, s.anomaly) for s in samples(rec)]
[(10.0, [[1.0]], None, False), (10.5, [[2.0]], 3.5, True)]
>>> print(format_beat(Beat({"kind": "beat", "entity_id": "100", "ts": 10.0, "sample": 3600,
...     "rr": 0.61, "class": "V", "p_abnormal": 0.97, "anomaly": True, "threshold": 0.5,
...     "model_id": "ab", "decided_ts": 11.2})))
10.000 s                100                          V   0.610      0.970  ABNORMAL
>>> print(format_beat(Beat({"kind": "beat", "entity_id": "100", "ts": 10.0, "sample": 3600,
...     "rr": 0.42, "class": "N", "p_abnormal": 0.12, "anomaly": False, "threshold": 0.5,
...     "model_id": "ab", "decided_ts": 11.2, "irregular": True})))
10.000 s                100                          N   0.420      0.120  irregular rhythm
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import math
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from seqstream.topics import started
from stream.security import kafka_kwargs
from stream.settings import Settings, add_flags

__all__ = ["BEAT_HEADER", "HEADER", "Beat", "Sample", "ValueIndex", "configure", "follow",
           "format_beat", "format_row", "run", "samples", "to_json"]


@dataclass(frozen=True)
class Sample:
    """One predicted sample, flattened out of a (single or chunk) prediction record."""

    entity_id: str
    ts: float
    forecast: list[list[float]]  # [H][F], user units
    score: float | None
    anomaly: bool
    threshold: float
    model_id: str
    value: list[float] | None = None  # the observed sample, when its event was seen


@dataclass(frozen=True)
class Beat:
    """One beat record (``stream/schemas/beat.json``), as read from the beats or anomalies
    topic."""

    record: dict[str, Any]


Row = list[Sample] | Beat


def samples(record: dict[str, Any]) -> list[Sample]:
    """The per-sample view of a prediction record (either form)."""
    common = (record["threshold"], record["model_id"])
    if "period" not in record:
        return [Sample(record["entity_id"], record["ts"], record["forecast"], record["score"],
                       record["anomaly"], *common)]
    ts, period = record["ts"], record["period"]
    return [Sample(record["entity_id"], ts + i * period, f, s, a, *common)
            for i, (f, s, a) in enumerate(zip(record["forecast"], record["score"],
                                              record["anomaly"], strict=True))]


def _event_ts(ts: Any) -> float | None:
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return float(ts)
    if isinstance(ts, str):
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            return None
        return moment.timestamp() if moment.tzinfo is not None else None
    return None


class ValueIndex:
    """Observed samples by (entity, ts), from the events topic, for the prediction join.

    Keys are the time in units of 0.1 ms, looked up with a one-unit tolerance: the worker
    computes a chunk's sample times as ``ts + period * i`` too, but in another order of float
    operations, and two samples of one entity are never that close. The oldest entries are
    dropped beyond ``limit`` so a long tail stays small.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._values: OrderedDict[tuple[str, int], list[float]] = OrderedDict()

    def add_event(self, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("entity_id"), str):
            return
        ts, values = _event_ts(body.get("ts")), body.get("values")
        if ts is None or not isinstance(values, list) or not values:
            return
        entity = body["entity_id"]
        if isinstance(values[0], list):
            period = body.get("period")
            if not isinstance(period, int | float) or period <= 0:
                return
            for i, row in enumerate(values):
                self._put(entity, ts + i * period, row)
        else:
            self._put(entity, ts, values)

    def _put(self, entity: str, ts: float, row: list[float]) -> None:
        self._values[(entity, round(ts * 1e4))] = row
        if len(self._values) > self.limit:
            self._values.popitem(last=False)

    def get(self, entity: str, ts: float) -> list[float] | None:
        key = round(ts * 1e4)
        for k in (key, key - 1, key + 1):
            row = self._values.get((entity, k))
            if row is not None:
                return row
        return None

    def __len__(self) -> int:
        return len(self._values)


HEADER = (f"{'time (UTC)':<23} {'entity':<24} {'n':>3} {'value':>18} {'next forecast':>18} "
          f"{'score':>8}  flag")


def _entity(entity_id: str, width: int = 24) -> str:
    # ids often share a long prefix and differ at the end: keep the end
    return entity_id if len(entity_id) <= width else "…" + entity_id[-(width - 1):]


def _clock(ts: float) -> str:
    if ts >= 1e8:  # an epoch time: show it as a date
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
    return f"{ts:.3f} s"


def _numbers(values: list[float] | None) -> str:
    if values is None:
        return "-"
    shown = ", ".join(f"{v:.4g}" for v in values[:3]) + (", …" if len(values) > 3 else "")
    return shown if len(values) == 1 else f"[{shown}]"


def format_row(group: list[Sample]) -> str:
    """One table line for the samples of one record (or one sample)."""
    last = group[-1]
    scores = [s.score for s in group if s.score is not None]
    flagged = sum(s.anomaly for s in group)
    flag = "" if not flagged else "ANOMALY" if len(group) == 1 else f"ANOMALY x{flagged}"
    return (f"{_clock(group[0].ts):<23} {_entity(last.entity_id):<24} {len(group):>3} "
            f"{_numbers(last.value):>18} {_numbers(last.forecast[0]):>18} "
            f"{(f'{max(scores):.2f}' if scores else '-'):>8}  {flag}")


BEAT_HEADER = (f"{'time (UTC)':<23} {'entity':<24} {'class':>5} {'RR (s)':>7} "
               f"{'p_abnormal':>10}  flag")


def format_beat(beat: Beat) -> str:
    """One table line for a beat; ``irregular rhythm`` where the rhythm rule held (S was not
    called, so a reader knows why a premature-looking beat is N); records from workers before
    that field have none."""
    r = beat.record
    rr = "-" if r["rr"] is None else f"{r['rr']:.3f}"
    flags = [f for f, on in (("ABNORMAL", r["anomaly"]), ("irregular rhythm", r.get("irregular")))
             if on]
    return (f"{_clock(r['ts']):<23} {_entity(r['entity_id']):<24} {r['class']:>5} {rr:>7} "
            f"{r['p_abnormal']:>10.3f}  {'  '.join(flags)}").rstrip()


def to_json(sample: Sample) -> bytes:
    """One JSON line for ``--json``."""
    return orjson.dumps({"entity_id": sample.entity_id, "ts": sample.ts, "value": sample.value,
                         "forecast": sample.forecast, "score": sample.score,
                         "anomaly": sample.anomaly, "threshold": sample.threshold,
                         "model_id": sample.model_id})


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--anomalies-only", action="store_true",
                        help="read the anomalies topic: flagged samples (and beats) only")
    parser.add_argument("--beats", action="store_true",
                        help="follow the beats topic: one row per detected heartbeat (ECG models "
                             "with a beat stage); with --anomalies-only the flagged ones")
    parser.add_argument("--entity", action="append", default=[], metavar="ID",
                        help="show only this entity (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per sample on stdout, for piping")
    parser.add_argument("--per-sample", action="store_true",
                        help="table: one row per sample of a chunk, not one per record")
    parser.add_argument("--from-beginning", action="store_true",
                        help="start at the topics' earliest retained records, not the end")
    parser.add_argument("--no-values", action="store_true",
                        help="do not read the events topic to show observed values")
    parser.add_argument("--alarm-gap", type=float, default=10.0, metavar="SECONDS",
                        help="table: flags closer than this are one alarm, shown with its start "
                             "and end (seqstream.alarms); default 10")
    parser.add_argument("--count", type=int, help="stop after this many rows (or JSON lines)")
    parser.add_argument("--timeout", type=float,
                        help="stop after this many seconds (default: until Ctrl-C)")
    add_flags(parser, ["kafka_bootstrap", "topic_predictions", "topic_anomalies",
                       "topic_events", "topic_beats"])


def _topic(settings: Settings, anomalies_only: bool, beats: bool) -> str:
    if anomalies_only:
        return settings.topic_anomalies
    return settings.topic_beats if beats else settings.topic_predictions


async def follow(settings: Settings, emit: Callable[[Row], None], *,
                 anomalies_only: bool = False, entities: Iterable[str] = (),
                 per_sample: bool = False, from_beginning: bool = False, values: bool = True,
                 count: int | None = None, timeout_s: float | None = None,
                 beats: bool = False) -> int:
    """Consume predictions (or anomalies, or with ``beats`` the beats) and call ``emit`` with
    each row: a prediction's samples, or a :class:`Beat`; returns the number of rows emitted."""
    topic = _topic(settings, anomalies_only, beats)
    values = values and not beats
    topics = [topic, settings.topic_events] if values else [topic]
    wanted = set(entities)
    index = ValueIndex()
    consumer = AIOKafkaConsumer(*topics, **kafka_kwargs(settings), group_id=None,
                                enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest")
    await started(consumer, settings)
    rows = 0
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    try:
        while (count is None or rows < count) and time.monotonic() < deadline:
            wait_ms = int(max(0.0, min(0.5, deadline - time.monotonic())) * 1000)
            batch = await consumer.getmany(timeout_ms=wait_ms, max_records=5000)
            # events first, so a prediction in the same batch finds its value
            records = sorted((r for part in batch.values() for r in part),
                             key=lambda r: r.topic != settings.topic_events)
            for record in records:
                if wanted and (record.key or b"").decode(errors="replace") not in wanted:
                    continue
                try:
                    body = orjson.loads(record.value)
                except orjson.JSONDecodeError:
                    continue  # not ours to judge: the worker dead-letters bad events
                if record.topic == settings.topic_events and record.topic != topic:
                    index.add_event(body)
                    continue
                if isinstance(body, dict) and body.get("kind") == "beat":
                    emit(Beat(body))
                    rows += 1
                    if count is not None and rows >= count:
                        return rows
                    continue
                if beats:
                    continue  # a flagged sample on the anomalies topic
                try:
                    flat = samples(body)
                except (KeyError, TypeError, ValueError):
                    continue
                if values:
                    flat = [dataclasses.replace(s, value=index.get(s.entity_id, s.ts))
                            for s in flat]
                for group in ([[s] for s in flat] if per_sample else [flat]):
                    emit(group)
                    rows += 1
                    if count is not None and rows >= count:
                        return rows
    finally:
        await consumer.stop()
    return rows


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(overrides=vars(args))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # its INFO lines would mix in
    out = sys.stdout

    if args.json:
        def emit(row: Row) -> None:
            if isinstance(row, Beat):
                out.write(orjson.dumps(row.record).decode() + "\n")
            for s in row if isinstance(row, list) else ():
                out.write(to_json(s).decode() + "\n")
            out.flush()
    else:
        from seqstream.alarms import AlarmTracker

        printed = 0
        alarms = AlarmTracker(args.alarm_gap, _clock)
        header = ""

        def emit(row: Row) -> None:
            nonlocal printed, header
            want = BEAT_HEADER if isinstance(row, Beat) else HEADER + "  alarm"
            if printed % 40 == 0 or want != header:
                out.write(want + "\n")
                header = want
            if isinstance(row, Beat):
                out.write(format_beat(row) + "\n")
            else:
                seen = [alarms.update(s.entity_id, s.ts, s.anomaly) for s in row]
                # an alarm that ended inside the chunk is shown, then the chunk's last status
                shown = [st for st in seen[:-1] if st.endswith("ended")] + [seen[-1]]
                status = "; ".join(st for st in shown if st)
                out.write(format_row(row) + (f"  {status}" if status else "") + "\n")
            out.flush()
            printed += 1

        topic = _topic(settings, args.anomalies_only, args.beats)
        print(f"following {topic} on {settings.kafka_bootstrap} (Ctrl-C to stop)",
              file=sys.stderr)
    asyncio.run(follow(settings, emit, anomalies_only=args.anomalies_only,
                       entities=args.entity, per_sample=args.per_sample or args.json,
                       from_beginning=args.from_beginning, values=not args.no_values,
                       count=args.count, timeout_s=args.timeout, beats=args.beats))
    return 0
