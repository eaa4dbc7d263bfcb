"""``seqstream train --config ecg`` at a tiny size trains both parts on DS1 records and exports one
artifact whose beat stage loads and classifies a record, in a process without Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seqstream.cli import main
from stream.artifact import CARD, load_artifact
from training.beats import DS1, DS2, train_beat_stage

TINY = ["--data-entities", "106", "--model-hidden-size", "8", "--data-max-windows", "96",
        "--train-max-epochs", "1", "--train-limit-train-batches", "3",
        "--train-limit-val-batches", "2", "--train-progress-bar", "false",
        "--train-threads", "1", "--beats-train-records", "124,223",
        "--beats-val-records", "215", "--beats-cv-folds", "0", "--beats-epochs", "2",
        "--beats-hidden-size", "8", "--beats-embed-size", "8"]


@pytest.mark.slow
def test_tiny_ecg_training_exports_a_beat_stage(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "artifact"
    mitdb = str(shared_data / "mitdb")
    assert main(["train", "--config", "ecg", "--output", str(out), "--data-path", mitdb,
                 "--beats-path", mitdb, *TINY]) == 0
    card = json.loads((out / CARD).read_text())
    beats = card["beats"]
    assert beats["lead"] == "MLII" and beats["classes"] == ["N", "S", "V", "F"]
    assert beats["data"]["train_records"] == ["124", "223"]
    assert beats["data"]["val_records"] == ["215"]
    assert set(beats["data"]["train_records"] + beats["data"]["val_records"]) <= set(DS1)
    assert not set(card["data"]["entities"]) & set(DS2)
    assert 0.0 < beats["threshold"]["value"] < 1.0
    val = beats["metrics"]["validation"]["V"]
    assert val["tp"] + val["fn"] > 0  # record 215 has VEBs to score
    art = load_artifact(out)
    assert art.beats is not None and art.beats.threshold == beats["threshold"]["value"]
    # the worker's side loads it without Lightning and classifies a record's first minute
    code = ("import sys, numpy as np, wfdb; from stream.artifact import load_artifact; "
            "from stream.beats import offline_beats; "
            f"art = load_artifact({str(out)!r}); "
            f"rec = wfdb.rdrecord({mitdb + '/215'!r}, sampto=21600, channel_names=['MLII']); "
            "beats = offline_beats(art.beats, rec.p_signal[:, 0]); "
            "assert 'pytorch_lightning' not in sys.modules; "
            "assert {b.cls for b in beats} <= {'N', 'S', 'V', 'F'}; print(len(beats))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert int(done.stdout) > 60  # record 215 runs at ~110 beats per minute


@pytest.mark.slow
def test_cross_validation_picks_the_epochs_and_threshold_then_refits_on_all(
        shared_data: Path) -> None:
    records = ["124", "215", "223"]  # any two of them hold beats of every class
    stage, section = train_beat_stage(shared_data / "mitdb", records, [], epochs=2,
                                      hidden_size=8, embed_size=8, cv_folds=3, log=lambda m: None)
    cv = section["cross_validation"]
    assert sorted(r for fold in cv["folds"] for r in fold) == records
    assert [r["epoch"] for r in cv["per_epoch"]] == [1, 2]
    chosen = cv["per_epoch"][cv["chosen_epoch"] - 1]
    assert chosen["abnormal_f1"] == max(r["abnormal_f1"] for r in cv["per_epoch"])
    assert stage.threshold == section["threshold"]["value"] == chosen["threshold"]
    assert section["training"]["epochs"] == cv["chosen_epoch"]
    assert section["data"]["train_records"] == records and section["data"]["val_records"] == []
    assert section["metrics"]["cross_validation"]["abnormal"]["f1"] == chosen["abnormal_f1"]
    # the same out-of-fold predictions without the rhythm rule, for comparison
    plain = cv["without_rhythm_rule"]
    assert plain["chosen_epoch"] in (1, 2) and 0.0 < plain["threshold"] < 1.0
    assert "abnormal" in section["metrics"]["cross_validation_without_rhythm_rule"]
    rhythm = section["rhythm"]
    assert rhythm["irregular_beats_per_training_record"]["223"] > 0  # its runs of ventricular beats
    assert 0.0 < rhythm["irregular_share_of_training_beats"] < 0.2
