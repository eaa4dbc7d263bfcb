"""The live path: stream the test series through a real worker and collect its predictions.

Each test series becomes one entity (``eval-<run>-<name>``, so it starts with a fresh state, as
a new patient would) and is published with :func:`seqstream.publish.publish` in chunks of
``samples_per_event`` consecutive samples, stamped with recording time (``ts = index × period``),
so every streamed prediction maps back to its sample index. The predictions are read from the
predictions topic and laid out per sample: the forecast made after each sample, its score and
its flag. :func:`compare` then checks them against the offline replay of the same artifact.

Two ways to reach a worker:

- ``spawn`` (default): start ``seqstream worker`` for the artifact as a subprocess on private
  topics (its beat records too) and a private consumer group (``seqstream-eval-<run>``), with
  the evaluation's warm-up, and stop it at the end. Needs only the running Kafka and Redis.
- ``running``: publish to the configured events topic (``SEQSTREAM_TOPIC_EVENTS``) and read the
  configured predictions topic, where a worker the user started for *the same artifact* answers
  (checked: every prediction carries the model id).

The comparison passes when every streamed number is within ``1e-5 + 1e-5·|offline|`` of the
offline one (the worker steps float32 batches of whatever entities arrive together; offline runs
one long batch per series) and flags agree wherever the score is not within that of the threshold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqstream.workerproc import WorkerProcess, settings_env, worker_argv
from stream.errors import StackError

__all__ = ["ATOL", "RTOL", "LiveRun", "compare", "run_live"]

log = logging.getLogger(__name__)
ATOL = 1e-5
RTOL = 1e-5
REPO = Path(__file__).resolve().parents[2]


@dataclass
class LiveRun:
    """Per test series, per sample: what the worker published."""

    entities: list[str]
    forecasts: list[np.ndarray]  # [T, H, F] made after sample t (NaN where none arrived)
    scores: list[np.ndarray]  # [T] (NaN for null or missing)
    flags: list[np.ndarray]  # [T] bool
    received: list[np.ndarray]  # [T] bool: a prediction for this sample arrived
    model_ids: set[str]
    events: int
    records: int
    publish_s: float
    total_s: float
    mode: str
    topics: dict[str, str]
    # per series, the beat records read back (artifacts with a beat model)
    beats: list[list[dict]] = dataclasses.field(default_factory=list)


def _worker_env(settings, topics: dict[str, str], app_id: str, warmup: int,
                home: Path) -> dict[str, str]:
    """The user's environment (connection and security settings included) with the run's
    private topics, group and warm-up; the addresses as this evaluation resolved them."""
    env = dict(os.environ)
    env.update(settings_env(
        kafka_bootstrap=settings.kafka_bootstrap, redis_url=settings.redis_url,
        **{f"topic_{k}": v for k, v in topics.items()}, app_id=app_id, warmup_steps=warmup,
        metrics_port=0, state_ttl_s=3600, max_gap_s=0, home=home))
    env.pop("SEQSTREAM_MODEL", None)
    return env


async def _partitions(settings, topic: str) -> list:
    """The topic's partitions, from the broker (the admin API; a consumer's cached metadata
    may not know a topic created a moment ago)."""
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    from stream.security import kafka_kwargs

    admin = AIOKafkaAdminClient(**kafka_kwargs(settings), request_timeout_ms=15_000)
    try:
        await admin.start()
        [meta] = await admin.describe_topics([topic])
    except KafkaError as ex:
        raise StackError(f"evaluate: cannot describe topic {topic!r} at "
                         f"{settings.kafka_bootstrap} ({type(ex).__name__}: {ex})") from ex
    finally:
        await admin.close()
    parts = sorted(p["partition"] for p in meta.get("partitions", []))
    if not parts:
        raise StackError(f"evaluate: expected the topic {topic!r} on the broker, it is not there")
    return [TopicPartition(topic, p) for p in parts]


async def _end_offsets(settings, topic: str) -> dict:
    from aiokafka import AIOKafkaConsumer

    from stream.security import kafka_kwargs

    consumer = AIOKafkaConsumer(**kafka_kwargs(settings), group_id=None)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(await _partitions(settings, topic)))
    finally:
        await consumer.stop()


@dataclass
class _Layout:
    """Preallocated per-sample arrays of one entity."""

    forecasts: np.ndarray
    scores: np.ndarray
    flags: np.ndarray
    received: np.ndarray

    @classmethod
    def empty(cls, n: int, horizon: int, n_features: int) -> _Layout:
        return cls(np.full((n, horizon, n_features), np.nan), np.full(n, np.nan),
                   np.zeros(n, dtype=bool), np.zeros(n, dtype=bool))


async def _reader(settings, topic: str, start: dict, **options: Any) -> tuple[Any, list]:
    """A started consumer without a group on every partition of ``topic``, each at its offset
    in ``start`` (from the beginning where none is given), and those partitions."""
    from aiokafka import AIOKafkaConsumer

    from stream.security import kafka_kwargs

    consumer = AIOKafkaConsumer(**kafka_kwargs(settings), group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest", **options)
    await consumer.start()
    try:
        tps = await _partitions(settings, topic)
        consumer.assign(tps)
        for tp in tps:
            if tp in start:
                consumer.seek(tp, start[tp])
            else:
                await consumer.seek_to_beginning(tp)
    except BaseException:
        await consumer.stop()
        raise
    return consumer, tps


async def _collect(settings, topic: str, start: dict, layouts: dict[str, _Layout],
                   period_s: float, timeout: float) -> tuple[set[str], int]:
    """Read predictions of the wanted entities into ``layouts`` until every sample has one
    (or ``timeout`` passes); returns the model ids seen and the records read."""
    consumer, _ = await _reader(settings, topic, start, max_partition_fetch_bytes=16 << 20)
    model_ids: set[str] = set()
    records = 0
    try:
        deadline = time.monotonic() + timeout
        remaining = sum(len(lay.scores) for lay in layouts.values())
        while remaining > 0 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
            for messages in batch.values():
                for m in messages:
                    rec = json.loads(m.value)
                    lay = layouts.get(rec.get("entity_id"))
                    if lay is None:
                        continue
                    records += 1
                    model_ids.add(rec["model_id"])
                    first = round(rec["ts"] / period_s)
                    if "period" in rec:
                        fc = np.asarray(rec["forecast"], dtype=np.float64)
                        sc = [np.nan if v is None else v for v in rec["score"]]
                        fl = rec["anomaly"]
                    else:
                        fc = np.asarray(rec["forecast"], dtype=np.float64)[None]
                        sc = [np.nan if rec["score"] is None else rec["score"]]
                        fl = [rec["anomaly"]]
                    lo, n = first, len(sc)
                    if lo < 0 or lo + n > len(lay.scores):
                        raise StackError(f"evaluate: a prediction for {rec['entity_id']} at ts "
                                         f"{rec['ts']} lies outside the {len(lay.scores)} "
                                         "samples published for it")
                    remaining -= int(n - lay.received[lo:lo + n].sum())
                    lay.forecasts[lo:lo + n] = fc
                    lay.scores[lo:lo + n] = sc
                    lay.flags[lo:lo + n] = fl
                    lay.received[lo:lo + n] = True
    finally:
        await consumer.stop()
    return model_ids, records


async def _collect_beats(settings, topic: str, start: dict, wanted: set[str]
                         ) -> dict[str, list[dict]]:
    """The beat records of the wanted entities, read once every prediction is in: the worker
    sends a batch's beats with its predictions, so they are on the topic by then or a moment
    later; read to the end offsets until a second look finds nothing new."""
    out: dict[str, list[dict]] = {}
    consumer, tps = await _reader(settings, topic, start)
    try:
        async def behind(end: dict) -> bool:
            return any([await consumer.position(tp) < end[tp] for tp in tps])

        while True:
            end = await consumer.end_offsets(tps)
            while await behind(end):
                batch = await consumer.getmany(timeout_ms=500, max_records=20_000)
                for messages in batch.values():
                    for m in messages:
                        rec = json.loads(m.value)
                        if rec.get("entity_id") in wanted:
                            out.setdefault(rec["entity_id"], []).append(rec)
            await asyncio.sleep(1.0)
            if await consumer.end_offsets(tps) == end:
                return out
    finally:
        await consumer.stop()


def run_live(settings, artifact_dir: Path, names: Sequence[str], series: Sequence[np.ndarray],
             period_s: float, horizon: int, warmup: int, samples_per_event: int, mode: str,
             work: Path, timeout: float = 1800.0, with_beats: bool = False) -> LiveRun:
    """Publish ``series`` as fresh entities, let a worker answer, lay its predictions (and
    with ``with_beats``, its beat records) out."""
    from seqstream.publish import Options, publish
    from seqstream.replay import fan_out

    run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
    prefix = f"eval-{run_id}-"
    if mode == "spawn":
        base = f"seqstream-eval-{run_id}"
        topics = {k: f"{base}.{k}" for k in ("events", "predictions", "anomalies",
                                               "deadletter", "beats")}
    elif mode == "running":
        topics = {"events": settings.topic_events, "predictions": settings.topic_predictions,
                  "anomalies": settings.topic_anomalies, "deadletter": settings.topic_deadletter,
                  "beats": settings.topic_beats}
    else:
        raise ValueError(f"live mode: expected spawn or running, got {mode!r}")
    pub_settings = dataclasses.replace(settings, topic_events=topics["events"])
    lanes = fan_out([(n, np.asarray(v, dtype=np.float64), period_s)
                     for n, v in zip(names, series, strict=True)], None, prefix)
    entities = [lane.entity_id for lane in lanes]
    layouts = {e: _Layout.empty(len(v), horizon, np.asarray(v).shape[1])
               for e, v in zip(entities, series, strict=True)}
    worker = None
    started = time.monotonic()
    try:
        if mode == "spawn":
            work.mkdir(parents=True, exist_ok=True)
            from stream.kafka_access import ensure_topics

            asyncio.run(ensure_topics(settings, topics.values()))
            worker = WorkerProcess(worker_argv(artifact_dir),
                                   _worker_env(settings, topics, f"seqstream-eval-{run_id}",
                                               warmup, work / "home"), work, cwd=REPO).start()
            worker.wait_ready(120.0)
            start: dict = {}
            beats_start: dict = {}
        else:
            start = asyncio.run(_end_offsets(settings, topics["predictions"]))
            beats_start = asyncio.run(_end_offsets(settings, topics["beats"])) if with_beats \
                else {}
        t0 = time.monotonic()
        report = asyncio.run(publish(pub_settings, lanes, Options(
            rate="max", samples_per_event=samples_per_event, ts="source", progress=False)))
        publish_s = time.monotonic() - t0
        log.info("live: %s", report.summary().splitlines()[0])
        model_ids, records = asyncio.run(_collect(
            settings, topics["predictions"], start, layouts, period_s, timeout))
        beats = asyncio.run(_collect_beats(settings, topics["beats"], beats_start,
                                           set(entities))) if with_beats else {}
    finally:
        if worker is not None:
            code = worker.stop()
            if code not in (0, None):
                log.warning("live: the worker exited with %s; log in %s", code,
                            worker.log_path)
    lay = [layouts[e] for e in entities]
    return LiveRun(entities, [x.forecasts for x in lay], [x.scores for x in lay],
                   [x.flags for x in lay], [x.received for x in lay], model_ids, report.events,
                   records, publish_s, time.monotonic() - started, mode, topics,
                   [beats.get(e, []) for e in entities])


def _close(a: np.ndarray, b: np.ndarray) -> tuple[float, float, bool]:
    """Largest |a - b|, largest |a - b| / max(|b|, 1), and whether every pair is within
    ATOL + RTOL·|b| (NaN must meet NaN)."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    if np.any(nan_a != nan_b):
        return float("inf"), float("inf"), False
    ok = ~nan_b
    if not ok.any():
        return 0.0, 0.0, True
    diff = np.abs(a[ok] - b[ok])
    rel = diff / np.maximum(np.abs(b[ok]), 1.0)
    return (float(diff.max()), float(rel.max()),
            bool(np.all(diff <= ATOL + RTOL * np.abs(b[ok]))))


