"""``seqstream bench --beats N``: (c) on chunks with and without a beat stage, alternated, on the
real local stack; the beat artifact carries a working beat stage flagging about a tenth of the
beats."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from streamkit import REPO

from seqstream.bench.beatpath import FLAGGED, make_beat_artifact
from seqstream.bench.events import load_series
from seqstream.bench.model import make_artifact
from stream.artifact import load_artifact
from stream.beats import offline_beats


def test_the_beat_artifact_adds_a_beat_stage_to_the_same_forecaster(tmp_path):
    series = load_series(records=2, samples=30_000)
    make_artifact(tmp_path / "a", series)
    make_beat_artifact(tmp_path / "a", tmp_path / "b", series)
    a, b = load_artifact(tmp_path / "a"), load_artifact(tmp_path / "b")
    assert a.beats is None and b.beats is not None
    assert a.model.config() == b.model.config()
    for k, v in a.model.state_dict().items():
        assert np.array_equal(v.numpy(), b.model.state_dict()[k].numpy()), k
    flags = [x.anomaly for _, v, _ in series for x in offline_beats(b.beats, v[:, 0])]
    assert len(flags) > 50
    assert abs(np.mean(flags) - FLAGGED) < 0.05


@pytest.mark.integration
@pytest.mark.slow
def test_bench_beats_alternates_the_worker_without_and_with_the_beat_stage(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "seqstream", "bench", "--size", "tiny",
                           "--pipelines", "c", "--shapes", "chunk", "--beats", "2",
                           "--no-profile", "--loads", "", "--state-entities", "",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    beat = json.loads((out / "latest.json").read_text())["beat_path"]
    assert [r["artifact"] for r in beat["runs"]] == ["A", "B", "A", "B"]
    for r in beat["runs"]:
        assert r["drained"] and r["distinct"] == r["events"] == beat["events"], r
        assert r["shape"] == "chunk" and r["workers"] == 1
        # the worker's CPU between its first and last output (None when a tiny run's outputs
        # all came in one batch: there is no interval to measure)
        assert r["cpu_us_per_sample"] is None or r["cpu_us_per_sample"] >= 0, r
    assert beat["ratio"] == round(beat["B"] / beat["A"], 3) and len(beat["pairs"]) == 2
    report = (out / "latest.md").read_text()
    assert "**Beat path**" in report and f"B/A = {beat['ratio']:,.3f}" in report
