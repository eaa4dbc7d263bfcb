"""Redis goes away mid-stream (a PRIVATE redis-server this test starts on a free port, with AOF
fsync always) and comes back: the worker waits and retries without committing offsets, then
resumes with nothing lost and nothing applied twice."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from streamkit import (
    EventSet,
    WorkerProcess,
    assert_predictions_match,
    assert_states_equal,
    consume,
    create_topics,
    free_port,
    make_artifact,
    produce,
    redis_states,
    reference_run,
    topic_names,
)

from seqstream.stack import RedisServer
from stream.artifact import load_artifact
from stream.state import StateCodec


async def committed(bootstrap: str, group: str) -> dict[int, int]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items()}


@pytest.mark.integration
@pytest.mark.slow
def test_the_worker_waits_out_a_redis_outage_without_committing(tmp_path, bundled_data, settings,
                                                                unique):
    server = RedisServer(tmp_path / "redis", free_port(), appendfsync="always")
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    events = EventSet(bundled_data, entities=40, per_entity=150, t0=time.time(), chunk_every=6)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:10]))
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=url, partitions=2, batch_max=100)
    records = events.interleaved(seed=11)
    slices = np.array_split(np.arange(len(records)), 10)
    sources: list[tuple[int, int]] = []

    def send(i: int) -> None:
        sources.extend(asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                           [records[j] for j in slices[i]])))

    try:
        worker.start().wait_ready()
        for i in range(3):
            send(i)
            time.sleep(0.3)
        server.stop()  # SIGTERM: Redis writes its AOF and exits
        down_at = time.monotonic()
        for i in range(3, 6):
            send(i)
        time.sleep(max(0.0, down_at + 3.5 - time.monotonic()))  # > one commit interval
        before = asyncio.run(committed(settings.kafka_bootstrap, unique))
        time.sleep(6.0)
        during = asyncio.run(committed(settings.kafka_bootstrap, unique))
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
        server.start()
        for i in range(6, 10):
            send(i)
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=120))[names["predictions"]]
        # offsets are committed on the consumer's commit timer, a few seconds after the acks
        deadline = time.monotonic() + 30
        after = asyncio.run(committed(settings.kafka_bootstrap, unique))
        while sum(after.values()) <= sum(during.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
            after = asyncio.run(committed(settings.kafka_bootstrap, unique))
        states = redis_states(url, unique, load_artifact(art).model_id, sorted(events.values))
    finally:
        code = worker.stop()
        server.stop()
    log = worker.log()
    assert code == 0, log[-3000:]
    # nothing was committed while Redis was down, and everything after it came back
    assert before == during, (before, during)
    assert sum(after.values()) > sum(during.values())
    assert "Redis load failed" in log or "Redis save failed" in log, log[-3000:]
    assert "succeeded after" in log
    want_predictions, want_states = reference_run(art, records, sources, names["events"])
    repeats = assert_predictions_match(got, want_predictions, threshold=3.0)
    artifact = load_artifact(art)
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, states, want_states)
    print(f"committed during the outage {during}, after {after}; {repeats} repeats")
