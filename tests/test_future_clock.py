"""A broken producer clock cannot take an entity off the air (issue #15), on the real stack.

One ``pump-1`` event stamped 100 years ahead is dead-lettered (``future_ts``, both times in the
detail) instead of moving the watermark, so the next correct events ARE predicted; ``pump-2``,
whose watermark was poisoned before the check existed (written straight into Redis here), is
reset once, counted and logged, and predicted again; a historical replay of ``pump-3`` (2023
times) is unaffected by the wall-clock bound.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from streamkit import (
    WorkerProcess,
    consume,
    create_topics,
    ecg,
    free_port,
    make_artifact,
    produce,
    single,
    topic_names,
)

from stream.artifact import load_artifact
from stream.state import FLAG_FORECAST, StateCodec, namespace

YEAR_S = 365.25 * 24 * 3600
CORRECT = 20


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the worker's /metrics as {(name, sorted labels): value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.integration
def test_a_future_stamped_event_is_dead_lettered_and_the_entity_stays_on_the_air(
        tmp_path, settings, unique, bundled_data):
    values = ecg(bundled_data, "100", 0, 3 * CORRECT)
    art = make_artifact(tmp_path / "art", sample=values)
    artifact = load_artifact(art)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    now = time.time()
    # pump-2's state as a worker without the bound left it: watermark 100 years ahead
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    poisoned = codec.empty(1)
    poisoned["flags"], poisoned["steps"], poisoned["wm_ts"] = FLAG_FORECAST, 7, now + 100 * YEAR_S
    client = redis.Redis.from_url(settings.redis_url)
    # under pump-2's key on each partition: the worker reads the one its key hashes to
    for partition in range(2):
        client.set(f"{{{namespace(unique, artifact.model_id)}:{partition}}}:pump-2",
                   codec.encode(poisoned)[0], ex=3600)
    client.close()
    port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=2, max_gap_s=0,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(port)})
    start = now - CORRECT  # correct times end at the wall clock
    future = now + 100 * YEAR_S
    records = [single("pump-1", future, values[0])]
    records += [single("pump-1", start + i, values[i]) for i in range(CORRECT)]
    records += [single("pump-2", start + i, values[CORRECT + i]) for i in range(CORRECT)]
    records += [single("pump-3", 1_700_000_000.0 + i, values[2 * CORRECT + i])
                for i in range(CORRECT)]
    try:
        worker.start().wait_ready()
        sources = asyncio.run(produce(settings.kafka_bootstrap, names["events"], records))
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"], names["deadletter"]],
            lambda g: len(g[names["predictions"]]) >= 3 * CORRECT
            and len(g[names["deadletter"]]) >= 1, timeout=90))
        metrics = scrape(port)
    finally:
        code = worker.stop()
    assert code == 0, worker.log()[-3000:]
    (dead,) = got[names["deadletter"]]
    assert dead["reason"] == "future_ts"
    assert (dead["partition"], dead["offset"]) == sources[0]
    assert orjson.loads(dead["raw"])["ts"] == future
    assert f"({future:.3f}" in dead["detail"] and "the worker's clock" in dead["detail"]
    by_entity: dict[str, list[dict]] = {}
    for p in got[names["predictions"]]:
        by_entity.setdefault(p["entity_id"], []).append(p)
    assert [p["ts"] for p in by_entity["pump-1"]] == [start + i for i in range(CORRECT)]
    assert [p["ts"] for p in by_entity["pump-2"]] == [start + i for i in range(CORRECT)]
    assert [p["ts"] for p in by_entity["pump-3"]] == [1_700_000_000.0 + i
                                                      for i in range(CORRECT)]
    # pump-2 restarted from zero: no forecast before its first sample
    assert by_entity["pump-2"][0]["score"] is None and by_entity["pump-2"][1]["score"] is not None
    assert metrics[("seqstream_resets_total", (("reason", "future_watermark"),))] == 1
    assert metrics[("seqstream_deadletters_total", (("reason", "future_ts"),))] == 1
    assert metrics[("seqstream_deadletters_total", (("reason", "late"),))] == 0
    assert metrics[("seqstream_skipped_total", (("reason", "late"),))] == 0
    log = worker.log()
    assert log.count("ahead of the worker's clock") == 1 and "'pump-2'" in log, log[-3000:]
