"""``seqstream view`` in a real browser (Debian's headless Chromium) during a live stream.

A worker streams real MIT-BIH ECG (record 106, which has ventricular ectopic beats) from the real
Kafka with the state in the real Redis; ``seqstream view`` follows the test's topics; Chromium
opens the page while the stream runs and the test reads, from the DOM it rendered, that samples,
forecasts, flags and beats arrived for the chosen entity. The page is also captured to
``results/view.png``.

The worker of this branch does not publish beat records yet, so the test writes them itself in
the documented format (``{"kind": "beat", "entity_id", "ts", "sample", "rr", "class",
"p_abnormal", "anomaly", "threshold", "model_id", "decided_ts"}``), from the cardiologists'
annotations of the same samples (AAMI class; ``p_abnormal`` 1 for an abnormal label, 0 else).

The test artifact is a small randomly initialised network; its threshold is the 90th percentile
of its own offline scores on the streamed samples, so that about one sample in ten is flagged
and the flags are there to be seen (this tests the page, not the detector).
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import orjson
import pytest
from streamkit import (
    REPO,
    WorkerProcess,
    create_topics,
    ecg,
    free_port,
    make_artifact,
    offline_forecasts,
    topic_names,
)

from seqstream.evaluation.labels import ecg_labels

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECORD, START = "106", 32_000  # record 106 from 1:29: ventricular ectopic beats within 3 s
PERIOD, CHUNK = 1 / 360, 36  # MIT-BIH's rate; 100 ms events, as the demo sends
SECONDS = 180.0  # stream at most this long (real time); the page is read long before the end
ENTITY = "ecg-view"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail("expected Debian's chromium (./run installs it): the view is tested in a "
                    "real browser")
    return found


def _browser(url: str, *extra: str, budget_ms: int = 4000) -> subprocess.CompletedProcess:
    """Chromium, headless, run for ``budget_ms`` of the page's virtual time."""
    return subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-dev-shm-usage", f"--virtual-time-budget={budget_ms}", *extra, url],
        capture_output=True, text=True, timeout=180)


