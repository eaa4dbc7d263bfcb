"""``seqstream demo`` end to end on the real stack, at a tiny size: every published sample comes
back predicted, the beats are scored (with a beat model: the beat records, per patient), the plot
is written, and the stack is left as found."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from streamkit import beat_stage, free_port, make_artifact

from training.sources import BUNDLED_MITDB, load_wfdb

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_predicts_every_sample_scores_beats_and_leaves_the_stack_running(tmp_path):
    model = make_artifact(tmp_path / "model", n_features=1, horizon=1, threshold=3.0)
    out = tmp_path / "out"
    env = {**os.environ, "SEQSTREAM_METRICS_PORT": str(free_port()),
           "SEQSTREAM_APP_ID": f"demo-test-{tmp_path.name}"}
    done = subprocess.run([sys.executable, "-m", "seqstream", "demo", "--model", str(model),
                           "--seconds", "4", "--patients", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples_published"] > 3 * 360  # > 1 s of ECG per patient
    assert summary["samples_predicted"] == summary["samples_published"]
    assert {row["record"] for row in summary["patients"]} == {"100", "200", "232"}  # DS2
    assert sum(row["samples"] for row in summary["patients"]) == summary["samples_published"]
    assert (out / "ecg.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "abnormal beats (AAMI SVEB/VEB/F) caught" in done.stdout
    status = subprocess.run([sys.executable, "-m", "seqstream", "stack", "status"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, "the demo stopped stack parts it did not start"


def test_demo_with_a_beat_model_reads_the_beat_records_and_scores_them_per_patient(tmp_path):
    leads = [s.values[:120 * 360, 0] for s in load_wfdb(BUNDLED_MITDB, ["200", "232"], ["MLII"])]
    model = make_artifact(tmp_path / "model", n_features=1, horizon=1, threshold=3.0,
                          beats=beat_stage(leads))
    out = tmp_path / "out"
    env = {**os.environ, "SEQSTREAM_METRICS_PORT": str(free_port()),
           "SEQSTREAM_APP_ID": f"demo-test-{tmp_path.name}",
           "SEQSTREAM_TOPIC_BEATS": f"demo-test-{tmp_path.name}.beats"}
    done = subprocess.run([sys.executable, "-m", "seqstream", "demo", "--model", str(model),
                           "--seconds", "8", "--patients", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    beats = json.loads((out / "summary.json").read_text())["beat_records"]
    assert {row["record"] for row in beats["patients"]} == {"100", "200", "232"}
    for row in beats["patients"]:
        # a beat about every 0.4-1.5 s in these records; the first second is warm-up
        assert row["detected"] > 0 and sum(row["called"].values()) == row["detected"]
        assert 0 <= row["caught"] <= row["abnormal"] and row["flagged"] >= row["false_flags"]
    q = beats["pooled"]["qrs"]
    assert q["tp"] + q["fn"] == sum(row["reference"] for row in beats["patients"])
    assert "beat records (seqstream.beats), matched" in done.stdout
