"""A zombie worker, one still processing a partition after a rebalance gave it away, is fenced by
the checkpoint compare-and-set.

Two :class:`~stream.pipeline.Pipeline` s on the same partition, the real engine and a real Redis
(the shared one, and a private 3-master cluster; a store each, as two processes have): A consumes
the first batch, then the partition is assigned to B, which is positioned by the worker's own
assignment code (:func:`stream.worker.position`: the checkpoint read from Redis). A does not know
yet and goes on:

- a batch A loaded before B's saves is computed and produced (at least once, as after a crash),
  but its save, which would move the checkpoint back, is refused: nothing of it is written;
- a batch A starts after B's save is refused at the load, before anything is computed or sent.

Each refusal is logged and counted, and the states and checkpoint left in Redis are exactly those
of the uninterrupted run (A's first batch, then B's).
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import orjson
import pytest
import redis
import redis.asyncio as aioredis
from faust.types import TP
from streamkit import (
    EventSet,
    assert_predictions_match,
    assert_states_equal,
    make_artifact,
    redis_states,
    reference_run,
    topic_names,
)

from stream.artifact import load_artifact
from stream.engine import Engine, RawMessage
from stream.metrics import Metrics
from stream.pipeline import Pipeline, Topics
from stream.state import (
    UNCHECKED,
    CheckpointMoved,
    MemoryStateStore,
    RedisStateStore,
    StateCodec,
    namespace,
)
from stream.worker import position

BATCH = 100


class Sent:
    """A ``send`` that keeps what it was given; ``before_ack`` runs before it returns."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []
        self.before_ack = None

    async def __call__(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        self.records += records
        if self.before_ack is not None:
            step, self.before_ack = self.before_ack, None
            await step()


def predictions(records: list[tuple[str, bytes | None, bytes]]) -> list[dict]:
    """The prediction records among ``records`` (the topic is named ``*.predictions``)."""
    return [orjson.loads(value) for topic, _, value in records
            if topic.endswith(".predictions")]



def connect(url: str) -> aioredis.Redis | aioredis.RedisCluster:
    if "+cluster://" in url:
        return aioredis.RedisCluster.from_url(url.replace("+cluster://", "://", 1))
    return aioredis.Redis.from_url(url)


@pytest.mark.integration
def test_a_zombie_worker_is_refused_by_the_checkpoint_compare_and_set(
        tmp_path, bundled_data, unique, caplog, redis_url):
    events = EventSet(bundled_data, entities=8, per_entity=50, t0=1.7e9, chunk_every=5)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:4]))
    artifact = load_artifact(art)
    names = topic_names(unique)
    topics = Topics(names["predictions"], names["anomalies"], names["deadletter"],
                    names["beats"])
    records = events.interleaved(seed=2)
    assert len(records) == 4 * BATCH
    sources = [(0, o) for o in range(len(records))]
    messages = [RawMessage(v, k, names["events"], 0, o)
                for (k, v), (_, o) in zip(records, sources, strict=True)]
    batches = [messages[lo:lo + BATCH] for lo in range(0, len(messages), BATCH)]
    prefix = namespace(unique, artifact.model_id)
    tp = TP(names["events"], 0)

    def pipeline(sent: Sent) -> Pipeline:
        engine = Engine(artifact, warmup_steps=0, max_gap_s=60.0)
        store = RedisStateStore(connect(redis_url), prefix, 3600)
        return Pipeline(engine, store, sent, topics, Metrics())

    async def go() -> tuple[Pipeline, Pipeline, Sent, Sent, list[CheckpointMoved], int]:
        sent_a, sent_b = Sent(), Sent()
        a, b = pipeline(sent_a), pipeline(sent_b)
        refusals: list[CheckpointMoved] = []
        try:
            await position(a, "rebuild", {tp: None}, set())  # a new group: no checkpoint yet
            await a.process(batches[0])
            # the rebalance: B gets the partition at the checkpoint A wrote; A is not told
            starts = await position(b, "rebuild", {tp: BATCH}, set())
            assert starts == {tp: BATCH}

            async def b_runs_on() -> None:
                await b.process(batches[1])
                await b.process(batches[2])

            sent_a.before_ack = b_runs_on  # A's batch 1 is loaded and computed before B saves
            with pytest.raises(CheckpointMoved) as refused:
                await a.process(batches[1])
            refusals.append(refused.value)
            assert await b.store.checkpoints([0]) == {0: 3 * BATCH}  # not moved back to 200
            await b.process(batches[3])
            produced = len(sent_a.records)
            with pytest.raises(CheckpointMoved) as refused:
                await a.process(batches[3])  # loaded after B's save: refused at the load
            refusals.append(refused.value)
            assert len(sent_a.records) == produced  # nothing computed, nothing sent
            stored = (await b.store.checkpoints([0]))[0]
            assert stored is not None
            return a, b, sent_a, sent_b, refusals, stored
        finally:
            await a.store.close()
            await b.store.close()

    try:
        with caplog.at_level(logging.WARNING, logger="stream.pipeline"):
            a, b, sent_a, sent_b, refusals, stored = asyncio.run(go())
        left = redis_states(redis_url, unique, artifact.model_id, sorted(events.values))
    finally:
        if "+cluster://" not in redis_url:  # the private cluster goes with its servers
            sync = redis.Redis.from_url(redis_url)
            for key in sync.scan_iter(match="{" + prefix + ":*"):
                sync.delete(key)
            sync.close()

    assert stored == 4 * BATCH
    assert [(r.stored, r.expected, r.saved) for r in refusals] == [
        ({0: 3 * BATCH}, {0: BATCH}, frozenset()), ({0: 4 * BATCH}, {0: 3 * BATCH}, frozenset())]
    assert a.metrics.registry.get_sample_value("seqstream_state_rewinds_total") == 2
    assert b.metrics.registry.get_sample_value("seqstream_state_rewinds_total") == 0
    said = [r.getMessage() for r in caplog.records if "partition sought back" in r.getMessage()]
    assert len(said) == 2 and said[0].startswith(f"partition 0: stored checkpoint {3 * BATCH}, "
                                                 f"this worker last wrote {BATCH}"), said
    # every record A and B produced (A's of batch 1 despite the refusal) equals the offline run's,
    # and every event has one
    want_predictions, want_states = reference_run(art, records, sources, names["events"])
    repeats = assert_predictions_match(
        [*predictions(sent_a.records), *predictions(sent_b.records)], want_predictions,
        threshold=3.0)
    assert repeats == BATCH  # batch 1, by A and by B
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, left, want_states)


