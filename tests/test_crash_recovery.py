"""kill -9 the worker at random moments while it streams 50,000 events over 200 entities, and
restart it each time: every event still gets a prediction, repeated predictions of an event equal
the first (to float32 rounding of a batch of another size: 1e-5), and the states left in Redis
equal those of an uninterrupted run — so no sample was lost or applied twice.

The same with an ECG artifact that has a beat stage, over a few entities with minutes of ECG
each: every beat the uninterrupted offline replay finds has a beat record, and every repeat of a
record equals it (at-least-once: a batch whose records were sent but whose states were not saved
is decided again after the restart, identically)."""

from __future__ import annotations

import asyncio
import itertools
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from streamkit import (
    EndOffsets,
    EventSet,
    WorkerProcess,
    assert_predictions_match,
    assert_states_equal,
    beat_stage,
    consume,
    create_topics,
    ecg,
    free_port,
    make_artifact,
    produce,
    redis_states,
    reference_run,
    topic_names,
)

from stream.artifact import load_artifact
from stream.offline import replay_beats
from stream.state import StateCodec

ENTITIES, EVENTS_PER_ENTITY, KILLS = 200, 250, 3
BEAT_RECORDS, BEAT_SECONDS = ("100", "106", "109", "116", "200", "223"), 120


def kill_and_restart(worker: WorkerProcess, produced: EndOffsets, total: int,
                     rng: np.random.Generator) -> list[int]:
    """One kill -9 in each of KILLS equal stretches of the ``total`` records the output topic
    will hold, each after fresh progress; the worker is left running. Returns the output
    topic's record count at each kill."""
    span = 0.85 * total / KILLS
    thresholds = [span * (k + float(rng.uniform(0.1, 1.0))) for k in range(KILLS)]
    at_kill: list[int] = []
    for threshold in thresholds:
        worker.start().wait_ready()
        goal = max(threshold, (at_kill[-1] if at_kill else 0) + 500)
        while produced.total() < goal:
            assert worker.proc is not None and worker.proc.poll() is None, worker.log()
            time.sleep(float(rng.uniform(0.01, 0.1)))
        worker.kill9()
        at_kill.append(produced.total())
    worker.start().wait_ready()
    # the kills really interrupted the stream, each after some progress
    assert at_kill[-1] < total and all(b > a for a, b in itertools.pairwise(at_kill))
    return at_kill



@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice(
        tmp_path, bundled_data, settings, unique, redis_url):
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
                           redis_url=redis_url, partitions=4, batch_max=250,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(port)})
    produced = EndOffsets(settings.kafka_bootstrap, names["predictions"])
    try:
        at_kill = kill_and_restart(worker, produced, len(records), rng)
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=180))[names["predictions"]]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        produced.close()
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    repeats = assert_predictions_match(got, want_predictions, threshold=3.0)
    artifact = load_artifact(art)
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, redis_states(redis_url, unique, artifact.model_id,
                                            sorted(want_states)), want_states)
    duplicates = [ln for ln in metrics.decode().splitlines()
                  if ln.startswith('seqstream_skipped_total{reason="duplicate"}')]
    print(f"kills after {at_kill} prediction records; {len(got)} records for {len(records)} "
          f"events ({repeats} recomputed repeats); last restart: {duplicates}")


def beat_events(name: str, values: np.ndarray, t0: float, rng: np.random.Generator
                ) -> tuple[list[tuple[bytes, bytes]], np.ndarray]:
    """(key, value) of 1- to 72-sample events over ``values`` and every sample's time as the
    worker computes it."""
    import orjson

    period = 1 / 360
    out, times, i = [], [], 0
    while i < len(values):
        n = min(int(rng.integers(1, 73)), len(values) - i)
        ts = t0 + i * period
        body = ({"entity_id": name, "ts": ts, "values": values[i].tolist()} if n == 1 else
                {"entity_id": name, "ts": ts, "period": period,
                 "values": values[i:i + n].tolist()})
        out.append((name.encode(), orjson.dumps(body)))
        times.extend(ts + period * k for k in range(n))
        i += n
    return out, np.array(times)


@pytest.mark.integration
@pytest.mark.slow
def test_kill_9_leaves_one_identical_beat_record_for_every_beat(tmp_path: Path, shared_data,
                                                                 settings, unique):
    seed = int(np.random.default_rng().integers(1 << 30))
    print(f"beat crash test seed {seed}")
    rng = np.random.default_rng(seed)
    series = {f"mitdb-{r}": ecg(shared_data, r, 0, BEAT_SECONDS * 360) for r in BEAT_RECORDS}
    stage = beat_stage([v[:, 0] for v in series.values()])
    art = make_artifact(tmp_path / "art", hidden=12, threshold=3.0, beats=stage,
                        sample=np.concatenate(list(series.values())))
    artifact = load_artifact(art)
    t0 = time.time() - 3600.0
    per_entity = {n: beat_events(n, v, t0, rng) for n, v in series.items()}
    want = {(b["entity_id"], b["sample"]): b for n, v in series.items()
            for b in replay_beats(artifact, n, v, per_entity[n][1])}
    order = [n for n, (evs, _) in per_entity.items() for _ in evs]
    rng.shuffle(order)
    cursor = dict.fromkeys(per_entity, 0)
    records = []
    for n in order:
        records.append(per_entity[n][0][cursor[n]])
        cursor[n] += 1
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 4))
    sources = asyncio.run(produce(settings.kafka_bootstrap, names["events"], records))
    want_predictions, want_states = reference_run(art, records, sources, names["events"])

    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=4, batch_max=60)
    produced = EndOffsets(settings.kafka_bootstrap, names["predictions"])
    try:
        at_kill = kill_and_restart(worker, produced, len(records), rng)
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"], names["beats"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records) and len({(b["entity_id"], b["sample"])
                                     for b in g[names["beats"]]}) >= len(want), timeout=180))
    finally:
        produced.close()
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    repeats = assert_predictions_match(got[names["predictions"]], want_predictions,
                                       threshold=3.0)
    beats = got[names["beats"]]
    for b in beats:
        ref = want.get((b["entity_id"], b["sample"]))
        assert ref is not None, f"a beat the offline replay does not have: {b}"
        assert (b["ts"], b["decided_ts"], b["rr"], b["class"], b["anomaly"]) == \
            (ref["ts"], ref["decided_ts"], ref["rr"], ref["class"], ref["anomaly"]), b
        assert abs(b["p_abnormal"] - ref["p_abnormal"]) <= 1e-5, b
    seen = {(b["entity_id"], b["sample"]) for b in beats}
    missing = sorted(set(want) - seen)
    assert not missing, f"{len(missing)} beats without a record, e.g. {missing[:3]}"
    codec = StateCodec(artifact.model.state_size, artifact.n_features, stage.state_dtype)
    assert_states_equal(codec, redis_states(settings.redis_url, unique, artifact.model_id,
                                            sorted(want_states)), want_states)
    print(f"kills after {at_kill} prediction records ({repeats} repeated); {len(beats)} beat "
          f"records for {len(want)} beats ({len(beats) - len(want)} repeats)")
