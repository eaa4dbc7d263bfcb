"""``seqstream view``'s memory and endpoints: per-entity rings stay within their bounds, the least
recently heard entity goes first, a page's cursors get exactly the newer rows, malformed records
are counted and dropped, and the server answers with those rows, its static files, and errors that
say what was expected; a taken port is one line naming its setting. Real MIT-BIH samples feed the
rings; the server runs with a Kafka and a Prometheus that do not answer, so these need no stack."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from streamkit import ecg, free_port

from seqstream.view.buffers import Buffers, Ring
from seqstream.view.server import make_app
from stream.settings import Settings

PERIOD = 1 / 360


@pytest.fixture(scope="module")
def values(shared_data: Path) -> np.ndarray:
    """3 s of two-lead ECG from MIT-BIH record 100."""
    return ecg(shared_data, "100", 0, 3 * 360)


def _feed(buffers: Buffers, entity: str, values: np.ndarray, chunk: int = 36,
          t0: float = 1_700_000_000.0) -> None:
    """Events in chunks, and a prediction record per chunk (persistence forecast)."""
    for lo in range(0, len(values), chunk):
        rows = values[lo:lo + chunk].tolist()
        ts = t0 + lo * PERIOD
        buffers.add("events", {"entity_id": entity, "ts": ts, "period": PERIOD, "values": rows})
        buffers.add("predictions", {
            "entity_id": entity, "ts": ts, "period": PERIOD, "forecast": [[r] for r in rows],
            "score": [abs(r[0]) for r in rows], "anomaly": [abs(r[0]) > 1.0 for r in rows],
            "threshold": 1.0, "model_id": "m"})


def test_rings_keep_the_latest_samples_and_cursors_get_only_newer_rows(values):
    window = 500
    buffers = Buffers(samples=window, entities=4)
    _feed(buffers, "p", values)
    whole = buffers.view("p", signal=0, predictions=0, beats=0)
    assert whole["signal"]["next"] == len(values)
    assert whole["signal"]["values"] == values[-window:].tolist()
    assert whole["predictions"]["forecast"] == values[-window:].tolist()
    ts = whole["signal"]["ts"]
    np.testing.assert_allclose(whole["predictions"]["forecast_ts"], np.array(ts) + PERIOD)
    cursor = len(values) - 7
    newer = buffers.view("p", signal=cursor, predictions=cursor, beats=0)
    assert newer["signal"]["values"] == values[-7:].tolist()
    assert newer["predictions"]["anomaly"] == [abs(v) > 1.0 for v in values[-7:, 0]]


def test_the_least_recently_heard_entity_is_dropped_beyond_the_bound(values):
    buffers = Buffers(samples=100, entities=2)
    for name in ("a", "b"):
        _feed(buffers, name, values[:72])
    _feed(buffers, "a", values[72:108])  # a is heard again: b is now the oldest
    _feed(buffers, "c", values[:36])
    assert [e["entity_id"] for e in buffers.listing()] == ["a", "c"]
    assert buffers.view("b", signal=0, predictions=0, beats=0) is None


def test_single_sample_records_take_the_gap_as_the_forecast_step(values):
    buffers = Buffers(samples=10, entities=1)
    for i in range(3):
        ts = 100.0 + i * PERIOD
        buffers.add("events", {"entity_id": "s", "ts": ts, "values": values[i].tolist()})
        buffers.add("predictions", {"entity_id": "s", "ts": ts, "forecast": [values[i].tolist()],
                                    "score": None if i == 0 else 0.5, "anomaly": False,
                                    "threshold": 3.0, "model_id": "m"})
    rows = buffers.view("s", signal=0, predictions=0, beats=0)["predictions"]
    assert rows["forecast_ts"][0] is None  # no gap known after the first sample
    np.testing.assert_allclose(rows["forecast_ts"][1:], [100.0 + 2 * PERIOD, 100.0 + 3 * PERIOD])
    assert rows["score"] == [None, 0.5, 0.5]


def test_beats_are_kept_and_malformed_records_are_counted_not_kept():
    buffers = Buffers(samples=3, entities=5)
    for k in range(5):
        buffers.add("beats", {"kind": "beat", "entity_id": "e", "ts": 10.0 + k, "sample": 360 * k,
                              "rr": 1.0, "class": "VEB" if k == 4 else "N",
                              "p_abnormal": 0.9 if k == 4 else 0.1, "anomaly": k == 4,
                              "threshold": 0.5, "model_id": "m", "decided_ts": 10.5 + k})
    beats = buffers.view("e", signal=0, predictions=0, beats=0)["beats"]
    assert beats["next"] == 5 and [b["ts"] for b in beats["rows"]] == [12.0, 13.0, 14.0]
    assert beats["rows"][-1]["class"] == "VEB" and buffers.listing()[0]["abnormal_beats"] == 1
    for kind, body in [("events", {"entity_id": "e", "ts": "yesterday", "values": [1.0]}),
                       ("events", {"ts": 1.0, "values": [1.0]}),
                       ("predictions", {"entity_id": "e", "ts": 1.0}),
                       ("beats", {"kind": "rhythm", "entity_id": "e", "ts": 1.0}),
                       ("events", ["not", "an", "object"])]:
        buffers.add(kind, body)
    assert buffers.ignored == 5 and buffers.records == 5


def test_server_answers_rows_files_and_errors(values):
    settings = Settings.from_env({"SEQSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
                                  "SEQSTREAM_PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
                                  "SEQSTREAM_VIEW_SAMPLES": "200"})
    buffers = Buffers(settings.view_samples, settings.view_entities)
    _feed(buffers, "patient 7", values[:360])

    async def go() -> None:
        async with TestClient(TestServer(make_app(settings, buffers))) as client:
            page = await client.get("/")
            assert page.status == 200 and "seqstream view" in await page.text()
            script = await client.get("/static/view.js")
            assert script.content_type == "text/javascript"
            assert (await client.get("/static/../server.py")).status == 404
            status = await (await client.get("/api/status")).json()
            assert status["window"] == 200
            assert [e["entity_id"] for e in status["entities"]] == ["patient 7"]
            rows = await (await client.get("/api/entity/patient%207?signal=300&predictions=0"
                                           "&beats=0")).json()
            assert rows["signal"]["values"] == values[300:360].tolist()
            assert len(rows["predictions"]["ts"]) == 200
            missing = await client.get("/api/entity/nobody")
            assert missing.status == 404 and "not heard" in await missing.text()
            bad = await client.get("/api/entity/patient%207?signal=-1")
            assert bad.status == 400 and "expected a row number >= 0" in await bad.text()
            fleet = await (await client.get("/api/fleet")).json()
            assert fleet["events_per_s"] is None
            assert fleet["error"].startswith(f"Prometheus at {settings.prometheus_url}")

    asyncio.run(go())


def test_a_ring_restarts_when_the_row_width_changes(values):
    ring = Ring(capacity=50)
    ring.extend(ts=np.arange(40.0), values=values[:40])
    ring.extend(ts=np.arange(40.0, 45.0), values=values[40:45, :1])  # one feature now
    held = ring.since(0)
    assert ring.total == 45 and ring.first == 40
    assert held["values"].tolist() == values[40:45, :1].tolist()


def test_a_taken_port_is_one_line_naming_the_setting():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTREAM_")}
        env.update(SEQSTREAM_VIEW_PORT=str(port),
                   SEQSTREAM_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}")
        done = subprocess.run([sys.executable, "-m", "seqstream", "view"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"seqstream view: expected to serve on 127.0.0.1:{port} "
                           "(SEQSTREAM_VIEW_HOST, SEQSTREAM_VIEW_PORT), got"), done.stderr
    assert "Traceback" not in done.stderr


def test_beats_older_than_the_signal_window_are_dropped(values):
    buffers = Buffers(samples=360, entities=1)
    for k in range(3):  # beats at 0.5, 1.5 and 2.5 s
        buffers.add("beats", {"kind": "beat", "entity_id": "e", "ts": 0.5 + k, "class": "N",
                              "anomaly": False})
    _feed(buffers, "e", values[:720], t0=0.0)  # 2 s of signal: the ring holds 1 to 2 s
    beats = buffers.view("e", signal=0, predictions=0, beats=0)["beats"]
    assert [b["ts"] for b in beats["rows"]] == [1.5, 2.5] and beats["next"] == 3

