"""The recording hooks of stream.metrics: what one engine outcome, one delivered batch, a
rewind, a lost state, an assignment and a lag reading add to the worker's series."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stream.artifact import Artifact
from stream.engine import Engine, RawMessage
from stream.metrics import CollectorRegistry, Metrics
from stream.model import Forecaster


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), active_max=2)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


def test_on_batch_counts_what_the_engine_made_of_a_batch(metrics: Metrics) -> None:
    torch.manual_seed(0)
    card = {"score": {"kind": "rms_z", "residual_scale": [1.0]}, "threshold": {"value": 0.0}}
    art = Artifact(Forecaster("gru", 1, 4).eval(), card, "m" * 64, np.zeros(1, np.float32),
                   np.ones(1, np.float32))
    engine = Engine(art, warmup_steps=0, max_gap_s=0)
    msgs = [RawMessage(f'{{"entity_id":"{e}","ts":{t},"values":[{t}]}}'.encode(), e.encode(),
                       "ev", 0, i) for i, (e, t) in enumerate([("a", 1), ("a", 2), ("b", 1),
                                                                ("c", 1)])]
    msgs.append(RawMessage(b"[1]", None, "ev", 0, 9))
    batch = engine.prepare(msgs)
    out = engine.apply(batch, [None] * len(batch.entity_ids))
    metrics.on_batch(batch, out)
    assert value(metrics, "seqstream_events_total") == 5
    assert value(metrics, "seqstream_samples_total") == 4
    assert value(metrics, "seqstream_predictions_total") == 4
    assert value(metrics, "seqstream_anomalies_total") == len(out.anomalies) == 1  # a's 2nd
    assert value(metrics, "seqstream_deadletters_total", reason="not_object") == 1
    assert value(metrics, "seqstream_model_step_seconds_count") == 1
    assert value(metrics, "seqstream_active_entities") == 2  # capped at active_max


def test_on_delivered_observes_latencies_round_trips_and_the_batch(metrics: Metrics) -> None:
    metrics.on_delivered(3, 0.02, 100.0, [99.999, 99.99], load_s=0.001, save_s=None)
    assert value(metrics, "seqstream_latency_seconds_count") == 2
    assert value(metrics, "seqstream_latency_seconds_sum") == pytest.approx(0.011)
    assert value(metrics, "seqstream_redis_load_seconds_count") == 1
    assert value(metrics, "seqstream_redis_save_seconds_count") == 0  # no save was made
    assert value(metrics, "seqstream_batch_size_sum") == 3
    assert value(metrics, "seqstream_batch_seconds_count") == 1


def test_lost_states_rewinds_assignment_and_lag(metrics: Metrics) -> None:
    metrics.on_state_lost("rebuild")
    metrics.on_state_lost("reset")
    assert value(metrics, "seqstream_state_lost_total", action="rebuild") == 1
    assert value(metrics, "seqstream_state_lost_total", action="reset") == 1
    assert value(metrics, "seqstream_resets_total", reason="state_lost") == 1  # reset only
    metrics.on_rewind(3)
    assert value(metrics, "seqstream_state_rewinds_total") == 3
    metrics.on_assigned([0, 2])
    metrics.on_lag(2, -1)  # a highwater read before the batch's own offsets: never below 0
    assert value(metrics, "seqstream_consumer_lag", partition="2") == 0
    metrics.on_lag(0, 7)
    metrics.on_assigned([1])  # a new assignment drops the partitions given away
    assert value(metrics, "seqstream_consumer_lag", partition="0") is None
    assert value(metrics, "seqstream_consumer_lag", partition="1") == 0