def test_a_checkpoint_behind_the_last_write_found_at_a_seek_is_a_counted_rewind(tmp_path, caplog):
    """A seek after one partition's refusal re-reads every partition's checkpoint: another one
    the same Redis loss rolled back is sought back there and logged and counted as a rewind; one
    where the checkpoint is the last write (or ahead: another worker went on) is not."""
    art = make_artifact(tmp_path / "art", hidden=4)
    store = MemoryStateStore("fence")
    asyncio.run(store.save({}, None, {0: (UNCHECKED, 100), 1: (UNCHECKED, 50),
                                      2: (UNCHECKED, 70)}))
    pipeline = Pipeline(Engine(load_artifact(art)), store, Sent(), Topics("p", "a", "d", "b"),
                        Metrics())
    pipeline.positions.update({0: 300, 1: 50, 2: 40})
    tps = [TP("events", p) for p in range(3)]
    with caplog.at_level(logging.WARNING, logger="stream.worker"):
        starts = asyncio.run(position(pipeline, "rebuild", dict.fromkeys(tps, 10), set()))
    assert starts == dict(zip(tps, [100, 50, 70], strict=True))
    assert pipeline.positions == {0: 100, 1: 50, 2: 70}
    assert pipeline.metrics.registry.get_sample_value("seqstream_state_rewinds_total") == 1
    said = [r.getMessage() for r in caplog.records]
    assert said == ["partition 0 of events: stored checkpoint 100, behind the 300 this worker "
                    "last wrote (Redis lost acknowledged writes): the partition sought back "
                    "there"], said