def _dom(url: str) -> str:
    done = _browser(url, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _text(dom: str, element_id: str) -> str:
    found = re.search(rf'id="{element_id}"[^>]*>(.*?)</', dom, flags=re.S)
    assert found, f"#{element_id} not in the page:\n{dom[:3000]}"
    return html.unescape(found.group(1)).strip()


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


class View:
    """``python -m seqstream view`` in a subprocess, on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**env, "SEQSTREAM_VIEW_PORT": str(self.port)}
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "seqstream", "view"], cwd=REPO,
                                         env=env, stdout=out, stderr=subprocess.STDOUT)

    def status(self, until, timeout: float = 60.0) -> dict:
        """Poll ``/api/status`` until ``until(status)`` holds."""
        deadline = time.monotonic() + timeout
        last: dict = {}
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                last = _get_json(f"{self.url}/api/status")
            except OSError:
                time.sleep(0.3)
                continue
            if until(last):
                return last
            time.sleep(0.3)
        raise AssertionError(f"view status never satisfied the test: {last}\n"
                             f"{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Stream(threading.Thread):
    """Publishes the ECG in 100 ms chunks and its beat records in real time until stopped."""

    def __init__(self, bootstrap: str, topics: dict[str, str], values: np.ndarray,
                 beats: list[dict], t0: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topics = bootstrap, topics
        self.values, self.beats, self.t0 = values, beats, t0
        self.halt = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as ex:  # reported by the test, not lost in the thread
            self.error = ex

    async def _publish(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5)
        await producer.start()
        try:
            beats = iter(self.beats)
            beat = next(beats, None)
            for lo in range(0, len(self.values), CHUNK):
                if self.halt.is_set():
                    break
                ts = self.t0 + lo * PERIOD
                await asyncio.sleep(max(0.0, ts - time.time()))
                body = {"entity_id": ENTITY, "ts": ts, "period": PERIOD,
                        "values": self.values[lo:lo + CHUNK].tolist()}
                await producer.send_and_wait(self.topics["events"], orjson.dumps(body),
                                             key=ENTITY.encode())
                while beat is not None and beat["ts"] < ts + CHUNK * PERIOD:
                    await producer.send_and_wait(self.topics["beats"], orjson.dumps(beat),
                                                 key=ENTITY.encode())
                    beat = next(beats, None)
                self.sent += 1
        finally:
            await producer.stop()


def _beat_records(bundled_data: Path, n: int, t0: float, threshold: float, model_id: str,
                  ) -> list[dict]:
    labels = ecg_labels(bundled_data / "mitdb", RECORD).part(START, START + n)
    records, previous = [], None
    for peak, cls in zip(labels.r_peaks.tolist(), labels.classes.tolist(), strict=True):
        ts = t0 + peak * PERIOD  # part() counts samples from START
        abnormal = cls != "N"
        records.append({"kind": "beat", "entity_id": ENTITY, "ts": ts, "sample": START + peak,
                        "rr": None if previous is None else (peak - previous) * PERIOD,
                        "class": cls, "p_abnormal": float(abnormal), "anomaly": abnormal,
                        "threshold": threshold, "model_id": model_id, "decided_ts": ts})
        previous = peak
    return records


def test_the_page_shows_samples_forecasts_flags_and_beats_of_a_live_stream(
        settings, unique, bundled_data, tmp_path):
    n = int(SECONDS / PERIOD)
    values = ecg(bundled_data, RECORD, START, n)
    model = make_artifact(tmp_path / "probe", sample=values)
    _, scores = offline_forecasts(model, values)
    threshold = float(np.nanquantile(scores, 0.9))
    model = make_artifact(tmp_path / "model", sample=values, threshold=threshold)
    from stream.artifact import load_artifact

    model_id = load_artifact(model).model_id
    topics = {**topic_names(unique), "beats": f"{unique}.beats"}
    asyncio.run(create_topics(settings.kafka_bootstrap, topics.values(), partitions=2))

    worker = WorkerProcess(model, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=2, warmup_steps=0)
    env = dict(worker.env)  # the worker's topics and Kafka
    env["SEQSTREAM_TOPIC_BEATS"] = topics["beats"]
    env["SEQSTREAM_VIEW_SAMPLES"] = str(int(8 / PERIOD))  # the page scrolls over 8 s
    worker.start()
    view = View(env, tmp_path / "view.log")
    stream: Stream | None = None
    try:
        worker.wait_ready()
        view.status(lambda s: s["kafka"] == "connected")
        t0 = time.time() + 1.0
        stream = Stream(settings.kafka_bootstrap, topics, values,
                        _beat_records(bundled_data, n, t0, threshold, model_id), t0)
        stream.start()
        # the page is opened while the stream runs: once the view holds a few seconds of it
        status = view.status(lambda s: any(e["entity_id"] == ENTITY and e["flags"] > 0
                                           and e["abnormal_beats"] > 0 for e in s["entities"]),
                             timeout=SECONDS / 2)  # a busy machine's worker may lag a while
        assert status["ignored"] == 0, status

        dom = _dom(f"{view.url}/?entity={ENTITY}")
        counts = {k: int(_text(dom, f"n-{k}")) for k in ("samples", "forecasts", "flags",
                                                          "beats")}
        assert _text(dom, "title") == ENTITY
        assert 'data-state="connected"' in dom
        assert 0 < counts["samples"] <= int(env["SEQSTREAM_VIEW_SAMPLES"]), counts
        assert 0 < counts["forecasts"] <= int(env["SEQSTREAM_VIEW_SAMPLES"]), counts
        assert counts["flags"] > 0 and counts["beats"] > 0, counts
        assert re.search(r'<tr class="abnormal"><td>[^<]+</td><td>VEB</td>', dom), \
            "the beat table shows no ventricular beat"
        assert f'href="?entity={ENTITY}"' in dom

        assert stream.is_alive() and stream.error is None, stream.error  # still live
        results = REPO / "results"
        results.mkdir(exist_ok=True)
        shot = results / "view.png"
        shot.unlink(missing_ok=True)
        done = _browser(f"{view.url}/?entity={ENTITY}", f"--screenshot={shot}",
                        "--window-size=1280,860", "--hide-scrollbars")
        assert done.returncode == 0, done.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        if stream is not None:
            stream.halt.set()
            stream.join(30)
        view.stop()
        worker.stop()
    assert stream.error is None, stream.error


def test_the_page_says_kafka_is_unreachable(tmp_path):
    port = free_port()  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTREAM_")}
    env["SEQSTREAM_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{port}"
    view = View(env, tmp_path / "view.log")
    try:
        view.status(lambda s: s["kafka"] == "unreachable")
        dom = _dom(view.url + "/")
        banner = _text(dom, "banner")
        assert banner.startswith("Kafka is unreachable")
        assert f"127.0.0.1:{port}" in banner and "expected a reachable broker" in banner
        assert 'data-state="unreachable"' in dom
    finally:
        view.stop()
