"""``seqstream publish``: replay real recorded data to the events topic, keyed by entity.

Sources (``--source``, detected from ``--path`` when left at ``auto``): the bundled MIT-BIH ECG
records (the default, ``bundled:mitdb``), any WFDB directory, NAB's or SKAB's folders, or a
user's CSV/Parquet file with an entity column, a time column and feature columns (read by
:mod:`training.sources`, the same readers training uses). ``--entities N`` fans the records out
to N entities and ``--samples-per-event`` chunks them (see :mod:`seqstream.replay`).

Timestamps (``--ts``): ``now`` (default) stamps each event with the wall clock when it is sent:
a single sample gets the send time, a chunk of ``m`` samples the time that puts its *last* sample
at the send time (``ts = now - (m - 1) × period``), as a device that sends a chunk once it has
recorded it would. So the worker's end-to-end latency (last sample's ts → prediction produced)
means what it says. An entity's samples must still move forward in time, so when chunks are
replayed faster than real time its timestamps run ahead of the clock (the summary says by how
much, and latency read then is too low: use ``--rate realtime`` to measure it).
``source`` sends each sample's recording time, sample index × the recording's (median) period,
seconds from its first sample: what offline evaluation lines up with labels.

Pacing (``--rate``): ``max`` sends as fast as the producer takes them, a number paces to that
many events per second in total, ``realtime`` sends each event once its last sample's recorded
time has passed since the start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from seqstream.replay import Lane, chunks, event, fan_out
from seqstream.topics import started
from stream.errors import ConfigError, StackError
from stream.kafka_access import ensure_topics
from stream.security import kafka_kwargs
from stream.settings import Settings, add_flags

__all__ = ["Options", "Report", "configure", "load_lanes", "publish", "run"]

SOURCES = ("auto", "mitdb", "wfdb", "nab", "skab", "table")
TIME_COLUMNS = ("time", "ts", "timestamp", "datetime", "date")
LABEL_COLUMNS = ("anomaly", "changepoint", "label", "labels", "is_anomaly")
ECG_LEAD = "MLII"  # the limb lead every MIT-BIH record has; the ECG models read it


@dataclass(frozen=True)
class Options:
    """What to replay and how fast (the flags of ``seqstream publish``)."""

    rate: float | str = "max"  # events/s, "max" or "realtime"
    samples_per_event: int = 1
    count: int | None = None
    duration_s: float | None = None
    loop: bool = False
    ts: str = "now"  # "now" | "source"
    progress: bool = True


@dataclass(frozen=True)
class Report:
    """What a replay sent: printed by the command, checked by the tests."""

    events: int
    samples: int
    seconds: float
    entities: int
    topic: str
    partitions: int
    ahead_s: float  # largest lead of an event's ts over the wall clock ("now" timestamps)

    def summary(self) -> str:
        secs = max(self.seconds, 1e-9)
        line = (f"published {self.events:,} events ({self.samples:,} samples) for "
                f"{self.entities} entities to {self.topic} ({self.partitions} partitions) in "
                f"{self.seconds:.1f} s: {self.events / secs:,.0f} events/s, "
                f"{self.samples / secs:,.0f} samples/s")
        if self.ahead_s > 1.0:
            line += (f"\nnote: timestamps ran up to {self.ahead_s:,.1f} s ahead of the clock "
                     "(chunks replayed faster than real time); latency measured on them reads "
                     "low: use --rate realtime to measure latency")
        return line


def _rate(raw: str) -> float | str:
    if raw in ("max", "realtime"):
        return raw
    try:
        return _positive_float(raw)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected events/s > 0, max or realtime, got {raw!r}") from None


def _positive_int(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {raw!r}")
    return int(raw)


def _positive_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {raw!r}")
    return value


def _names(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--source", choices=SOURCES, default="auto",
                      help="reader of --path (auto: WFDB dir, NAB or SKAB folder, .csv/.parquet)")
    data.add_argument("--path", default="bundled:mitdb",
                      help="recordings: bundled:mitdb (default, MIT-BIH ECG shipped with "
                           "seqstream), a WFDB directory, NAB's or SKAB's folder, a CSV/Parquet")
    data.add_argument("--records", type=_names, default=[],
                      help="comma list of records / series / entity values to use (default all)")
    data.add_argument("--features", type=_names, default=[],
                      help="comma list of leads or columns to send (default: the --model card's"
                           f" features, else {ECG_LEAD} for ECG, else every numeric column)")
    data.add_argument("--entity-column", help="table: column naming the entity (default: "
                      "entity_id or entity if present, else one entity named after the file)")
    data.add_argument("--time-column", help=f"table: time column (default: first of "
                      f"{', '.join(TIME_COLUMNS)})")
    fan = parser.add_argument_group("replay")
    fan.add_argument("--entities", type=_positive_int,
                     help="number of entities (default: one per record); more than records "
                          "start several entities per record at spaced offsets")
    fan.add_argument("--entity-prefix", default="", help="prefix of every entity id")
    fan.add_argument("--rate", type=_rate, default="max",
                     help="events per second in total, max (default) or realtime")
    fan.add_argument("--samples-per-event", type=_positive_int, default=1,
                     help="consecutive samples per event (>1: the chunk form with period)")
    fan.add_argument("--count", type=_positive_int, help="stop after this many events")
    fan.add_argument("--duration", type=_positive_float, help="stop after this many seconds")
    fan.add_argument("--loop", action="store_true",
                     help="start each entity's record again at its end (endless without "
                          "--count/--duration)")
    fan.add_argument("--ts", choices=("now", "source"), default="now",
                     help="event time: wall clock at send (default) or recording time (sample "
                          "index x period, seconds from the recording's start)")
    fan.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_flags(parser, ["kafka_bootstrap", "topic_events", "partitions", "model"])


def _detect(path_text: str) -> str:
    from training.sources import resolve_path

    path = resolve_path(path_text)
    if path_text == "bundled:mitdb":
        return "mitdb"
    if path.is_file():
        if path.suffix.lower() not in (".csv", ".parquet", ".pq"):
            raise ConfigError(f"--path: expected a .csv or .parquet file (or a data folder), got "
                              f"{path}")
        return "table"
    if not path.is_dir():
        raise ConfigError(f"--path: expected a WFDB directory, NAB or SKAB folder, or a CSV/"
                          f"Parquet file, got {path} (not found)")
    if any(path.glob("*.hea")):
        return "wfdb"
    if (path / "labels" / "combined_windows.json").is_file():
        return "nab"
    if (path / "data").is_dir() and any((path / "data").glob("*/*.csv")):
        return "skab"
    raise ConfigError(f"--path: expected a WFDB directory (*.hea), NAB's folder "
                      f"(labels/combined_windows.json), SKAB's folder (data/*/*.csv) or a "
                      f"CSV/Parquet file, got the directory {path}")


def _card_features(model: Path | None) -> list[str]:
    if model is None:
        return []
    card = Path(model) / "card.json"
    try:
        return [f["name"] for f in json.loads(card.read_text())["features"]]
    except (OSError, ValueError, KeyError, TypeError) as ex:
        raise ConfigError(f"--model: expected an artifact directory with a card.json listing "
                          f"features, got {model} ({type(ex).__name__}: {ex})") from ex


def _table_columns(path: Path) -> list[str]:
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [c for c in pq.read_schema(path).names
                    if not c.startswith("__index_level_")]  # pandas' saved index
        columns = list(pd.read_csv(path, nrows=0).columns)
    except (ValueError, OSError) as ex:
        raise ConfigError(f"--path: expected a readable CSV or Parquet file, got {path} "
                          f"({type(ex).__name__}: {ex})") from ex
    if len(columns) == 1 and ";" in columns[0]:
        raise ConfigError(f"--path: expected a comma-separated CSV, got {path} with ';' between "
                          "columns (for SKAB, pass its folder with --source skab)")
    return columns


def load_lanes(args: argparse.Namespace, settings: Settings) -> list[Lane]:
    """Read the recordings the flags name and fan them out to the entities to publish."""
    from training.sources import load_source, resolve_path

    source = _detect(args.path) if args.source == "auto" else args.source
    features = args.features or _card_features(settings.model)
    entity_column, time_column = args.entity_column, args.time_column
    if source in ("mitdb", "wfdb") and not features:
        features = [ECG_LEAD]
    if source == "table":
        path = resolve_path(args.path)
        columns = _table_columns(path)
        entity_column = entity_column or next(
            (c for c in ("entity_id", "entity") if c in columns), None)
        time_column = time_column or next((c for c in TIME_COLUMNS if c in columns), None)
        if time_column is None:
            raise ConfigError(f"{path}: expected a time column ({', '.join(TIME_COLUMNS)} or "
                              f"--time-column), got columns {columns}")
        features = features or [c for c in columns if c not in (entity_column, time_column)
                                and c.lower() not in LABEL_COLUMNS]
    series = load_source(source, args.path, args.records, features, entity_column,
                         time_column or "time")
    return fan_out([(s.entity, s.values, s.period_s) for s in series], args.entities,
                   args.entity_prefix)


def _planned(lanes: list[Lane], options: Options) -> int | None:
    """The progress bar's total: events until the data, --count or --duration runs out."""
    m, d = options.samples_per_event, options.duration_s
    per_lane = [math.inf if options.loop else math.ceil((len(lane.values) - lane.start) / m)
                for lane in lanes]
    if d is not None and options.rate == "realtime":
        per_lane = [min(n, math.ceil(d / (m * lane.period_s))) for n, lane in
                    zip(per_lane, lanes, strict=True)]
    total = sum(per_lane)
    if d is not None and isinstance(options.rate, float):
        total = min(total, math.ceil(d * options.rate))
    if options.count is not None:
        total = min(total, options.count)
    return None if math.isinf(total) else int(total)


