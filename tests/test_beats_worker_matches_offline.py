"""Through the real worker, Kafka and Redis: the two bundled MIT-BIH records, whole, streamed as
events of random sizes (single samples to 1000-sample chunks) with a random batch size, give one
beat record per beat on the beats topic, each equal to the offline replay's
(``stream.offline.replay_beats``: one beat-stage call over the whole record) — R peak sample, time
and decision time exactly, p_abnormal to 1e-5, class, flag and the irregular-rhythm mark equal;
the flagged beats are also on the anomalies topic; ``seqstream tail --beats`` reads them;
/metrics counts them."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import urllib.request

import numpy as np
import orjson
import pytest
from streamkit import (
    REPO,
    WorkerProcess,
    beat_stage,
    consume,
    create_topics,
    free_port,
    make_artifact,
    produce,
    topic_names,
)

from seqstream import tail
from stream.artifact import load_artifact
from stream.offline import replay_beats

RECORDS = ("106", "100")
PERIOD = 1 / 360


def whole_record(record: str) -> np.ndarray:
    import wfdb

    rec = wfdb.rdrecord(str(REPO / "training" / "bundled" / "mitdb" / record))
    return np.asarray(rec.p_signal, dtype=np.float64)  # [MLII, V1 or V5], mV


def events_of(name: str, values: np.ndarray, t0: float, rng: np.random.Generator
              ) -> tuple[list[tuple[bytes, bytes]], np.ndarray]:
    """(key, value) of random-size events covering ``values`` in order, and every sample's time
    as the worker computes it (``ts + period * k`` within an event)."""
    out, times, i = [], [], 0
    while i < len(values):
        n = 1 if rng.random() < 0.1 else int(rng.integers(2, 1001))
        n = min(n, len(values) - i)
        ts = t0 + i * PERIOD
        if n == 1:
            body = {"entity_id": name, "ts": ts, "values": values[i].tolist()}
        else:
            body = {"entity_id": name, "ts": ts, "period": PERIOD,
                    "values": values[i:i + n].tolist()}
        out.append((name.encode(), orjson.dumps(body)))
        times.extend(ts + PERIOD * k for k in range(n))
        i += n
    return out, np.array(times)


@pytest.mark.integration
@pytest.mark.slow
def test_every_streamed_beat_record_equals_the_offline_one(tmp_path, settings, unique):
    seed = int(np.random.default_rng().integers(1 << 30))
    print(f"beat stream test seed {seed}")
    rng = np.random.default_rng(seed)
    series = {f"mitdb-{r}": whole_record(r) for r in RECORDS}
    stage = beat_stage([v[:36_000, 0] for v in series.values()])
    art = make_artifact(tmp_path / "art", hidden=12, threshold=4.0, beats=stage,
                        sample=np.concatenate([v[:36_000] for v in series.values()]))
    artifact = load_artifact(art)
    t0 = time.time() - 3600.0
    per_entity = {n: events_of(n, v, t0, rng) for n, v in series.items()}
    want = {n: replay_beats(artifact, n, v, per_entity[n][1]) for n, v in series.items()}
    assert all(want.values())
    flagged = sum(b["anomaly"] for w in want.values() for b in w)
    assert flagged > 0
    # the entities' events interleaved at random, each in its own order
    order = [n for n, (evs, _) in per_entity.items() for _ in evs]
    rng.shuffle(order)
    cursor = dict.fromkeys(per_entity, 0)
    records = []
    for n in order:
        records.append(per_entity[n][0][cursor[n]])
        cursor[n] += 1

    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    port = free_port()
    batch_max = int(rng.integers(5, 400))
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=2, batch_max=batch_max,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(port)})
    total = sum(len(w) for w in want.values())
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce(settings.kafka_bootstrap, names["events"], records))
        run_settings = dataclasses.replace(settings, topic_beats=names["beats"],
                                           topic_anomalies=names["anomalies"])
        rows: list[tail.Row] = []
        asyncio.run(tail.follow(run_settings, rows.append, beats=True, from_beginning=True,
                                count=total, timeout_s=300))
        anomalies = asyncio.run(consume(
            settings.kafka_bootstrap, [names["anomalies"]],
            lambda g: sum(a.get("kind") == "beat" for a in g[names["anomalies"]]) >= flagged,
            timeout=60))[names["anomalies"]]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    got = [r.record for r in rows if isinstance(r, tail.Beat)]
    assert len(got) == len(rows) == total, (len(rows), total, batch_max)
    for name, beats in want.items():
        mine = sorted((b for b in got if b["entity_id"] == name), key=lambda b: b["sample"])
        assert [(b["sample"], b["ts"], b["decided_ts"], b["rr"], b["class"], b["anomaly"],
                 b["irregular"]) for b in mine] == \
            [(b["sample"], b["ts"], b["decided_ts"], b["rr"], b["class"], b["anomaly"],
              b["irregular"]) for b in beats], name
        np.testing.assert_allclose([b["p_abnormal"] for b in mine],
                                   [b["p_abnormal"] for b in beats], rtol=0, atol=1e-5)
        assert all(b["model_id"] == artifact.model_id and b["kind"] == "beat" for b in mine)
    assert any(b["irregular"] for b in got)  # record 106's bigeminy: the rhythm rule's state too
    beat_flags = sorted((a["entity_id"], a["sample"]) for a in anomalies
                        if a.get("kind") == "beat")
    assert beat_flags == sorted((b["entity_id"], b["sample"]) for b in got if b["anomaly"])
    text = metrics.decode()

    def sample_value(line_start: str) -> float:
        [line] = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
        return float(line.rsplit(" ", 1)[1])

    assert sample_value("seqstream_beats_total") == total
    assert sum(sample_value(f'seqstream_abnormal_beats_total{{class="{c}"}}')
               for c in "NSVF") == flagged
    print(f"{len(records)} events, batch_max {batch_max}: {total} beats, {flagged} flagged")