def compare(live: LiveRun, offline_forecasts: Sequence[np.ndarray],
            offline_scores: Sequence[np.ndarray], threshold: float, warmup: int,
            model_id: str, residual_scale: float = 1.0) -> dict[str, Any]:
    """Streamed vs offline, per sample; the summary the report shows.

    Forecasts are compared in user units. A score is a residual divided by ``residual_scale``
    (the card's, smallest feature), so float32 rounding of a forecast, a few 1e-7 in the
    network's units, is magnified by ``1/residual_scale`` in the score; scores are therefore
    compared as residuals, ``score × residual_scale``, to the same 1e-5."""
    from seqstream.evaluation.thresholds import flags_of

    samples = sum(len(s) for s in offline_scores)
    received = int(sum(r.sum() for r in live.received))
    fc_diff, sc_diff, sc_rel, fc_ok, sc_ok, flag_diff = 0.0, 0.0, 0.0, True, True, 0
    for k in range(len(live.entities)):
        got = live.received[k]
        d, _, ok = _close(live.forecasts[k][got], np.asarray(offline_forecasts[k])[got])
        fc_diff, fc_ok = max(fc_diff, d), fc_ok and ok
        streamed, offline = live.scores[k][got], np.asarray(offline_scores[k])[got]
        sc_diff = max(sc_diff, _close(streamed, offline)[0])
        d, r, ok = _close(streamed * residual_scale, offline * residual_scale)
        sc_rel, sc_ok = max(sc_rel, r), sc_ok and ok
        want = flags_of(offline_scores[k], threshold, warmup)
        near = np.abs(np.nan_to_num(offline_scores[k], nan=-1.0) - threshold) * \
            residual_scale <= ATOL + RTOL * threshold * residual_scale
        flag_diff += int(((live.flags[k] != want) & got & ~near).sum())
    same_model = live.model_ids == {model_id}
    passed = received == samples and fc_ok and sc_ok and flag_diff == 0 and same_model
    summary = (f"{live.events:,} events ({samples:,} samples, {len(live.entities)} entities) "
               f"through `seqstream worker` ({live.mode}) in {live.total_s:.0f} s; predictions "
               f"for {received:,} of {samples:,} samples; streamed vs offline max |Δ| forecast "
               f"{fc_diff:.1e} (user units), score {sc_diff:.1e} (= residual "
               f"{sc_diff * residual_scale:.1e} in the network's units), flags differing "
               f"{flag_diff}: **{'equal to 1e-5' if passed else 'NOT equal'}** "
               f"(|Δ| ≤ 1e-5 + 1e-5·|offline| for forecasts and residuals)")
    return {"passed": passed, "samples": samples, "received": received,
            "max_abs_diff_forecast": fc_diff, "max_abs_diff_score": sc_diff,
            "max_rel_diff_residual": sc_rel, "residual_scale": residual_scale,
            "forecasts_within_tol": fc_ok, "scores_within_tol": sc_ok,
            "flags_differing": flag_diff, "model_ids": sorted(live.model_ids),
            "events": live.events, "prediction_records": live.records,
            "publish_s": round(live.publish_s, 2), "total_s": round(live.total_s, 2),
            "mode": live.mode, "topics": live.topics, "tolerance": {"atol": ATOL, "rtol": RTOL},
            "summary": summary}
