"""What the beat path costs the worker: (c) on chunks with and without a beat stage, one run.

Issue #16 allows the beat path (QRS detection, beat features and the beat network, once per
beat) at most 15 % of the chunked rate per worker process. ``seqstream bench --beats N`` measures
it on the chunk shape at the base entity count, with the same events for both artifacts:

- A: the benchmark's artifact (:func:`seqstream.bench.model.make_artifact`, or ``--model``);
- B: A plus a seeded, untrained beat stage on its first lead: the real QRS detector and
  features, a hidden-32 beat network normalised on the benchmark's ECG, its threshold at the
  90th percentile of that ECG's ``p_abnormal`` so that about a tenth of the beats are flagged
  (as in MIT-BIH) and go to the anomalies topic too.

The runs alternate A B A B … (``N`` of each), so a drift in the shared machine's load falls on
both; the 1-minute load average is recorded before each run. The reported ratio is
``median(B) / median(A)`` of the chunk samples/s, beside each adjacent pair's ratio. When other
jobs share the CPUs, wall-clock rates mostly measure the scheduler, so the worker's own CPU time
per sample (:attr:`seqstream.bench.measure.Run.cpu_us_per_sample`) is compared too:
``cpu_ratio = median(A's) / median(B's)`` is the rate ratio one free core would give.

>>> s = summary([{"artifact": "A", "samples_per_s": 100.0, "cpu_us_per_sample": 2.0},
...              {"artifact": "B", "samples_per_s": 80.0, "cpu_us_per_sample": 2.5},
...              {"artifact": "A", "samples_per_s": 120.0, "cpu_us_per_sample": 2.2},
...              {"artifact": "B", "samples_per_s": 90.0, "cpu_us_per_sample": 2.5}])
>>> s["A"], s["B"], s["ratio"], s["pairs"]
(110.0, 85.0, 0.773, [0.8, 0.75])
>>> s["cpu_A"], s["cpu_B"], s["cpu_ratio"]
(2.1, 2.5, 0.84)
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stream.artifact import CARD, load_artifact, save_artifact
from stream.beatnet import BeatNet
from stream.beats import FEATURES, BeatFeatures, BeatStage, offline_beats

__all__ = ["compare", "make_beat_artifact", "summary"]

FIT_S = 60.0  # seconds of each record the beat stage is normalised and thresholded on
FLAGGED = 0.1  # share of beats above the threshold


def make_beat_artifact(base: Path, directory: Path,
                       series: list[tuple[str, np.ndarray, float]]) -> str:
    """Export ``base``'s forecaster with a seeded beat stage on its first lead (B above) to
    ``directory``; return its model id."""
    art = load_artifact(base)
    card = json.loads((base / CARD).read_text())
    for key in ("format", "created_at", "architecture", "model_id"):
        card.pop(key, None)
    fs = 1.0 / float(card["period_s"])
    leads = [v[:round(FIT_S * fs), 0] for _, v, _ in series]
    torch.manual_seed(0)
    feats = BeatFeatures(fs)
    rows = np.concatenate([np.stack([b.features for b in feats.extract(feats.initial(1), [x])[0]])
                           for x in leads])
    stage = BeatStage(feats, BeatNet(len(FEATURES), hidden_size=32), rows.mean(0),
                      np.maximum(rows.std(0), 1e-6), 0.5)
    p = [b.p_abnormal for x in leads for b in offline_beats(stage, x)]
    stage.threshold = float(np.quantile(p, 1.0 - FLAGGED))
    card["beats"] = {"lead": card["features"][0]["name"]}
    card["data"] = {**card.get("data", {}), "note": "bench: untrained seeded weights (forecaster "
                    "and beat stage); for speed measurements only"}
    return save_artifact(art.model, card, directory, beats=stage)


async def compare(run_one: Callable[[Path], Awaitable[dict[str, Any]]], without: Path,
                  with_beats: Path, repeats: int) -> list[dict[str, Any]]:
    """``repeats`` runs of each artifact, alternated A B A B …; each run's figures with the
    artifact's letter and the load average before it."""
    runs = []
    for _ in range(repeats):
        for letter, model in (("A", without), ("B", with_beats)):
            load = os.getloadavg()[0]
            runs.append({"artifact": letter, "load_before": round(load, 2),
                         **await run_one(model)})
    return runs


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median samples/s of A and B, their ratio, each adjacent A B pair's ratio, and the same
    from the worker's CPU microseconds per sample."""
    def median(key: str, x: str) -> float | None:
        v = [r[key] for r in runs if r["artifact"] == x and r.get(key)]
        return round(float(np.median(v)), 4) if v else None

    rate = {x: [r["samples_per_s"] for r in runs if r["artifact"] == x] for x in "AB"}
    a, b = median("samples_per_s", "A"), median("samples_per_s", "B")
    pairs = [round(y / x, 3) for x, y in zip(rate["A"], rate["B"], strict=False) if x and y]
    ca, cb = median("cpu_us_per_sample", "A"), median("cpu_us_per_sample", "B")
    return {"A": a, "B": b, "ratio": round(b / a, 3) if a and b else None, "pairs": pairs,
            "cpu_A": ca, "cpu_B": cb, "cpu_ratio": round(ca / cb, 3) if ca and cb else None}
