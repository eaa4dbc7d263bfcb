"""The worker's metrics carry exactly the names the dashboards use, small fixed label sets (never
an entity id), and the bulk histogram update counts the same as one observe per value."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from stream.metrics import LATENCY_BUCKETS, STAGE_BUCKETS, STAGES, Metrics, observe_many

EXPECTED = {
    "seqstream_events_total": set(), "seqstream_samples_total": set(),
    "seqstream_predictions_total": set(), "seqstream_anomalies_total": set(),
    "seqstream_beats_total": set(), "seqstream_abnormal_beats_total": {"class"},
    "seqstream_deadletters_total": {"reason"}, "seqstream_skipped_total": {"reason"},
    "seqstream_resets_total": {"reason"}, "seqstream_replayed_total": set(),
    "seqstream_state_rewinds_total": set(), "seqstream_state_lost_total": {"action"},
    "seqstream_latency_seconds": {"le"},
    "seqstream_batch_seconds": {"le"}, "seqstream_redis_load_seconds": {"le"},
    "seqstream_redis_save_seconds": {"le"}, "seqstream_model_step_seconds": {"le"},
    "seqstream_stage_seconds": {"le", "stage"},
    "seqstream_batch_size": {"le"}, "seqstream_active_entities": set(),
    "seqstream_state_cache_entities": set(), "seqstream_state_cache_hits_total": set(),
    "seqstream_state_cache_misses_total": set(), "seqstream_state_cache_evictions_total": set(),
    "seqstream_consumer_lag": {"partition"},
    "seqstream_model_info": {"model_id", "cell", "version"},
}


def test_names_and_labels_are_the_documented_ones():
    m = Metrics(CollectorRegistry())
    m.set_model("ab" * 32, "gru", "1")
    m.consumer_lag.labels(partition="0").set(3)
    seen: dict[str, set[str]] = {}
    for family in m.registry.collect():
        for sample in family.samples:
            base = sample.name
            for suffix in ("_bucket", "_count", "_sum", "_created"):
                if base.endswith(suffix) and base[: -len(suffix)] in EXPECTED:
                    base = base[: -len(suffix)]
            if base.endswith("_created"):
                continue
            seen.setdefault(base, set()).update(sample.labels)
    assert seen == EXPECTED
    text = generate_latest(m.registry).decode()
    assert "_ms{" not in text and "_ms " not in text
    # every reason is present from the start, at zero
    assert 'seqstream_deadletters_total{reason="non_finite"} 0.0' in text
    assert 'seqstream_skipped_total{reason="late"} 0.0' in text
    for stage in STAGES:  # and every stage of a batch
        assert f'seqstream_stage_seconds_count{{stage="{stage}"}} 0.0' in text
    assert STAGE_BUCKETS[0] <= 0.0001 and STAGE_BUCKETS[-1] >= 10.0  # 0.1 ms to 10 s
    assert min(LATENCY_BUCKETS) <= 0.001


def test_bulk_observation_equals_one_observe_per_value():
    values = np.random.default_rng(0).exponential(0.02, 2000)
    values[:3] = [0.001, 0.0025, 1e9]  # exactly on bucket bounds, and past the last one
    one, bulk = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=one)
    h2 = Histogram("h_seconds", "h", buckets=LATENCY_BUCKETS, registry=bulk)
    for v in values:
        h1.observe(float(v))
    observe_many(h2, values)
    a = {(s.name, tuple(s.labels.items())): s.value for f in one.collect() for s in f.samples
         if not s.name.endswith("_created")}
    b = {(s.name, tuple(s.labels.items())): s.value for f in bulk.collect() for s in f.samples
         if not s.name.endswith("_created")}
    assert a.keys() == b.keys()
    for k in a:
        assert np.isclose(a[k], b[k], rtol=1e-12), k
