"""kill -9 the worker at random moments while it streams 50,000 events over 200 entities, and
restart it each time: every event still gets a prediction, repeated predictions of an event equal
the first (to float32 rounding of a batch of another size: 1e-5), and the states left in Redis
equal those of an uninterrupted run — so no sample was lost or applied twice."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request

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
    free_port,
    make_artifact,
    produce,
    redis_states,
    reference_run,
    topic_names,
)

from stream.artifact import load_artifact
from stream.state import StateCodec

ENTITIES, EVENTS_PER_ENTITY, KILLS = 200, 250, 3


@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice(
        tmp_path, bundled_data, settings, unique):
    rng = np.random.default_rng()
    seed = int(rng.integers(1 << 30))
    print(f"crash test seed {seed}")
    rng = np.random.default_rng(seed)
    events = EventSet(bundled_data, ENTITIES, EVENTS_PER_ENTITY, t0=time.time(), chunk_every=10,
                      chunk_len=4)
    assert events.n_events == 50_000
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:20]))
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 4))
    records = events.interleaved(seed)
    sources = asyncio.run(produce(settings.kafka_bootstrap, names["events"], records))
    want_predictions, want_states = reference_run(art, records, sources, names["events"])
    assert len(want_predictions) == len(records)

    port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=4, batch_max=250,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(port)})
    produced = EndOffsets(settings.kafka_bootstrap, names["predictions"])
    # one kill in each of KILLS equal stretches of the stream, each after fresh progress
    span = 0.85 * len(records) / KILLS
    thresholds = [span * (k + float(rng.uniform(0.1, 1.0))) for k in range(KILLS)]
    at_kill: list[int] = []
    try:
        for threshold in thresholds:
            worker.start().wait_ready()
            goal = max(threshold, (at_kill[-1] if at_kill else 0) + 500)
            while produced.total() < goal:
                assert worker.proc is not None and worker.proc.poll() is None, worker.log()
                time.sleep(float(rng.uniform(0.01, 0.1)))
            worker.kill9()
            at_kill.append(produced.total())
        worker.start().wait_ready()
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=180))[names["predictions"]]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        produced.close()
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    # the kills really interrupted the stream, each after some progress
    assert at_kill[-1] < len(records) and all(b > a for a, b in itertools.pairwise(at_kill))
    repeats = assert_predictions_match(got, want_predictions, threshold=3.0)
    artifact = load_artifact(art)
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, redis_states(settings.redis_url, unique, artifact.model_id,
                                            sorted(want_states)), want_states)
    duplicates = [ln for ln in metrics.decode().splitlines()
                  if ln.startswith('seqstream_skipped_total{reason="duplicate"}')]
    print(f"kills after {at_kill} prediction records; {len(got)} records for {len(records)} "
          f"events ({repeats} recomputed repeats); last restart: {duplicates}")