async def publish(settings: Settings, lanes: list[Lane], options: Options) -> Report:
    """Send the lanes' events to ``settings.topic_events``; returns what was sent."""
    topic = settings.topic_events
    partitions = (await ensure_topics(settings, [topic]))[topic]
    producer = AIOKafkaProducer(**kafka_kwargs(settings), acks="all", linger_ms=5,
                                max_batch_size=1 << 18, request_timeout_ms=30_000)
    await started(producer, settings)
    bar = None
    if options.progress:
        from tqdm import tqdm

        bar = tqdm(total=_planned(lanes, options), unit=" events", file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
    next_free = [0.0] * len(lanes)
    events = samples = 0
    ahead = 0.0
    pending: list[asyncio.Future] = []
    start = time.monotonic()
    try:
        for chunk in chunks(lanes, options.samples_per_event, options.loop):
            if options.count is not None and events >= options.count:
                break
            elapsed = time.monotonic() - start
            if options.duration_s is not None and elapsed >= options.duration_s:
                break
            lane = lanes[chunk.lane]
            n = len(chunk.values)
            span = (n - 1) * lane.period_s  # first to last sample of the chunk
            # in real time a chunk can leave once its last sample has happened
            due = (None if options.rate == "max" else chunk.due_s + span
                   if options.rate == "realtime" else events / float(options.rate))
            if due is not None and due - elapsed > 0.002:
                await asyncio.sleep(due - elapsed)
            if options.ts == "source":
                ts = chunk.index * lane.period_s
            else:
                now = time.time()
                # the last sample is "now"; an entity's samples must still move forward
                ts = max(now - span, next_free[chunk.lane])
                next_free[chunk.lane] = ts + (n * lane.period_s if n > 1 else 1e-6)
                ahead = max(ahead, ts + span - now)
            value = orjson.dumps(event(lane.entity_id, ts, chunk.values, lane.period_s))
            pending.append(await producer.send(topic, value, key=lane.entity_id.encode()))
            events += 1
            samples += n
            if len(pending) >= 2000:
                await asyncio.gather(*pending)
                pending.clear()
            if bar is not None and events % 100 == 0:
                bar.update(100)
        await asyncio.gather(*pending)
        await producer.flush()
    except KafkaError as ex:
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: sending to {topic!r} failed "
                         f"after {events} events ({type(ex).__name__}: {ex})") from ex
    finally:
        if bar is not None:
            bar.update(events - bar.n)
            bar.close()
        await producer.stop()
    return Report(events, samples, time.monotonic() - start, len(lanes), topic, partitions,
                  ahead)


def run(args: argparse.Namespace) -> int:
    settings = Settings.from_env(overrides=vars(args))
    logging.getLogger("aiokafka").setLevel(logging.WARNING)  # retries are reported as errors
    lanes = load_lanes(args, settings)
    options = Options(rate=args.rate, samples_per_event=args.samples_per_event,
                      count=args.count, duration_s=args.duration, loop=args.loop, ts=args.ts,
                      progress=not args.no_progress)
    report = asyncio.run(publish(settings, lanes, options))
    print(report.summary())
    return 0
