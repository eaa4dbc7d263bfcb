"""Through the real worker, Kafka and Redis, with a ``score.sensor`` card: three SKAB experiments
streamed as entities (singles and chunks interleaved) get the sensor score and flags of the
offline replay to 1e-5, the anomalies topic carries exactly the flagged samples, and each
entity's Redis state holds the offline run's sensor vector (with the MEWMA averages and the
correlation matrix too, when the card turns them on)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import orjson
import pandas as pd
import pytest
from streamkit import (
    WorkerProcess,
    consume,
    create_topics,
    make_artifact,
    produce,
    redis_states,
    topic_names,
)

from stream.artifact import load_artifact
from stream.offline import replay
from stream.sensor_score import SensorScore
from stream.state import StateCodec
from training.sources import SKAB_FEATURES

FILES = ("valve1/3.csv", "other/12.csv", "valve1/0.csv")
SENSOR = {"warmup": 400, "half_lives": [4.0, 32.0], "adapt_half_life": 120.0, "margin": 4 / 3}
SENSORS = {"plain": SENSOR,
           "mewma-corr-flagged": {**SENSOR, "mean_shift": True, "shrinkage": 0.25,
                                  "flagged_adapt_half_life": 240.0}}


def events(series: dict[str, np.ndarray], t0: float, rng: np.random.Generator
           ) -> list[tuple[bytes, bytes]]:
    """Each entity's rows as singles and chunks of 2-20 samples, entities interleaved."""
    per: dict[str, list[tuple[bytes, bytes]]] = {}
    for name, values in series.items():
        out, i = [], 0
        while i < len(values):
            n = min(int(rng.integers(1, 21)), len(values) - i)
            body = ({"entity_id": name, "ts": t0 + i, "values": values[i].tolist()} if n == 1
                    else {"entity_id": name, "ts": t0 + i, "period": 1.0,
                          "values": values[i:i + n].tolist()})
            out.append((name.encode(), orjson.dumps(body)))
            i += n
        per[name] = out
    mixed, pos = [], dict.fromkeys(per, 0)
    while any(pos[n] < len(v) for n, v in per.items()):
        name = str(rng.choice([n for n, v in per.items() if pos[n] < len(v)]))
        mixed.append(per[name][pos[name]])
        pos[name] += 1
    return mixed


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("sensor", SENSORS.values(), ids=SENSORS.keys())
def test_worker_publishes_the_offline_sensor_score(tmp_path, shared_data, settings, unique,
                                                   sensor):
    series = {}
    for name in FILES:
        frame = pd.read_csv(shared_data / "skab" / "data" / name, sep=";")
        series[name.replace("/", "-")] = frame[[f for f, _ in SKAB_FEATURES]].to_numpy()
    art_dir = make_artifact(tmp_path / "art", hidden=8, n_features=8, period_s=1.0,
                            sample=np.concatenate(list(series.values())), sensor=sensor)
    art = load_artifact(art_dir)
    want = {n: replay(art, v).scores for n, v in series.items()}
    flagged = sum(int(np.nansum(w > sensor["margin"])) for w in want.values())
    records = events(series, time.time() - 3000.0, np.random.default_rng(3))
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    worker = WorkerProcess(art_dir, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=2)
    worker.start()
    try:
        worker.wait_ready()
        asyncio.run(produce(settings.kafka_bootstrap, names["events"], records))
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"], names["anomalies"]],
            lambda g: len(g[names["predictions"]]) >= len(records)
            and len(g[names["anomalies"]]) >= flagged, timeout=180))
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    per: dict[str, list[tuple[float, float, bool]]] = {n: [] for n in series}
    for rec in got[names["predictions"]]:
        if "period" in rec:
            for i, (s, a) in enumerate(zip(rec["score"], rec["anomaly"], strict=True)):
                per[rec["entity_id"]].append((rec["ts"] + i * rec["period"],
                                              np.nan if s is None else s, a))
        else:
            s = rec["score"]
            per[rec["entity_id"]].append((rec["ts"], np.nan if s is None else s,
                                          rec["anomaly"]))
    for name, values in series.items():
        rows = sorted(per[name])
        assert len(rows) == len(values)
        np.testing.assert_allclose([r[1] for r in rows], want[name], rtol=1e-5, atol=1e-5,
                                   equal_nan=True)
        assert [r[2] for r in rows] == (np.nan_to_num(want[name], nan=-1)
                                        > sensor["margin"]).tolist()
    assert flagged > 100 and len(got[names["anomalies"]]) == flagged

    stored = redis_states(settings.redis_url, unique, art.model_id, list(series))
    blobs = [stored[n] for n in series]
    cfg = SensorScore.from_card(art.card)
    codec = StateCodec(art.model.state_size, 8, sensor_size=cfg.layout(8))
    states, found = codec.decode(blobs)
    assert found.all()
    for k, run in enumerate(cfg.run_many([art.scale(v) for v in series.values()])):
        np.testing.assert_allclose(states["sensor"][k], run.state, rtol=1e-9, atol=1e-9)
