"""Overlapped batches keep the serial pipeline's promises (pure logic): a refused save seeks back
at once even on an idle topic, partitions without a position chain their checkpoints, and the
metrics count only what was produced."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
from streamkit import ecg, make_artifact
from test_batched_steps_match_offline import TOPICS, Sink, messages_for
from test_state_cache import CountingStore, _fake_app, _overlapped, _record_batch, _setup

from stream.artifact import load_artifact
from stream.engine import Engine
from stream.fastpath import BatchSource, run_batches
from stream.pipeline import Pipeline
from stream.state import CheckpointMoved, MemoryStateStore


class RefusingStages:
    """Stages whose first delivery is refused (Redis lost writes): a rewind must follow."""

    def __init__(self) -> None:
        self.delivered = 0

    async def compute(self, records: Sequence[Any]) -> list[Any]:
        return list(records)

    async def deliver(self, work: list[Any]) -> None:
        self.delivered += 1
        await asyncio.sleep(0.05)  # a Redis round trip: the computing side is fetching by now
        if self.delivered == 1:
            raise CheckpointMoved({0: 3}, {0: 7})

    def abandon(self, work: list[Any]) -> None:
        pass

    def backlogged(self) -> bool:
        return False


def test_a_refused_save_rewinds_even_when_no_further_batch_is_fetched(tmp_path, bundled_data):
    """With inflight >= 2 the computing side waits in the source for the next fetch while the
    delivery is refused; the rewind (the replay of the refused partition) must not wait for
    new traffic (inflight=1 rewinds at once)."""
    series = {"rec100": ecg(bundled_data, "100", 5000, 20)}
    msgs = messages_for(series, 1_700_000_000.0, 1 / 360, np.random.default_rng(1), 0.0)
    for inflight in (1, 2):
        app = _fake_app()
        source = BatchSource(app, "events", depth=4)
        rewinds = 0

        async def rewind() -> None:
            nonlocal rewinds
            rewinds += 1

        source.rewind = rewind  # type: ignore[method-assign]

        async def go(inflight: int = inflight, source: BatchSource = source) -> None:
            source.queue.put_nowait(_record_batch(source, msgs[:5]))  # then the topic is idle
            task = asyncio.ensure_future(run_batches(source, RefusingStages(),
                                                     inflight=inflight))
            await asyncio.sleep(0.5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(go())
        assert rewinds == 1, f"inflight={inflight}: {rewinds} rewinds after a refused save"


def test_partitions_without_a_position_are_never_refused_when_batches_overlap(
        tmp_path, bundled_data):
    """The pipeline's contract: partitions missing from ``positions`` (no consumer, as in the
    benchmark) write their checkpoint without comparing. Serially they then chain (batch 2
    expects batch 1's write); overlapped they must too: batch 3, computed while batch 2 is in
    flight, expects batch 2's write, not batch 1's."""
    rng = np.random.default_rng(3)
    series = {"a": ecg(bundled_data, "100", 5000, 30), "b": ecg(bundled_data, "106", 5000, 30)}
    art = load_artifact(make_artifact(tmp_path / "art", hidden=4, horizon=2,
                                      sample=np.concatenate(list(series.values()))))
    msgs = messages_for(series, 1_700_000_000.0, 1 / 360, rng, chunk_p=0.0)
    pipeline = Pipeline(Engine(art, warmup_steps=0), MemoryStateStore("unchecked"), Sink(),
                        TOPICS, state_cache=100)

    async def go() -> None:
        w1 = await pipeline.compute(msgs[0:10])
        w2 = await pipeline.compute(msgs[10:20])  # batch 1 still in flight
        await pipeline.deliver(w1)
        w3 = await pipeline.compute(msgs[20:30])  # batch 2 in flight
        await pipeline.deliver(w2)
        await pipeline.deliver(w3)  # refused: expects batch 1's checkpoint, batch 2 wrote

    asyncio.run(go())
    assert pipeline.positions == {0: 30}


def test_the_predictions_counter_counts_only_what_was_produced_after_a_refused_save(
        tmp_path, bundled_data):
    """``seqstream_predictions_total`` counts what was produced: the batches dropped unacked
    after a refused save (never produced) are not counted, their replay is."""
    artifact, msgs, _ = _setup(tmp_path, bundled_data)
    sizes = [15] * -(-len(msgs) // 15)
    store = CountingStore(lose_at=3)
    sink, pipeline, _, rewinds = _overlapped(artifact, msgs, sizes, 3, 1000, store)
    assert rewinds == 1
    produced = sum(1 for t, _, _ in sink.records if t == "p")
    assert pipeline.metrics is not None
    counted = pipeline.metrics.registry.get_sample_value("seqstream_predictions_total")
    assert counted == produced
