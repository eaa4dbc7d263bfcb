"""Every Prometheus metric of the worker, declared once, against an injectable registry.

Names follow client_python conventions (``*_seconds``, ``*_total``; counters are declared without
the suffix, which client_python appends). Labels come from small fixed sets only — a reason from
:data:`stream.records.REASONS`, ``duplicate``/``late``, :data:`RESET_REASONS`, a
partition number, the model's id, an AAMI beat class — and never an entity id, whose cardinality
is unbounded.
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

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from stream.records import REASONS

__all__ = [
    "BATCH_SIZE_BUCKETS",
    "BEAT_CLASSES",
    "LATENCY_BUCKETS",
    "RESET_REASONS",
    "SKIP_REASONS",
    "STEP_BUCKETS",
    "CollectorRegistry",
    "Metrics",
    "observe_many",
]

SKIP_REASONS = ("duplicate", "late")
BEAT_CLASSES = ("N", "S", "V", "F")  # AAMI classes the beat network tells apart
RESET_REASONS = ("gap", "corrupt", "version", "future_watermark", "state_lost")
STATE_LOSS_ACTIONS = ("rebuild", "reset")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
STEP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0)
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


class Metrics:
    """The worker's metrics; one instance per registry (tests pass a fresh registry each)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
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
        self.batch_size = Histogram("seqstream_batch_size", "events per micro-batch",
                                    buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.active_entities = Gauge("seqstream_active_entities",
                                     "entities this worker applied a sample to in the last "
                                     "5 minutes", registry=r)
        self.consumer_lag = Gauge("seqstream_consumer_lag",
                                  "messages behind the end of the events topic, by partition",
                                  ["partition"], registry=r)
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
