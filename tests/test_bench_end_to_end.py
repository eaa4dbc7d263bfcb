"""``seqstream bench --size tiny`` runs every pipeline end to end on the real local stack: each one
gets every event and produces one output per event, its consumer group commits to the end of the
input (drained), and the JSON and markdown reports come out, with the worker's time per batch
stage under steady load read from its /metrics. Timings are never asserted.
"""

from __future__ import annotations

import doctest
import json
import subprocess
import sys

import pytest

import seqstream.bench.events
import seqstream.bench.measure
import seqstream.bench.profile
import seqstream.bench.report
import seqstream.bench.stages
from stream.metrics import STAGES
from tests.conftest import REPO

PIPELINES = {"bare", "naive", "worker", "plain"}


@pytest.mark.integration
@pytest.mark.slow
def test_bench_tiny_drains_every_pipeline(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "seqstream", "bench", "--size", "tiny",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((out / "latest.json").read_text())

    runs = doc["catch_up"]
    assert {r["pipeline"] for r in runs} == PIPELINES
    assert {(r["pipeline"], r["shape"]) for r in runs} == {
        (p, s) for p in PIPELINES for s in ("single", "chunk")}
    for r in runs:
        assert r["drained"], r
        assert r["lag"] == 0, r
        assert r["distinct"] == r["events"], r  # one output per event, none missing
        assert r["outputs"] >= r["events"], r
        assert r["samples_per_event"] == (1 if r["shape"] == "single" else 36)

    assert doc["latency"], "the smoke run measures one steady-load run"
    for r in doc["latency"]:
        assert r["drained"] and r["distinct"] == r["events"], r
        assert set(r["latency_ms"]) == {"p50", "p95", "p99"}
        if r["pipeline"] == "worker":  # its stage histograms, over this run's batches only
            assert list(r["stages"]) == list(STAGES), r
            batches = {v["batches"] for v in r["stages"].values()}
            assert len(batches) == 1 and 0 < batches.pop() <= r["events"], r["stages"]
            for stage, v in r["stages"].items():
                assert 0 <= v["p50_ms"] <= v["p99_ms"] <= 10_000, (stage, v)
                assert v["mean_ms"] >= 0, (stage, v)

    [state] = doc["state"]
    assert state["entities"] == 1000
    assert state["raw_state_bytes"] == 4 * doc["model"]["state_size"]
    # Redis cannot hold a value in fewer bytes than the value itself
    assert state["memory_usage_mean"] > state["value_bytes"] > state["raw_state_bytes"]

    single, cluster = doc["state_store"]  # the same run: one Redis, then a 3-master cluster
    assert (single["redis"], cluster["redis"]) == ("single", "cluster of 3")
    assert single["vs_single"] == 1.0
    assert abs(cluster["vs_single"] - cluster["states_per_s"] / single["states_per_s"]) < 0.01

    assert [s["batch"] for s in doc["step"]] == [1, 100]
    assert doc["profile"]["busy_s"] > 0 and doc["profile"]["categories"]
    assert {t["target"] for t in doc["targets"]} >= {"single-sample (c)/(b)"}

    report = (out / "latest.md").read_text()
    assert "| (c) seqstream worker | single | 50 | 1 | 400 |" in report
    assert "Smoke run" in report
    assert "**Time per batch stage under the same steady load**" in report
    assert "| (c) seqstream worker | single | 50% | state_save |" in report


@pytest.mark.parametrize("module", [seqstream.bench.events, seqstream.bench.measure,
                                    seqstream.bench.profile, seqstream.bench.report,
                                    seqstream.bench.stages])
def test_bench_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
