"""``seqstream evaluate --test-data DIR`` on folders in SKAB's and NAB's own layouts, at a tiny
size, end to end: a tiny network with the sensor score trained on SKAB's anomaly-free file only,
two real SKAB experiments and two real NAB series; the per-series CSVs another harness reads
(SKAB's: the alarms of the card's worker's flags), and the report's figures equal to the
benchmarks' scorers run again on those CSVs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqstream.cli import main
from seqstream.evaluation.benchmark import pseudo_experiments
from seqstream.evaluation.nab_score import (
    PROFILES,
    normalised,
    probation_rows,
    score_series,
    windows_from_stamps,
)
from seqstream.evaluation.skab_score import changepoint_score, outlier_counts
from stream.artifact import load_artifact
from stream.offline import replay
from stream.sensor_score import SensorScore
from training.sources import SKAB_FEATURES

SKAB_FILES = ("valve1/3.csv", "other/12.csv")
NAB_FILES = ("realKnownCause/ambient_temperature_system_failure.csv",
             "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv")
TINY = ["--model-hidden-size", "8", "--train-max-epochs", "1", "--train-limit-train-batches",
        "5", "--train-limit-val-batches", "2", "--train-progress-bar", "false",
        "--train-threads", "1"]


def _copy(src: Path, dst: Path, names) -> None:
    for name in names:
        (dst / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / "data" / name, dst / "data" / name)


def _csv(out: Path, name: str) -> pd.DataFrame:
    frame = pd.read_csv(out / "series" / name.replace("/", "__"))
    assert list(frame.columns) == ["row", "score", "anomaly"]
    assert frame["row"].tolist() == list(range(len(frame)))
    assert set(frame["anomaly"].unique()) <= {0, 1}
    return frame


@pytest.mark.slow
def test_skab_folder_end_to_end(tmp_path, shared_data, capsys) -> None:
    data = tmp_path / "skab"
    _copy(shared_data / "skab", data, ("anomaly-free/anomaly-free.csv", *SKAB_FILES))
    model = tmp_path / "net"
    assert main(["train", "--config", "skab", "--output", str(model), "--data-path", str(data),
                 "--data-entities", "anomaly-free/anomaly-free.csv", "--data-split",
                 "0.7,0.15,0.15", "--calibration-sensor-warmup", "400",
                 "--calibration-sensor-mean-shift", "true", "--calibration-sensor-shrinkage",
                 "0.25", *TINY]) == 0
    art = load_artifact(model)
    assert art.sensor is not None and art.sensor.mean_shift and art.sensor.shrinkage == 0.25
    out = tmp_path / "out"
    assert main(["evaluate", "--test-data", str(data), "--model", str(model), "--out",
                 str(out)]) == 0
    assert "SKAB: outlier F1" in capsys.readouterr().out
    assert sorted(p.name for p in (out / "series").iterdir()) == ["other__12.csv",
                                                                    "valve1__3.csv"]
    truth, flags, times, cps = [], [], [], []
    for name in sorted(SKAB_FILES):
        src = pd.read_csv(data / "data" / name, sep=";")
        got = _csv(out, name)
        assert len(got) == len(src)
        assert not got["anomaly"][:400].any(), "no flag in the anomaly-free reference"
        assert got["score"][:400].isna().all() and got["score"][401:].notna().all()
        truth.append(src["anomaly"].to_numpy())
        cps.append(src["changepoint"].to_numpy())
        stamps = pd.to_datetime(src["datetime"])
        times.append((stamps - stamps.iloc[0]).dt.total_seconds().to_numpy())
        flags.append(got["anomaly"].to_numpy())
        # the rows in an alarm of the worker's flags for this card (its offline replay's:
        # tests/test_sensor_stream_matches_offline, the worker equals it): a flag in the last
        # hold samples
        want = replay(art, src[[f for f, _ in SKAB_FEATURES]].to_numpy()).scores
        worker_flags = np.nan_to_num(want, nan=0.0) > art.card["score"]["sensor"]["margin"]
        hold = int(max(art.card["score"]["sensor"]["half_lives"]))
        held = np.convolve(worker_flags, np.ones(hold), mode="full")[:len(want)] > 0
        assert np.array_equal(got["anomaly"].to_numpy() == 1, held)
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "skab" and report["series"] == 2
    o = report["metrics"]["outlier"]
    again = outlier_counts(truth, flags).summary()
    assert (o["tp"], o["fp"], o["fn"], o["tn"]) == (again["tp"], again["fp"], again["fn"],
                                                    again["tn"])
    assert o["tp"] + o["fp"] + o["fn"] + o["tn"] == sum(len(t) for t in truth)
    cp = changepoint_score(times, cps, flags)
    for k, v in cp.items():
        assert report["metrics"]["changepoint_nab"][k] == pytest.approx(v)
    md = (out / "report.md").read_text()
    assert "Conv-AE (leaderboard) | 0.79" in md


@pytest.mark.slow
def test_nab_folder_end_to_end(tmp_path, shared_data, capsys) -> None:
    data = tmp_path / "nab"
    _copy(shared_data / "nab", data, NAB_FILES)
    windows = json.loads((shared_data / "nab" / "labels" / "combined_windows.json").read_text())
    (data / "labels").mkdir()
    (data / "labels" / "combined_windows.json").write_text(
        json.dumps({n: windows[n] for n in NAB_FILES}))
    out = tmp_path / "out"
    assert main(["evaluate", "--test-data", str(data), "--out", str(out)]) == 0
    assert "NAB: standard" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "nab" and report["series"] == 2
    per = {p.name: [] for p in PROFILES}
    for name in NAB_FILES:
        src = pd.read_csv(data / "data" / name)
        got = _csv(out, name)
        assert len(got) == len(src)
        p = probation_rows(len(src))
        assert not got["anomaly"][:p].any(), "no flag in the probationary period"
        rows = windows_from_stamps(src["timestamp"], windows[name])
        for profile in PROFILES:
            per[profile.name].append(score_series(got["anomaly"].to_numpy(), rows, profile))
    for profile in PROFILES:
        assert report["metrics"][profile.name] == pytest.approx(normalised(per[profile.name]))
    assert np.isfinite(report["metrics"]["standard"])


def test_sensor_score_options_reach_the_benchmark(tmp_path, shared_data, capsys) -> None:
    # --sensor-score: the NAB onsets are those of the score with these options, which the
    # report names; unknown options are refused
    name = NAB_FILES[0]
    data = tmp_path / "nab"
    _copy(shared_data / "nab", data, [name])
    windows = json.loads((shared_data / "nab" / "labels" / "combined_windows.json").read_text())
    (data / "labels").mkdir()
    (data / "labels" / "combined_windows.json").write_text(json.dumps({name: windows[name]}))
    out = tmp_path / "out"
    assert main(["evaluate", "--test-data", str(data), "--out", str(out), "--sensor-score",
                 '{"mean_shift": true, "flagged_adapt_half_life": 60}']) == 0
    report = json.loads((out / "report.json").read_text())
    assert "MEWMA on" in report["detector"] and "(flagged: 60)" in report["detector"]
    src = pd.read_csv(data / "data" / name)
    cfg = SensorScore(warmup=probation_rows(len(src)), mean_shift=True,
                      flagged_adapt_half_life=60.0)
    want = cfg.run(src[["value"]].to_numpy(np.float64)).onsets
    assert np.array_equal(_csv(out, name)["anomaly"].to_numpy() == 1, want)
    assert main(["evaluate", "--test-data", str(data), "--out", str(out), "--sensor-score",
                 '{"bogus": 1}']) != 0
    assert "--sensor-score: expected SensorScore's fields" in capsys.readouterr().err


def test_pseudo_experiments_count_the_flags_of_the_anomaly_free_run(tmp_path) -> None:
    # 4600 rows: pieces at 0, 575, ..., 3450 (7); white noise flags little; noise 3 times
    # as strong from row 2700 on is flagged in the two pieces whose warm-ups end before it
    rng = np.random.default_rng(0)
    features = [f for f, _ in SKAB_FEATURES]
    values = rng.normal(size=(4600, len(features)))
    (tmp_path / "data" / "anomaly-free").mkdir(parents=True)
    frame = pd.DataFrame(values, columns=features)
    frame.insert(0, "datetime", pd.date_range("2020-01-01", periods=len(frame), freq="s"))
    frame.to_csv(tmp_path / "data" / "anomaly-free" / "anomaly-free.csv", sep=";", index=False)
    quiet = pseudo_experiments(tmp_path)
    assert quiet["pieces"] == 7 and quiet["flagged_pct"] < 2.0
    frame.loc[2700:, features] *= 3.0
    frame.to_csv(tmp_path / "data" / "anomaly-free" / "anomaly-free.csv", sep=";", index=False)
    assert pseudo_experiments(tmp_path)["flagged_pct"] > 10 * quiet["flagged_pct"] + 5
