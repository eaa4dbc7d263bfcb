"""Two workers in one consumer group share the partitions; one is stopped mid-stream and the
other takes its partitions over, carrying on from the states in Redis: every event is predicted,
every prediction equals the uninterrupted run's, and the final states equal it too."""

from __future__ import annotations

import asyncio
import re
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
    make_artifact,
    produce,
    redis_states,
    reference_run,
    topic_names,
)

from stream.artifact import load_artifact
from stream.state import StateCodec

READY = re.compile(r"seqstream worker ready: .* partitions \[([0-9, ]*)\]")


def assigned(worker: WorkerProcess) -> set[int] | None:
    """The partitions of the worker's latest assignment (None before the first)."""
    found = READY.findall(worker.log())
    if not found:
        return None
    return {int(p) for p in found[-1].split(",") if p.strip()}


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.integration
@pytest.mark.slow
def test_a_worker_leaving_mid_stream_hands_over_without_loss_or_divergence(
        tmp_path, bundled_data, settings, unique):
    events = EventSet(bundled_data, entities=40, per_entity=200, t0=time.time(), chunk_every=5)
    art = make_artifact(tmp_path / "art", cell="lstm", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:10]))
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 4))
    kw = {"bootstrap": settings.kafka_bootstrap, "redis_url": settings.redis_url,
          "partitions": 4, "batch_max": 100}
    a = WorkerProcess(art, unique, tmp_path, **kw).start()
    b = WorkerProcess(art, unique, tmp_path, **kw).start()
    records = events.interleaved(seed=5)
    slices = np.array_split(np.arange(len(records)), 10)
    sources: list[tuple[int, int]] = []
    try:
        wait_until(lambda: assigned(a) is not None and assigned(b) is not None
                   and assigned(a) | assigned(b) == {0, 1, 2, 3}
                   and not assigned(a) & assigned(b), 90, "two workers sharing 4 partitions")
        shared = (assigned(a), assigned(b))
        for i, part in enumerate(slices):
            if i == 4:
                assert b.stop() == 0, b.log()[-3000:]  # mid-stream, with batches in flight
            sources += asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                           [records[j] for j in part]))
            time.sleep(0.3)
        wait_until(lambda: assigned(a) == {0, 1, 2, 3}, 60, "the survivor taking over")
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=120))[names["predictions"]]
    finally:
        b.stop()
        code = a.stop()
    assert code == 0, a.log()[-3000:]
    assert all(shared) and shared[0] | shared[1] == {0, 1, 2, 3}
    want_predictions, want_states = reference_run(art, records, sources, names["events"])
    repeats = assert_predictions_match(got, want_predictions, threshold=3.0)
    artifact = load_artifact(art)
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, redis_states(settings.redis_url, unique, artifact.model_id,
                                            sorted(want_states)), want_states)
    print(f"partitions {shared[0]} + {shared[1]}, then all on one; {len(records)} events, "
          f"{repeats} repeated predictions")
