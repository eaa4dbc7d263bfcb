"""The Kafka broker restarts mid-stream (a PRIVATE single-node broker this test starts on free
ports, never the shared one): the worker reconnects and every event is predicted, with the same
predictions and final states as an uninterrupted run."""

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

from seqstream.stack import KafkaServer
from stream.artifact import load_artifact
from stream.state import StateCodec


@pytest.mark.integration
@pytest.mark.slow
def test_the_worker_reconnects_after_a_broker_restart_and_loses_nothing(
        tmp_path, bundled_data, settings, unique):
    broker = KafkaServer(tmp_path / "kafka", free_port(), free_port(), "384m",
                         settings.home / KafkaServer.jars_name())
    broker.start(timeout=120)
    bootstrap = broker.address
    events = EventSet(bundled_data, entities=30, per_entity=150, t0=time.time(), chunk_every=6)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:10]))
    names = topic_names(unique)
    asyncio.run(create_topics(bootstrap, names.values(), 2))
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=bootstrap,
                           redis_url=settings.redis_url, partitions=2, batch_max=50)
    records = events.interleaved(seed=13)
    slices = np.array_split(np.arange(len(records)), 6)
    sources: list[tuple[int, int]] = []

    def send(i: int) -> None:
        sources.extend(asyncio.run(produce(bootstrap, names["events"],
                                           [records[j] for j in slices[i]])))

    try:
        worker.start().wait_ready()
        for i in range(3):
            send(i)
        broker.stop()  # while the worker is still working through the last slice
        time.sleep(3.0)
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
        broker.start(timeout=120)
        for i in range(3, 6):
            send(i)
        got = asyncio.run(consume(
            bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=180))[names["predictions"]]
        code = worker.stop()
    finally:
        worker.stop()
        broker.stop()
    log = worker.log()
    assert code == 0, log[-3000:]
    # the worker did see the broker go away (aiokafka logs its failed connections)
    assert "Connect call failed" in log or "KafkaConnectionError" in log, log[-3000:]
    want_predictions, want_states = reference_run(art, records, sources, names["events"])
    repeats = assert_predictions_match(got, want_predictions, threshold=3.0)
    artifact = load_artifact(art)
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, redis_states(settings.redis_url, unique, artifact.model_id,
                                            sorted(want_states)), want_states)
    print(f"{len(records)} events, {len(got)} prediction records ({repeats} repeats)")
