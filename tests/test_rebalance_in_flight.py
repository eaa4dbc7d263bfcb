"""A rebalance while batches are in flight keeps the worker's delivery contract.

The worker takes its batches below faust's per-event path (``stream.fastpath``), so a rebalance
must wait for, or drop without acking, the batches it holds. Here a second member joins and then
leaves while the stream keeps coming: every event still gets a prediction, repeated predictions
equal the first (1e-5), and the states left in Redis equal those of an uninterrupted run — no
sample lost, none applied twice. (Kill -9 at random moments: ``test_crash_recovery``.)
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from streamkit import (
    EndOffsets,
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

ENTITIES, EVENTS_PER_ENTITY = 100, 200


def _check(settings, unique, art, names, records, want_predictions, want_states) -> int:
    got = asyncio.run(consume(
        settings.kafka_bootstrap, [names["predictions"]],
        lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
        >= len(records), timeout=180))[names["predictions"]]
    repeats = assert_predictions_match(got, want_predictions, threshold=3.0)
    artifact = load_artifact(art)
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, redis_states(settings.redis_url, unique, artifact.model_id,
                                            sorted(want_states)), want_states)
    return repeats


def _wait_for(produced: EndOffsets, goal: float, *workers: WorkerProcess) -> int:
    deadline = time.monotonic() + 180
    while (total := produced.total()) < goal:
        for w in workers:
            assert w.proc is not None and w.proc.poll() is None, w.log()[-3000:]
        assert time.monotonic() < deadline, f"stuck at {total} of {goal} predictions"
        time.sleep(0.02)
    return total


@pytest.mark.integration
@pytest.mark.slow
def test_members_joining_and_leaving_with_batches_in_flight_keep_every_event_once(
        tmp_path, bundled_data, settings, unique):
    events = EventSet(bundled_data, ENTITIES, EVENTS_PER_ENTITY, t0=time.time(), chunk_every=10,
                      chunk_len=4)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:20]))
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 4))
    records = events.interleaved(7)
    kw = {"bootstrap": settings.kafka_bootstrap, "redis_url": settings.redis_url,
          "partitions": 4, "batch_max": 100}
    first = WorkerProcess(art, unique, tmp_path, **kw)
    second = WorkerProcess(art, unique, tmp_path, **kw)
    produced = EndOffsets(settings.kafka_bootstrap, names["predictions"])
    sources: list[tuple[int, int]] = []
    joined, left = threading.Event(), threading.Event()

    def feed() -> None:
        """The stream keeps coming while members join and leave. A slow start of the second
        member (a loaded machine) must not let the stream end first: the feed waits for it to
        join before the second half and for it to leave before the last tenth."""
        for lo in range(0, len(records), 400):
            if lo >= 0.5 * len(records):
                joined.wait(180)
            if lo >= 0.9 * len(records):
                left.wait(180)
            sources.extend(asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                               records[lo:lo + 400])))
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    try:
        first.start().wait_ready()
        feeder.start()
        _wait_for(produced, 0.1 * len(records), first)
        second.start().wait_ready()  # joins: the first gives partitions up mid-stream
        joined.set()
        joined_at = _wait_for(produced, produced.total() + 0.1 * len(records), first, second)
        assert second.stop() == 0, second.log()[-3000:]  # leaves: the first takes them back
        left_at = produced.total()
        left.set()
        feeder.join()
        want_p, want_s = reference_run(art, records, sources, names["events"])
        repeats = _check(settings, unique, art, names, records, want_p, want_s)
    finally:
        joined.set()
        left.set()
        produced.close()
        code = first.stop()
        second.stop()
        feeder.join()
    assert code == 0, first.log()[-3000:]
    assert left_at < len(records), "the members changed after the stream had ended"
    print(f"second member in at {joined_at}, out at {left_at} predictions; {repeats} repeats")
