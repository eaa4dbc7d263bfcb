"""The recording hooks of stream.metrics: what one engine outcome, one delivered batch, a
batch stage, a rewind, a lost state, an assignment and a lag reading add to the worker's series;
and the stages the pipeline and the fast path record for a batch."""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from faust.types import TP

from stream.artifact import Artifact
from stream.engine import Engine, RawMessage
from stream.fastpath import BatchSource, RecordBatch, run_batches
from stream.metrics import STAGES, CollectorRegistry, Metrics
from stream.model import Forecaster
from stream.pipeline import Pipeline, Topics
from stream.state import MemoryStateStore


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), active_max=2)


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels or None)


def _engine() -> Engine:
    torch.manual_seed(0)
    card = {"score": {"kind": "rms_z", "residual_scale": [1.0]}, "threshold": {"value": 0.0}}
    art = Artifact(Forecaster("gru", 1, 4).eval(), card, "m" * 64, np.zeros(1, np.float32),
                   np.ones(1, np.float32))
    return Engine(art, warmup_steps=0, max_gap_s=0)


def _messages() -> list[RawMessage]:
    """Four samples of three entities, and one event that is not an object (a dead letter)."""
    msgs = [RawMessage(f'{{"entity_id":"{e}","ts":{t},"values":[{t}]}}'.encode(), e.encode(),
                       "ev", 0, i) for i, (e, t) in enumerate([("a", 1), ("a", 2), ("b", 1),
                                                                ("c", 1)])]
    return [*msgs, RawMessage(b"[1]", None, "ev", 0, 9)]


def test_on_batch_counts_what_the_engine_made_of_a_batch(metrics: Metrics) -> None:
    engine = _engine()
    msgs = _messages()
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


def test_on_stage_observes_the_named_stage_only(metrics: Metrics) -> None:
    metrics.on_stage("state_save", 0.003)
    assert value(metrics, "seqstream_stage_seconds_count", stage="state_save") == 1
    assert value(metrics, "seqstream_stage_seconds_bucket", stage="state_save", le="0.0025") == 0
    assert value(metrics, "seqstream_stage_seconds_bucket", stage="state_save", le="0.005") == 1
    assert value(metrics, "seqstream_stage_seconds_count", stage="model") == 0
    with pytest.raises(KeyError):  # the label set is fixed: no stage named at run time
        metrics.on_stage("entity-42", 0.001)


def test_the_pipeline_records_each_stage_of_a_batch_once(metrics: Metrics) -> None:
    sent: list = []

    async def send(records: list) -> None:
        sent.extend(records)

    pipeline = Pipeline(_engine(), MemoryStateStore(), send, Topics("p", "a", "d", "b"), metrics)
    asyncio.run(pipeline.process(_messages()))
    assert sent
    for stage in set(STAGES) - {"queue_wait"}:  # the queue is the fast path's, before the batch
        assert value(metrics, "seqstream_stage_seconds_count", stage=stage) == 1, stage
    assert value(metrics, "seqstream_stage_seconds_count", stage="queue_wait") == 0
    stages = sum(value(metrics, "seqstream_stage_seconds_sum", stage=s) for s in STAGES)
    # the stages are consecutive pieces of the batch's time, none counted twice
    assert 0 < stages <= value(metrics, "seqstream_batch_seconds_sum")


def test_run_batches_reports_each_batchs_wait_in_the_queue() -> None:
    """A batch queued while the one before is being handled waits at least that long."""
    consumer = SimpleNamespace(_committed_offset=defaultdict(lambda: None),
                               _acked=defaultdict(list), _acked_index=defaultdict(set), _n_acked=0,
                               _unacked_messages=weakref.WeakSet(), _waiting_for_ack=None,
                               flow_active=True)
    source = BatchSource(SimpleNamespace(consumer=consumer, consumer_generation_id=0), "events",
                         depth=2)
    waits: list[float] = []
    busy_s = 0.05

    class Stop(Exception):
        pass

    class Handle:  # computed at once, delivered in busy_s; one batch in flight at a time
        async def compute(self, records: list) -> list:
            if len(waits) == 2:
                raise Stop
            return records

        async def deliver(self, work: list) -> None:
            await asyncio.sleep(busy_s)

        def abandon(self, work: list) -> None:
            pass

        def backlogged(self) -> bool:
            return False

    async def go() -> None:
        for p in (0, 1):
            source.queue.put_nowait(RecordBatch([object()], {TP("events", p): [0]}, 0))
        with pytest.raises(Stop):
            await run_batches(source, Handle(), waited=waits.append, inflight=1)

    asyncio.run(go())
    first, second = waits
    assert first >= 0 and second >= busy_s - 0.005  # asyncio may wake a clock tick early
