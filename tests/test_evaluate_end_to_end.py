"""``seqstream evaluate`` at a tiny size, end to end on the real stack: a tiny `ecg` model,
two MIT-BIH records it never saw streamed through a spawned ``seqstream worker`` on the real
Kafka and Redis, every baseline, the report, the plots and the README section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb

from seqstream.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["--model-hidden-size", "8", "--data-max-windows", "96", "--train-max-epochs", "1",
        "--train-limit-train-batches", "3", "--train-limit-val-batches", "2",
        "--train-progress-bar", "false", "--train-threads", "1", "--data-entities", "106"]
RECORDS = ("200", "232")  # bundled DS2 records, never trained on, with VEB and SVEB early on
MINUTES = 0.5
WARMUP = 360


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "artifact"
    assert main(["train", "--config", "ecg-bundled", "--output", str(out), *TINY]) == 0
    return out


def _abnormal_beats(path: Path, n: int) -> int:
    """AAMI SVEB/VEB/F beats of a record's first ``n`` samples whose half-RR window starts past
    the warm-up, counted straight from the annotation file."""
    ann = wfdb.rdann(str(path), "atr")
    beats = [(s, sym) for s, sym in zip(ann.sample, ann.symbol, strict=True)
             if sym in "NLRBAaJSVrFejnE/fQ?" and s < n]
    count = 0
    for i, (s, sym) in enumerate(beats):
        start = 0 if i == 0 else (beats[i - 1][0] + s) // 2
        count += start >= WARMUP and sym in "AaJSVEF"
    return count


@pytest.mark.integration
@pytest.mark.slow
def test_evaluate_streams_unseen_records_and_writes_the_report(
        tiny_model: Path, tmp_path: Path, bundled_data: Path) -> None:
    readme = tmp_path / "README.md"
    original = (REPO / "README.md").read_text()
    readme.write_text(original)
    out = tmp_path / "evaluate"
    code = main(["evaluate", "--model", str(tiny_model), "--test-data",
                 str(bundled_data / "mitdb"), "--entities", ",".join(RECORDS), "--minutes",
                 str(MINUTES), "--warmup", str(WARMUP), "--out", str(out), "--jobs", "2",
                 "--plots", "2", "--readme", str(readme)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    card = json.loads((tiny_model / "card.json").read_text())
    n = round(MINUTES * 60 * 360)

    # the live stream answered every sample, as the offline replay does, with this model
    live = report["live"]
    assert live["passed"] and live["received"] == live["samples"] == len(RECORDS) * n
    assert live["model_ids"] == [card["model_id"]]
    assert live["max_abs_diff_forecast"] <= 1e-5

    # every detector under both threshold rules; ours at the card's threshold
    dets = report["detectors"]
    # the ecg card scales per entity (score.entity_scale), so the worker does and ``seqstream``
    # is the scaled network; the same network without it is shown as ``seqstream_unscaled``
    assert "entity_scale" in card["score"]
    assert set(dets) == {"seqstream", "seqstream_unscaled", "persistence_z",
                         "persistence_z_entity", "rolling_z", "rolling_z_entity", "hst", "pad"}
    assert dets["seqstream"]["scores_from"] == "the live stream"
    assert dets["seqstream"]["calibrated"]["threshold"] == card["threshold"]["value"]
    want = sum(_abnormal_beats(bundled_data / "mitdb" / r, n) for r in RECORDS)
    assert want > 0 and report["data"]["events"] == want
    for name, det in dets.items():
        for rule in ("calibrated", "best_f1"):
            m = det[rule]["all"]
            assert m["events"] == want, name
            assert 0 <= m["false_alarms"] <= m["alarms"] and 0 <= m["detected"] <= want
            assert m["f1"] is None or 0.0 <= m["f1"] <= 1.0
            assert set(det[rule]["per_series"]) == set(RECORDS)
    f = report["forecast"]
    assert f["n"] == len(RECORDS) * (n - WARMUP) and np.isfinite(f["mase"])

    # outputs: markdown table, PNG plots, the README section and nothing else of the README
    md = (out / "report.md").read_text()
    assert "| detector | threshold (rule) |" in md and "River HalfSpaceTrees" in md
    assert {p["file"] for p in report["plots"]} == {f"{r}.png" for r in RECORDS}
    for r in RECORDS:
        assert (out / "plots" / f"{r}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    assert f"Model `{card['model_id'][:12]}`" in text.split("## Quality", 1)[1]
    before = original.split("## Quality")[0] if "## Quality" in original else original
    assert text.startswith(before.rstrip("\n"))
