"""Through the real worker, Kafka and Redis: for several entities the streamed forecasts equal one
offline ``model.forward`` over the same sequence to 1e-5, the anomalies topic carries exactly the
flagged samples, and the worker's /metrics endpoint counts what happened; with each batch waiting
for the one before (``SEQSTREAM_INFLIGHT=1``) and with up to 3 batches computed ahead of their
delivery."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import numpy as np
import pytest
from streamkit import (
    EventSet,
    WorkerProcess,
    consume,
    create_topics,
    free_port,
    make_artifact,
    offline_forecasts,
    produce,
    topic_names,
)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("inflight", [1, 3])
def test_streamed_forecasts_equal_offline_forward(tmp_path, bundled_data, settings, unique,
                                                  inflight):
    events = EventSet(bundled_data, entities=6, per_entity=150, t0=time.time() - 5.0,
                      chunk_every=3, chunk_len=5)
    sample = np.concatenate(list(events.values.values()))
    probe = make_artifact(tmp_path / "probe", cell="lstm", layers=2, hidden=16, horizon=5,
                          sample=sample)
    scores = np.concatenate([offline_forecasts(probe, v)[1][1:] for v in events.values.values()])
    threshold = float(np.quantile(scores, 0.97))  # so that some samples are flagged
    art = make_artifact(tmp_path / "art", cell="lstm", layers=2, hidden=16, horizon=5,
                        sample=sample, threshold=threshold)
    offline = {name: offline_forecasts(art, values) for name, values in events.values.items()}
    want_flags = {name: (np.nan_to_num(scores, nan=-1) > threshold) & (np.arange(len(scores)) >= 20)
                  for name, (_, scores) in offline.items()}
    flagged = sum(int(f.sum()) for f in want_flags.values())
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 3))
    port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=3, warmup_steps=20,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(port),
                                      "SEQSTREAM_INFLIGHT": str(inflight)})
    worker.start()
    try:
        worker.wait_ready()
        records = events.interleaved(seed=1)
        asyncio.run(produce(settings.kafka_bootstrap, names["events"], records))
        # anomalies are a second topic: wait for them too, not just for every prediction
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"], names["anomalies"]],
            lambda g: len(g[names["predictions"]]) >= len(records)
            and len(g[names["anomalies"]]) >= flagged, timeout=120))
        # a batch's histograms are observed after its states are saved, just after its
        # predictions became visible: poll until the last batch is in
        deadline = time.monotonic() + 30
        while True:
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                             timeout=10).read()
            done = f"seqstream_batch_size_sum {float(len(records))}" in metrics.decode()
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    predictions = got[names["predictions"]]
    assert len(predictions) == len(records)  # one record per event, chunks included
    per_entity: dict[str, list[tuple[float, list, float | None, bool]]] = {}
    for rec in predictions:
        rows = per_entity.setdefault(rec["entity_id"], [])
        if "period" in rec:
            for i in range(len(rec["forecast"])):
                rows.append((rec["ts"] + i * rec["period"], rec["forecast"][i], rec["score"][i],
                             rec["anomaly"][i]))
        else:
            rows.append((rec["ts"], rec["forecast"], rec["score"], rec["anomaly"]))
    for name, values in events.values.items():
        rows = sorted(per_entity[name], key=lambda r: r[0])
        assert len(rows) == len(values)
        forecasts, scores = offline[name]
        np.testing.assert_allclose(np.array([r[1] for r in rows]), forecasts, rtol=1e-5,
                                   atol=1e-5)
        streamed = np.array([np.nan if r[2] is None else r[2] for r in rows])
        np.testing.assert_allclose(streamed, scores, rtol=1e-5, atol=1e-5)
        assert [r[3] for r in rows] == want_flags[name].tolist()
    anomalies = got[names["anomalies"]]
    assert flagged > 0 and len(anomalies) == flagged
    assert all(a["anomaly"] and a["score"] > threshold for a in anomalies)

    text = metrics.decode()

    def sample_value(line_start: str) -> float:
        [line] = [ln for ln in text.splitlines() if ln.startswith(line_start + " ")]
        return float(line.rsplit(" ", 1)[1])

    assert sample_value("seqstream_events_total") == len(records)
    assert sample_value("seqstream_samples_total") == sum(len(v) for v in events.values.values())
    assert sample_value("seqstream_predictions_total") == len(records)
    assert sample_value("seqstream_anomalies_total") == flagged
    assert sample_value("seqstream_latency_seconds_count") == len(records)
    assert sample_value("seqstream_batch_size_sum") == len(records)
    assert 'seqstream_model_info{cell="lstm"' in text
