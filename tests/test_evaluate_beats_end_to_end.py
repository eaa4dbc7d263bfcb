"""``seqstream evaluate --test-data DIR --minutes 0`` on a folder of WFDB records that is not
MIT-BIH's own: two minutes of bundled DS2 records 200 and 232 written as new records, a tiny
`ecg-bundled` forecaster (trained on DS1 record 106) with a seeded (untrained) beat stage,
streamed through a spawned worker on the real Kafka and Redis; the worker's beat records equal
the offline beat stage's, one ``beats/<record>.csv`` per record holds exactly those beats, and
the report has the beat table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import wfdb

from seqstream.cli import main
from seqstream.evaluation.beateval import CSV_COLUMNS
from seqstream.evaluation.ec57 import score
from stream.artifact import load_artifact, save_artifact
from stream.beatnet import BeatNet
from stream.beats import FEATURES, BeatFeatures, BeatStage, offline_beats
from stream.offline import replay_many
from training.sources import BUNDLED_MITDB

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = ["--model-hidden-size", "8", "--data-max-windows", "96", "--train-max-epochs", "1",
        "--train-limit-train-batches", "3", "--train-limit-val-batches", "2",
        "--train-progress-bar", "false", "--train-threads", "1", "--data-entities", "106"]
SECONDS = 120
WARMUP = 360


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    """The tiny forecaster with a seeded beat network (threshold 0.5) on lead MLII."""
    work = tmp_path_factory.mktemp("beats")
    assert main(["train", "--config", "ecg-bundled", "--output", str(work / "plain"), *TINY]) == 0
    art = load_artifact(work / "plain")
    card = {k: v for k, v in art.card.items()
            if k not in ("architecture", "model_id", "format", "created_at")}
    card["beats"] = {"lead": "MLII"}
    torch.manual_seed(7)
    stage = BeatStage(BeatFeatures(360.0), BeatNet(len(FEATURES), hidden_size=8, embed_size=8),
                      np.zeros(len(FEATURES)), np.ones(len(FEATURES)), 0.5)
    save_artifact(art.model, card, work / "model", beats=stage)
    return work / "model"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Records ``x200`` and ``x232``: the first two minutes of the bundled ones (digital
    samples and annotations copied), under names MIT-BIH does not use."""
    out = tmp_path_factory.mktemp("wfdb")
    n = SECONDS * 360
    for rec in ("200", "232"):
        r = wfdb.rdrecord(str(BUNDLED_MITDB / rec), sampto=n, physical=False)
        wfdb.wrsamp(f"x{rec}", fs=r.fs, units=r.units, sig_name=r.sig_name,
                    d_signal=r.d_signal, fmt=r.fmt, adc_gain=r.adc_gain, baseline=r.baseline,
                    write_dir=str(out))
        a = wfdb.rdann(str(BUNDLED_MITDB / rec), "atr", sampto=n - 1)
        wfdb.wrann(f"x{rec}", "atr", a.sample, a.symbol, aux_note=a.aux_note,
                   write_dir=str(out))
    return out


def test_evaluate_writes_one_beats_csv_per_record_and_the_beat_table(
        artifact: Path, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "evaluate"
    assert main(["evaluate", "--model", str(artifact), "--test-data", str(folder),
                 "--minutes", "0", "--warmup", str(WARMUP), "--live", "spawn",
                 "--baselines", "persistence_z", "--jobs", "1", "--plots", "1",
                 "--out", str(out)]) == 0
    art = load_artifact(artifact)
    report = json.loads((out / "report.json").read_text())
    beats = report["beats"]
    assert set(beats["per_record"]) == {"x200", "x232"}
    live = report["live"]
    assert live["passed"] and live["beats"]["passed"]
    assert live["beats"]["beats"] == sum(len(list(csv.reader((out / "beats" / f"{r}.csv").open())))
                                         - 1 for r in ("x200", "x232"))
    qrs_tp = 0
    for rec in ("x200", "x232"):
        rows = list(csv.reader((out / "beats" / f"{rec}.csv").open()))
        assert tuple(rows[0]) == CSV_COLUMNS
        # the same beats as the offline beat stage on the lead, residuals = the streamed scores
        signal = wfdb.rdrecord(str(folder / rec), channel_names=["MLII"]).p_signal[:, 0]
        # what the worker feeds the beat stage: its own scores (the offline replay's, to 1e-5)
        scores = replay_many(art, [signal[:, None]])[0].scores
        want = offline_beats(art.beats, signal, scores)
        assert len(rows) - 1 == len(want) > 100
        for row, b in zip(rows[1:], want, strict=True):
            assert int(row[0]) == b.sample and float(row[1]) == b.sample * art.card["period_s"]
            assert (float(row[2]) if row[2] else None) == b.rr_s
            assert row[3] == b.cls and float(row[4]) == b.p_abnormal
            assert row[5] == str(int(b.anomaly))
        # QRS counts: the CSV's R peaks against the annotation file, past the warm-up
        ann = wfdb.rdann(str(folder / rec), "atr")
        ref = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True)
                        if sym in "NLRBAaJSVrFejnE/fQ?" and s >= WARMUP])
        det = np.array([int(r[0]) for r in rows[1:]])
        s = score(ref, det[det >= WARMUP], fs=360.0)
        got = beats["per_record"][rec]["qrs"]
        assert (got["tp"], got["fn"], got["fp"]) == (s.tp, s.fn, s.fp)
        qrs_tp += s.tp
    stage = beats["detectors"]["seqstream_beats"]
    assert stage["qrs"]["tp"] == qrs_tp
    assert stage["abnormal"]["tp"] + stage["abnormal"]["fn"] == sum(
        r["counts"]["SVEB"] + r["counts"]["VEB"] + r["counts"]["F"]
        for r in beats["per_record"].values())
    # every sample-level detector, under both rules, is scored on the same detected beats
    assert {k.split(":")[0] for k in beats["detectors"]} >= {"seqstream", "persistence_z"}
    md = (out / "report.md").read_text()
    assert "| beat classifier | Se | +P | F1 |" in md and "| x232 |" in md
    assert (out / "plots" / "x232-beats.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

