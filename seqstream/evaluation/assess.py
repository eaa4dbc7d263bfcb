"""From per-sample scores to the report's numbers: thresholds on validation, metrics on test.

For each detector: both threshold rules of :mod:`seqstream.evaluation.thresholds` on the validation
series, then on the test series (samples before ``warmup`` never flag, and beats or windows that
start in it, or before a series' ``start``, are left out, for every detector alike):
precision, recall, F1, false flags per hour and detection delay, pooled over the test series,
for all anomalies together and (ECG) per AAMI class; ROC-AUC and PR-AUC of the score over
beats (windows: samples); and F1 per test series. For the network, the *calibrated*
threshold is the card's own (the one the worker flags with).

>>> from seqstream.evaluation.labels import Labels
>>> lab = Labels.from_beats([400, 800, 1200], ["N", "VEB", "N"])
>>> s = np.zeros(1500); s[790:800] = 9.0
>>> out = detector_metrics("beats", [s], [lab], threshold=5.0, period_s=1 / 360, warmup=360)
>>> out["all"]["f1"], out["per_class"]["VEB"]["recall"], out["roc_auc"]
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from seqstream.evaluation.dataset import EvalData, normal_mask
from seqstream.evaluation.labels import Labels
from seqstream.evaluation.metrics import (
    ABNORMAL,
    Detection,
    ForecastErrors,
    average_precision,
    beat_detection,
    beat_scores,
    beat_windows,
    forecast_errors,
    roc_auc,
    window_detection,
)
from seqstream.evaluation.runner import OURS, Scores
from seqstream.evaluation.thresholds import best_f1_beats, best_f1_windows, calibrated, flags_of

__all__ = ["RULES", "assess_detector", "detector_metrics", "forecast_section", "validation_units"]

RULES = ("calibrated", "best_f1")


def _kept_beats(labels: Labels, n: int, warmup: int) -> np.ndarray:
    lo, _ = beat_windows(labels.r_peaks, n)
    return lo >= warmup


def validation_units(kind: str, scores: Sequence[np.ndarray], labels: Sequence[Labels],
                     warmup: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Beat scores and classes of the validation beats past the warm-up (ECG)."""
    if kind != "beats":
        return [], []
    bs, cs = [], []
    for s, lab in zip(scores, labels, strict=True):
        keep = _kept_beats(lab, len(s), warmup)
        bs.append(beat_scores(s, lab.r_peaks)[keep])
        cs.append(lab.classes[keep])
    return bs, cs


def _detections(kind: str, flags: list[np.ndarray], labels: Sequence[Labels], period_s: float,
                starts: Sequence[int], positive: Sequence[str] = ABNORMAL) -> list[Detection]:
    if kind == "beats":
        return [beat_detection(f, lab.r_peaks, lab.classes, period_s, positive, a)
                for f, lab, a in zip(flags, labels, starts, strict=True)]
    return [window_detection(f, lab.windows, period_s, a)
            for f, lab, a in zip(flags, labels, starts, strict=True)]


def detector_metrics(kind: str, scores: Sequence[np.ndarray], labels: Sequence[Labels],
                     threshold: float, period_s: float, warmup: int,
                     names: Sequence[str] | None = None,
                     starts: Sequence[int] | None = None) -> dict[str, Any]:
    """Every test metric of one detector at one threshold. Flags start after ``warmup``
    samples of each streamed series; metrics count from ``max(warmup, starts[i])``."""
    starts = [max(warmup, a) for a in (starts or [0] * len(scores))]
    flags = [flags_of(s, threshold, warmup) for s in scores]
    per = _detections(kind, flags, labels, period_s, starts)
    out: dict[str, Any] = {"threshold": threshold, "all": Detection.pool(per).summary()}
    units, truth = [], []
    if kind == "beats":
        out["per_class"] = {c: Detection.pool(_detections(kind, flags, labels, period_s, starts,
                                                          (c,))).summary() for c in ABNORMAL}
        for s, lab, a in zip(scores, labels, starts, strict=True):
            keep = _kept_beats(lab, len(s), a) & np.isin(lab.classes, [*ABNORMAL, "N"])
            units.append(beat_scores(s, lab.r_peaks)[keep])
            truth.append(np.isin(lab.classes[keep], ABNORMAL))
    else:
        for s, lab, a in zip(scores, labels, starts, strict=True):
            units.append(np.asarray(s)[a:])
            truth.append(~normal_mask(lab, len(s))[a:])
    u, y = np.concatenate(units), np.concatenate(truth)
    out["roc_auc"] = roc_auc(u, y)
    out["pr_auc"] = average_precision(u, y)
    out["prevalence"] = float(y.mean()) if len(y) else math.nan
    if names is not None:
        out["per_series"] = {n: {k: d.summary()[k] for k in ("events", "detected", "alarms",
                                                            "false_alarms", "f1")}
                             for n, d in zip(names, per, strict=True)}
    return out


def assess_detector(sc: Scores, data: EvalData, warmup: int, card_threshold: dict[str, Any],
                    test_scores: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Thresholds by both rules and the test metrics at each, for one detector.

    ``test_scores`` replaces ``sc.test`` (the streamed scores, when the live path ran)."""
    val_labels = [s.labels for s in data.validation]
    test_labels = [s.labels for s in data.test]
    normal = np.concatenate([v[warmup:][normal_mask(s.labels, len(v))[warmup:]]
                             for s, v in zip(data.validation, sc.validation, strict=True)])
    normal = normal[np.isfinite(normal)]
    if sc.name == OURS:
        cal = {**card_threshold, "source": "the artifact's card (what the worker flags with)"}
    else:
        cal = {**calibrated(normal, card_threshold),
               "source": "the card's rule on this detector's normal validation scores"}
    if data.kind == "beats":
        bs, cs = validation_units(data.kind, sc.validation, val_labels, warmup)
        best, val_f1 = best_f1_beats(bs, cs)
    else:
        best, val_f1 = best_f1_windows(sc.validation, [lab.windows for lab in val_labels],
                                       data.period_s, warmup)
    thresholds = {"calibrated": float(cal["value"]), "best_f1": best}
    scores = list(test_scores if test_scores is not None else sc.test)
    names = [s.entity for s in data.test]
    starts = [s.start for s in data.test]
    out = {"label": sc.label, "seconds": round(sc.seconds, 2),
           "thresholds": {"calibrated": cal,
                          "best_f1": {"value": best, "validation_f1": val_f1}}}
    for rule in RULES:
        # no threshold gives a positive F1 on validation (no labelled anomaly there, or none
        # caught): there is no such threshold, and no such row
        out[rule] = None if not math.isfinite(thresholds[rule]) else detector_metrics(
            data.kind, scores, test_labels, thresholds[rule], data.period_s, warmup, names,
            starts)
    return out


def forecast_section(data: EvalData, forecasts: Sequence[np.ndarray],
                     warmup: int) -> dict[str, Any]:
    """The network's 1-step forecasts against persistence in user units, on the test samples
    the flags are scored on (past the warm-up and the series' ``start``)."""
    parts: list[ForecastErrors] = []
    for s, fc in zip(data.test, forecasts, strict=True):
        x = np.asarray(s.values, dtype=np.float64)
        a = max(1, warmup, s.start)
        ok = np.all(np.isfinite(fc[a:]), axis=1)
        parts.append(forecast_errors(x[a:][ok], fc[a:][ok], x[a - 1:-1][ok]))
    out = ForecastErrors.pool(parts).summary()
    out["features"] = list(data.features)
    return out
