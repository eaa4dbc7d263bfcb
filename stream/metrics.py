"""Every Prometheus metric of the worker, declared once against an injectable registry, and
recorded here only: the engine stays a pure batch function, and the pipeline and the worker call
one hook per thing that happened (the shape of faust's ``sensors/prometheus.py``):
:meth:`Metrics.on_batch` (an engine outcome), :meth:`Metrics.on_delivered` (a batch acked and
saved), :meth:`Metrics.on_stage` (one stage of a batch done), :meth:`Metrics.on_rewind`,
:meth:`Metrics.on_state_lost`, :meth:`Metrics.on_assigned`, :meth:`Metrics.on_lag`,
:meth:`Metrics.on_state_cache` and :meth:`Metrics.set_model`.

Names follow client_python conventions (``*_seconds``, ``*_total``; counters are declared without
the suffix, which client_python appends). Labels come from small fixed sets only — a reason from
:data:`stream.records.REASONS`, ``duplicate``/``late``, :data:`RESET_REASONS`, a
partition number, the model's id, an AAMI beat class, a batch stage of :data:`STAGES` — and
never an entity id, whose cardinality is unbounded.
Every labelled child is created at start-up so dashboards see zeros instead of missing series.

Latency buckets are millisecond-scale: an event should become a prediction within tens of
milliseconds, a batch or a Redis round trip within a few.

>>> m = Metrics(CollectorRegistry())
>>> m.deadletters.labels(reason="bad_ts").inc()
>>> m.registry.get_sample_value("seqstream_deadletters_total", {"reason": "bad_ts"})
1.0
>>> observe_many(m.latency, np.array([0.003, 0.004, 2.0]))
>>> m.registry.get_sample_value("seqstream_latency_seconds_bucket", {"le": "0.005"})
2.0
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.records import REASONS

if TYPE_CHECKING:
    from stream.engine import Batch, Outcome

__all__ = [
    "ACTIVE_MAX",
    "ACTIVE_WINDOW_S",
    "BATCH_SIZE_BUCKETS",
    "BEAT_CLASSES",
    "LATENCY_BUCKETS",
    "RESET_REASONS",
    "SKIP_REASONS",
    "STAGES",
    "STAGE_BUCKETS",
    "STEP_BUCKETS",
    "CollectorRegistry",
    "Metrics",
    "observe_many",
]

ACTIVE_WINDOW_S = 300.0
# The active-entities gauge remembers at most this many entities (least recently applied ones are
# forgotten first), so a flood of new entity ids cannot grow the worker's memory without bound.
ACTIVE_MAX = 100_000
SKIP_REASONS = ("duplicate", "late")
BEAT_CLASSES = ("N", "S", "V", "F")  # AAMI classes the beat network tells apart
RESET_REASONS = ("gap", "corrupt", "version", "future_watermark", "state_lost")
STATE_LOSS_ACTIONS = ("rebuild", "reset")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0)
# A batch's stages, in order: waiting in the fast path's queue (fetched → taken by the pipeline),
# parsing and validation, the states (from the worker's memory, the rest from Redis), the engine's
# apply (states decoded, the network call, scores and records encoded), the produce until Kafka
# acked every record, the Redis save. Their sum, less the queue wait, is about
# seqstream_batch_seconds, which also holds, when batches overlap (SEQSTREAM_INFLIGHT > 1), a
# computed batch's wait for the delivery of the one before; which one grows says where a latency
# comes from.
STAGES = ("queue_wait", "prepare", "state_load", "model", "produce_ack", "state_save")
STAGE_BUCKETS = (*STEP_BUCKETS, 10.0)  # 0.1 ms to 10 s: a quick Redis round trip to a stall
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """The worker's metrics; one instance per registry (tests pass a fresh registry each)."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 active_max: int = ACTIVE_MAX) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.active_max = active_max
        self._seen: OrderedDict[str, float] = OrderedDict()  # least recently applied first
        self._pruned = time.monotonic()
        self.events = Counter("seqstream_events", "Kafka messages consumed from the events topic",
                              registry=r)
        self.samples = Counter("seqstream_samples", "samples applied to entity states",
                               registry=r)
        self.predictions = Counter("seqstream_predictions",
                                   "prediction records produced (one per event)", registry=r)
        self.anomalies = Counter("seqstream_anomalies", "samples flagged as anomalous",
                                 registry=r)
        self.beats = Counter("seqstream_beats", "heartbeats detected and decided (ECG models "
                             "with a beat stage; one record each on the beats topic)", registry=r)
        self.abnormal_beats = Counter("seqstream_abnormal_beats",
                                      "beats flagged abnormal (p_abnormal at or over the beat "
                                      "threshold), by the AAMI class the beat network gave",
                                      ["class"], registry=r)
        self.deadletters = Counter("seqstream_deadletters", "events refused, by reason",
                                   ["reason"], registry=r)
        self.skipped = Counter("seqstream_skipped",
                               "samples at or before the entity's watermark, not applied again",
                               ["reason"], registry=r)
        self.replayed = Counter("seqstream_replayed",
                                "messages skipped whole as replays of offsets already applied "
                                "(after a restart or rebalance)", registry=r)
        self.resets = Counter("seqstream_resets", "entity states restarted from zero, by reason",
                              ["reason"], registry=r)
        self.state_rewinds = Counter("seqstream_state_rewinds",
                                     "partitions sought back to their Redis checkpoint after a "
                                     "refused save (Redis lost writes, or a zombie worker)",
                                     registry=r)
        self.state_lost = Counter("seqstream_state_lost",
                                  "partitions with a committed Kafka offset but no Redis "
                                  "checkpoint, by the SEQSTREAM_STATE_LOSS action taken",
                                  ["action"], registry=r)
        self.latency = Histogram("seqstream_latency_seconds",
                                 "event ts (last sample of a chunk) to its prediction acknowledged"
                                 " by Kafka", buckets=LATENCY_BUCKETS, registry=r)
        self.batch = Histogram("seqstream_batch_seconds",
                               "one micro-batch: validate, load, step, produce, save",
                               buckets=STEP_BUCKETS, registry=r)
        self.redis_load = Histogram("seqstream_redis_load_seconds",
                                    "batched state load (one round trip)", buckets=STEP_BUCKETS,
                                    registry=r)
        self.redis_save = Histogram("seqstream_redis_save_seconds",
                                    "batched state save (one round trip)", buckets=STEP_BUCKETS,
                                    registry=r)
        self.model_step = Histogram("seqstream_model_step_seconds",
                                    "the one no-grad network call of a batch",
                                    buckets=STEP_BUCKETS, registry=r)
        self.stage = Histogram("seqstream_stage_seconds",
                               "one batch's time in each stage: " + ", ".join(STAGES),
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self._stages = {s: self.stage.labels(stage=s) for s in STAGES}
        self.batch_size = Histogram("seqstream_batch_size", "events per micro-batch",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.active_entities = Gauge("seqstream_active_entities",
                                     "entities this worker applied a sample to in the last "
                                     "5 minutes", registry=r)
        self.consumer_lag = Gauge("seqstream_consumer_lag",
                                  "messages behind the end of the events topic, by partition",
                                  ["partition"], registry=r)
        self.state_cache_entities = Gauge(
            "seqstream_state_cache_entities", "entity states held in the worker's memory "
            "(SEQSTREAM_STATE_CACHE bounds them; pinned ones, whose save is in flight, may go "
            "over by one batch)", registry=r)
        self.state_cache_hits = Counter("seqstream_state_cache_hits",
                                        "entity states taken from the worker's memory, not Redis",
                                        registry=r)
        self.state_cache_misses = Counter("seqstream_state_cache_misses",
                                          "entity states not in the worker's memory, loaded from "
                                          "Redis", registry=r)
        self.state_cache_evictions = Counter("seqstream_state_cache_evictions",
                                             "saved entity states dropped from the worker's "
                                             "memory to stay within SEQSTREAM_STATE_CACHE",
                                             registry=r)
        self.model_info = Gauge("seqstream_model_info", "the served model (value is always 1)",
                                ["model_id", "cell", "version"], registry=r)
        for reason in REASONS:
            self.deadletters.labels(reason=reason)
        for reason in SKIP_REASONS:
            self.skipped.labels(reason=reason)
        for reason in RESET_REASONS:
            self.resets.labels(reason=reason)
        for action in STATE_LOSS_ACTIONS:
            self.state_lost.labels(action=action)
        for cls in BEAT_CLASSES:
            self.abnormal_beats.labels(cls)

    def set_model(self, model_id: str, cell: str, version: str) -> None:
        """Publish which model this worker serves."""
        self.model_info.clear()
        self.model_info.labels(model_id=model_id, cell=cell, version=version).set(1)

    def on_batch(self, batch: Batch, out: Outcome) -> None:
        """What the engine made of one batch: events, samples, records, refusals, skips,
        resets, the network call's time, and the entities applied to."""
        self.events.inc(batch.messages)
        self.samples.inc(out.samples)
        self.predictions.inc(len(out.predictions))
        self.anomalies.inc(len(out.anomalies) - sum(out.abnormal_beats.values()))
        if out.beats:
            self.beats.inc(len(out.beats))
            for cls, n in out.abnormal_beats.items():
                self.abnormal_beats.labels(cls).inc(n)
        for record in batch.deadletter_records:
            self.deadletters.labels(reason=record["reason"]).inc()
        if out.late:
            self.deadletters.labels(reason="late").inc(out.late)
        if out.replayed:
            self.replayed.inc(out.replayed)
        for reason, n in out.skipped.items():
            if n:
                self.skipped.labels(reason=reason).inc(n)
        for reason, n in out.resets.items():
            if n:
                self.resets.labels(reason=reason).inc(n)
        if out.step_seconds:
            self.model_step.observe(out.step_seconds)
        self._track(out.states)
        self.active_entities.set(len(self._seen))

    def on_delivered(self, messages: int, seconds: float, acked_at: float,
                     event_ts: Sequence[float], load_s: float | None,
                     save_s: float | None) -> None:
        """A batch of ``messages`` acked by Kafka at ``acked_at`` and saved: its time, each
        prediction's latency (its event's ``ts`` to the ack), and the Redis round trips (None:
        none was made)."""
        if len(event_ts):
            observe_many(self.latency, acked_at - np.asarray(event_ts))
        if load_s is not None:
            self.redis_load.observe(load_s)
        if save_s is not None:
            self.redis_save.observe(save_s)
        self.batch_size.observe(messages)
        self.batch.observe(seconds)

    def on_state_cache(self, hits: int, misses: int, evictions: int, entries: int) -> None:
        """The state cache after a batch's lookup or save: states found in it or not, states
        evicted, and how many it holds now."""
        if hits:
            self.state_cache_hits.inc(hits)
        if misses:
            self.state_cache_misses.inc(misses)
        if evictions:
            self.state_cache_evictions.inc(evictions)
        self.state_cache_entities.set(entries)

    def on_stage(self, stage: str, seconds: float) -> None:
        """One batch spent ``seconds`` in ``stage``, one of :data:`STAGES` (any other name is a
        KeyError: the label set stays fixed)."""
        self._stages[stage].observe(seconds)

    def on_rewind(self, partitions: int) -> None:
        """Partitions sought back to their Redis checkpoint after a refused load or save."""
        self.state_rewinds.inc(partitions)

    def on_state_lost(self, action: str) -> None:
        """A partition with a committed offset but no checkpoint, handled by ``action``."""
        self.state_lost.labels(action=action).inc()
        if action == "reset":
            self.resets.labels(reason="state_lost").inc()

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """A new assignment: the lag gauge's series become exactly these partitions, at 0."""
        self.consumer_lag.clear()
        for p in partitions:
            self.consumer_lag.labels(partition=str(p)).set(0)

    def on_lag(self, partition: int, behind: int) -> None:
        """Messages of ``partition`` behind the end of the events topic after a batch."""
        self.consumer_lag.labels(partition=str(partition)).set(max(0, behind))

    def _track(self, applied: Iterable[str]) -> None:
        """Remember when each entity was last applied, least recent first; forget those idle
        over :data:`ACTIVE_WINDOW_S` and, past ``active_max``, the least recent ones."""
        now = time.monotonic()
        seen = self._seen
        for entity in applied:
            seen[entity] = now
            seen.move_to_end(entity)
        while len(seen) > self.active_max:
            seen.popitem(last=False)
        if now - self._pruned > 10.0:
            cutoff = now - ACTIVE_WINDOW_S
            while seen and next(iter(seen.values())) < cutoff:
                seen.popitem(last=False)
            self._pruned = now


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe`` for every value, with one numpy bucketing instead of a Python call
    per value (a batch may carry thousands of latencies)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:  # another client_python layout
        for v in values.tolist():
            histogram.observe(v)
        return
    counts = np.bincount(np.searchsorted(np.asarray(bounds), values, side="left"),
                         minlength=len(bounds))
    for i in np.flatnonzero(counts[:len(bounds)]).tolist():
        buckets[i].inc(int(counts[i]))
    total.inc(float(values.sum()))
