"""``seqstream train --config ecg-bundled`` at a tiny size: artifact, report and plot are
written, and the artifact loads and replays in a process that never imports Lightning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seqstream.cli import main
from stream.artifact import CARD, WEIGHTS, load_artifact
from stream.offline import replay
from training.sources import BUNDLED_MITDB, load_wfdb

TINY = ["--model-hidden-size", "8", "--data-max-windows", "96", "--train-max-epochs", "2",
        "--train-limit-train-batches", "3", "--train-limit-val-batches", "2",
        "--train-progress-bar", "false", "--train-threads", "1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ecg") / "artifact"
    assert main(["train", "--config", "ecg-bundled", "--output", str(out), *TINY]) == 0
    return out


@pytest.mark.slow
def test_ecg_config_writes_artifact_report_and_plot(trained: Path) -> None:
    for name in (CARD, WEIGHTS, "report.json", "plot.png"):
        assert (trained / name).is_file() and (trained / name).stat().st_size > 0
    assert (trained / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((trained / "report.json").read_text())
    card = json.loads((trained / CARD).read_text())
    assert report["model_id"] == card["model_id"]
    assert card["data"]["path"] == "bundled:mitdb"  # the ecg-bundled config needs no ../shared
    # the bundled DS1 records only: 100, 200 and 232 are DS2, kept for the demo to replay
    assert card["data"]["entities"] == ["106", "215"]
    assert {"106", "215"} < {p.stem for p in BUNDLED_MITDB.glob("*.hea")}
    assert card["features"] == [{"name": "MLII", "unit": "mV"}]
    assert card["period_s"] == pytest.approx(1 / 360)
    assert card["score"]["kind"] == "rms_z" and len(card["score"]["residual_scale"]) == 1
    assert card["threshold"]["method"] in ("pot", "quantile") and card["threshold"]["value"] > 0
    forecast = report["metrics"]["forecast"]
    assert forecast["n"] > 0 and np.isfinite(forecast["mase"])
    flags = report["metrics"]["flags"]
    assert flags["unit"] == "beat" and flags["positives"] > 0
    assert report["replay_check_max_abs_diff"] <= 1e-5


@pytest.mark.slow
def test_card_scores_reproduce_from_the_artifact_alone(trained: Path) -> None:
    """The card's residual_scale and threshold, applied by stream.offline to the test part,
    give the report's flag count: nothing in evaluation is hidden from the worker."""
    art = load_artifact(trained)
    report = json.loads((trained / "report.json").read_text())
    series = load_wfdb(BUNDLED_MITDB, leads=["MLII"])
    train, val, _ = art.card["data"]["split"]
    flagged = 0
    for s in series:
        a = round(len(s.values) * train)
        b = round(len(s.values) * (train + val))
        scores = np.full(len(s.values), np.nan)
        scores[a:] = replay(art, s.values[a:]).scores
        mids = (s.beats.samples[:-1] + s.beats.samples[1:]) // 2
        starts, ends = np.concatenate([[0], mids]), np.concatenate([mids, [len(s.values)]])
        for i in np.nonzero((s.beats.samples >= b) & (s.beats.labels >= 0))[0]:
            window = scores[max(starts[i], b):ends[i]]
            flagged += bool(np.nanmax(window) > art.threshold)
    assert flagged == report["metrics"]["flags"]["flagged"]


@pytest.mark.slow
def test_artifact_loads_and_replays_without_lightning(trained: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from stream.artifact import load_artifact\n"
        "from stream.offline import replay\n"
        f"art = load_artifact({str(trained)!r})\n"
        "out = replay(art, np.zeros((100, 1)) - 0.3)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'training', 'lightning_fabric'))\n"
        "print(art.model_id, out.forecasts.shape, bad)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    card = json.loads((trained / CARD).read_text())
    assert out.stdout.strip() == f"{card['model_id']} (100, 1, 1) []"
