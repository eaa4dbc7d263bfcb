"""The users' side against a real running worker: ``seqstream publish`` replays real ECG in real
time to a worker whose Redis requires a password; a private Prometheus scrapes the worker; then

- every query of the Grafana dashboard returns data from that Prometheus, under load;
- ``seqstream tail`` shows each published entity with its observed values, forecasts and scores,
  and the anomalies topic holds exactly the samples flagged in the predictions;
- the worker saved its states in the password-protected Redis, and a worker given a wrong
  password stops at start-up with one clear line.

One worker start serves all checks (it costs seconds of torch and faust imports on 2 cores).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_private import free_port, start_redis, stop
from streamkit import REPO, WorkerProcess, ecg, make_artifact, topic_names

from seqstream import publish, tail
from stream.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PASSWORD = "live-test-password"
ENTITIES = 6
LOAD_S = 15.0
RATE_INTERVAL = "10s"  # what Grafana's $__rate_interval becomes at a 1 s scrape interval


@dataclasses.dataclass
class Live:
    settings: Settings  # topics of this run
    redis_port: int
    worker: WorkerProcess
    panels: dict[str, list]  # panel query -> Prometheus result vector
    rows: list[list[tail.Sample]]  # what tail showed during the load
    prefix: str
    tmp: Path
    sent_per_s: float  # events/s the publisher achieved


def _start_prometheus(tmp: Path, metrics_port: int) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: seqstream-worker\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}']}}]\n")
    with open(tmp / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={config}",
                                 f"--storage.tsdb.path={tmp / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}"],
                                stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError((tmp / "prometheus.log").read_text()[-2000:])


def _query(port: int, expr: str) -> list:
    url = (f"http://127.0.0.1:{port}/api/v1/query?"
           + urllib.parse.urlencode({"query": expr}))
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def _panel_queries() -> list[str]:
    from test_dashboards_promql import DASHBOARDS, _dashboard_exprs

    exprs = [e for path in DASHBOARDS for e in _dashboard_exprs(json.loads(path.read_text()))]
    return [e.replace("$__rate_interval", RATE_INTERVAL) for e in exprs]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, settings: Settings,
         bundled_data: Path) -> Iterator[Live]:
    tmp = tmp_path_factory.mktemp("live")
    unique = f"test-live-{uuid.uuid4().hex[:8]}"
    redis_port = free_port()
    redis_proc = start_redis(["--port", str(redis_port), "--requirepass", PASSWORD], redis_port,
                             tmp)
    (tmp / "redis-password").write_text(PASSWORD + "\n")
    model = make_artifact(tmp / "model", n_features=1, threshold=2.0,
                          sample=ecg(bundled_data, "100", 0, 36_000)[:, :1])
    metrics_port = free_port()
    worker = WorkerProcess(model, unique, tmp, bootstrap=settings.kafka_bootstrap,
                           redis_url=f"redis://127.0.0.1:{redis_port}/0", partitions=4,
                           extra_env={"SEQSTREAM_REDIS_PASSWORD_FILE": str(tmp / "redis-password"),
                                      "SEQSTREAM_METRICS_PORT": str(metrics_port),
                                      "SEQSTREAM_METRICS_HOST": "127.0.0.1"})
    prometheus = None
    try:
        worker.start().wait_ready()
        prometheus, prom_port = _start_prometheus(tmp, metrics_port)
        deadline = time.monotonic() + 30
        while not _query(prom_port, 'up{job="seqstream-worker"} == 1'):  # scraping has begun
            assert time.monotonic() < deadline, "Prometheus never scraped the worker"
            time.sleep(0.5)
        names = topic_names(unique)
        run_settings = dataclasses.replace(
            settings, topic_events=names["events"], topic_predictions=names["predictions"],
            topic_anomalies=names["anomalies"], topic_deadletter=names["deadletter"])
        prefix = f"{unique}-"
        args = argparse_publish("--path", str(bundled_data / "mitdb"), "--records", "100,106,215",
                                "--entities", str(ENTITIES), "--entity-prefix", prefix)
        lanes = publish.load_lanes(args, run_settings)
        reports: list[publish.Report] = []
        loader = threading.Thread(target=lambda: reports.append(asyncio.run(publish.publish(
            run_settings, lanes, publish.Options(rate="realtime", samples_per_event=36,
                                                 duration_s=LOAD_S, progress=False)))))
        loader.start()
        time.sleep(LOAD_S - 4)  # query while the load runs and the rate windows are full
        panels = {expr: _query(prom_port, expr) for expr in _panel_queries()}
        loader.join()
        # one prediction record per event: tail reads them all, from the beginning
        rows: list[list[tail.Sample]] = []
        asyncio.run(tail.follow(run_settings, rows.append, from_beginning=True,
                                count=reports[0].events, timeout_s=30))
        yield Live(run_settings, redis_port, worker, panels, rows, prefix, tmp,
                   reports[0].events / reports[0].seconds)
    finally:
        worker.stop()
        if prometheus is not None:
            prometheus.terminate()
            prometheus.wait(10)
        stop(redis_proc)


def argparse_publish(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    publish.configure(parser)
    return parser.parse_args(list(argv))


def test_every_dashboard_panel_returns_data_under_load(live: Live) -> None:
    empty = [expr for expr, result in live.panels.items() if not result]
    assert not empty, f"panels without data: {empty}"
    values = {expr: float(result[0]["value"][1]) for expr, result in live.panels.items()
              if "value" in result[0]}
    events = next(v for e, v in values.items() if e.startswith("sum(rate(seqstream_events"))
    # 6 entities x 360 Hz in 36-sample chunks = 60 events/s sent in real time
    assert events == pytest.approx(live.sent_per_s, rel=0.2)
    p99 = next(v for e, v in values.items() if e.startswith("histogram_quantile(0.99, sum by "
                                                            "(le) (rate(seqstream_latency"))
    assert 0 < p99 < 2.0
    info = next(r for e, r in live.panels.items() if "seqstream_model_info" in e)
    assert len(info) == 1 and len(info[0]["metric"]["model_id"]) == 64


def test_tail_shows_each_entity_with_values_forecasts_and_scores(live: Live,
                                                                 bundled_data: Path) -> None:
    samples = [s for group in live.rows for s in group]
    entities = {s.entity_id for s in samples}
    assert len(entities) == ENTITIES and all(e.startswith(live.prefix) for e in entities)
    joined = [s for s in samples if s.value is not None]
    assert len(joined) == len(samples)  # tail read every event from the beginning
    first = sorted((s for s in samples if s.entity_id == f"{live.prefix}100"),
                   key=lambda s: s.ts)[:360]
    recorded = ecg(bundled_data, "100", 0, 360)[:, 0]
    assert [s.value[0] for s in first] == recorded.tolist()  # the MLII millivolts
    assert all(len(s.forecast) == 3 and len(s.forecast[0]) == 1 for s in samples)  # H=3, F=1
    assert sum(s.score is not None for s in samples) >= len(samples) - ENTITIES
    rows = [tail.format_row(group) for group in live.rows[:5]]
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ", row) for row in rows)


def test_anomalies_topic_holds_exactly_the_flagged_samples(live: Live) -> None:
    flagged = sorted((s.entity_id, s.ts) for g in live.rows for s in g if s.anomaly)
    assert flagged, "threshold 2 on real ECG should flag some samples"
    anomalies: list[list[tail.Sample]] = []
    asyncio.run(tail.follow(live.settings, anomalies.append, anomalies_only=True,
                            from_beginning=True, values=False, count=len(flagged),
                            timeout_s=20))
    got = sorted((s.entity_id, s.ts) for g in anomalies for s in g)
    assert [e for e, _ in got] == [e for e, _ in flagged]
    assert [t for _, t in got] == pytest.approx([t for _, t in flagged], abs=1e-6)
    assert all(s.anomaly for g in anomalies for s in g)


def test_tail_cli_json_lines_for_one_entity(live: Live) -> None:
    entity = f"{live.prefix}106"
    s = live.settings
    result = subprocess.run(
        [sys.executable, "-m", "seqstream", "tail", "--json", "--from-beginning", "--entity",
         entity, "--count", "100", "--timeout", "30", "--topic-predictions",
         s.topic_predictions, "--topic-events", s.topic_events,
         "--kafka-bootstrap", s.kafka_bootstrap],
        cwd=REPO, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 100
    assert {line["entity_id"] for line in lines} == {entity}
    assert all(line["value"] is not None and line["forecast"] for line in lines)
    ts = [line["ts"] for line in lines]
    assert ts == sorted(ts)


def test_worker_saved_states_in_the_password_redis(live: Live) -> None:
    client = redis.Redis(host="127.0.0.1", port=live.redis_port, password=PASSWORD)
    keys = [k for k in client.scan_iter(count=1000)]
    assert len(keys) >= ENTITIES
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    anonymous = redis.Redis(host="127.0.0.1", port=live.redis_port, retry=Retry(NoBackoff(), 0))
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_worker_with_a_wrong_redis_password_stops_with_one_line(live: Live,
                                                                settings: Settings) -> None:
    wrong = live.tmp / "wrong-password"
    wrong.write_text("not-it\n")
    worker = WorkerProcess(live.worker.artifact, f"test-wrongpw-{uuid.uuid4().hex[:8]}",
                           live.tmp, bootstrap=settings.kafka_bootstrap,
                           redis_url=f"redis://127.0.0.1:{live.redis_port}/0",
                           extra_env={"SEQSTREAM_REDIS_PASSWORD_FILE": str(wrong)})
    worker.start()
    assert worker.proc is not None
    rc = worker.proc.wait(120)
    log = worker.log()
    assert rc == 1, log[-2000:]
    [line] = [x for x in log.splitlines() if x.startswith("seqstream worker:")]
    assert "refused the credentials" in line and "SEQSTREAM_REDIS_PASSWORD_FILE" in line
    assert "not-it" not in log
