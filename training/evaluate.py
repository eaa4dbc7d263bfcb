"""Test-part metrics of forecasts and flags, pooled over entities.

Forecast accuracy of the 1-step forecast ``x̂_t`` (made at ``t-1``) over every test sample ``t``,
in scaled units pooled over features (per feature in user units too)::

    MAE  = mean |x_t - x̂_t|        RMSE = sqrt(mean (x_t - x̂_t)²)
    R²   = 1 - Σ(x_t - x̂_t)² / Σ(x_t - mean_test(x))²
    MASE = MAE / mean_{t in train} |x_t - x_{t-1}|                (Hyndman & Koehler 2006)
    MASE_m = MAE / mean_{t in train} |x_t - x_{t-m}|               (seasonal, season m)

MASE < 1 means the network beats the in-sample persistence forecast (last value). The same ratio
on the test part itself (``mae_ratio_persistence`` = MAE / test MAE of persistence) is reported
too, as is seasonal-naive's (``x̂_t = x_{t-m}``) where the series is periodic: ``season: auto``
takes ``m`` as the lag of the highest autocorrelation peak of the training parts (a local
maximum at least 0.05 above the lowest ACF before it; median over entities), and calls the
series periodic when that peak exceeds 0.2 (an ECG's beat-to-beat peak is about 0.2–0.3: its
rhythm varies).

Flags (``score_t > threshold``) against labels, where they exist:

- per beat for annotated ECG: a beat is flagged when any sample of its extent (midpoint to
  midpoint between neighbouring R peaks) is; abnormal beats are positives;
- per sample otherwise (NAB windows, SKAB rows).

Precision, recall and F1, with what chance would get: a flagger that flags the same share of
beats (samples) at random has expected precision = prevalence and recall = flag rate. ``auc`` is
the threshold-free ROC AUC of the beat's (sample's) highest score. Beat extents and the ROC AUC
are :mod:`seqstream.evaluation.metrics`' (``beat_windows``, ``roc_auc``), which the evaluation
uses too.

>>> import numpy as np
>>> flag_metrics(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]), np.array([.9, .3, .7, .1]))
{'precision': 0.5, 'recall': 0.5, 'f1': 0.5, 'positives': 2, 'flagged': 2, 'n': 4, \
'prevalence': 0.5, 'flag_rate': 0.5, 'f1_chance': 0.5, 'auc': 0.75}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seqstream.evaluation.metrics import beat_windows, roc_auc

__all__ = ["beat_outcomes", "estimate_season", "flag_metrics", "forecast_metrics"]

PERIODIC_ACF = 0.2
PROMINENCE = 0.05


def estimate_season(parts: Sequence[np.ndarray], max_lag: int = 20_000) -> int | None:
    """The lag (samples) of the highest autocorrelation peak, median over entities, or None."""
    found = []
    for x in parts:
        x = np.asarray(x, dtype=np.float64)
        x = x.mean(axis=1) if x.ndim == 2 else x
        n = len(x)
        lags = min(max_lag, n // 3)
        if lags < 4:
            continue
        x = x - x.mean()
        spec = np.fft.rfft(x, 2 * n)
        acf = np.fft.irfft(spec * np.conj(spec))[:lags + 1]
        if acf[0] <= 0:
            continue
        acf = acf / acf[0]
        # Local maxima past lag 1 that rise clearly above the lowest ACF before them (so a
        # wiggle of noise near lag 0 is no season); the highest of them is the season.
        peak = np.nonzero((acf[2:-1] > acf[1:-2]) & (acf[2:-1] >= acf[3:]))[0] + 2
        peak = peak[acf[peak] - np.minimum.accumulate(acf)[peak] >= PROMINENCE]
        if len(peak) == 0:
            continue
        best = int(peak[np.argmax(acf[peak])])
        if acf[best] > PERIODIC_ACF:
            found.append(best)
    return int(np.median(found)) if found else None


def _fit_stats(err: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    sse = float((err * err).sum())
    sst = float(((actual - actual.mean(axis=0)) ** 2).sum())
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err * err).mean())),
            "r2": 1.0 - sse / sst if sst > 0 else float("nan")}


def forecast_metrics(scaled: Sequence[np.ndarray], forecasts: Sequence[np.ndarray],
                     bounds: Sequence[tuple[int, int]], std: np.ndarray,
                     features: Sequence[str], season: int | None) -> dict[str, Any]:
    """Metrics of 1-step forecasts over the test parts.

    ``scaled[e]`` is entity e's whole scaled series ``[T, F]``; ``forecasts[e][t]`` the scaled
    forecast of ``x_t`` (NaN where none); ``bounds[e] = (a, b)``: training part ``[0, a)``,
    test part ``[b, T)``.
    """
    err, act, pers, seas = [], [], [], []
    naive_train, seas_train = [], []
    for x, fc, (a, b) in zip(scaled, forecasts, bounds, strict=True):
        t = np.arange(max(b, 1), len(x))
        t = t[np.all(np.isfinite(fc[t]), axis=1)]
        err.append(x[t] - fc[t])
        act.append(x[t])
        pers.append(x[t] - x[t - 1])
        naive_train.append(np.abs(np.diff(x[:a], axis=0)))
        if season:
            ts = t[t >= season]
            seas.append(x[ts] - x[ts - season])
            seas_train.append(np.abs(x[season:a] - x[:max(a - season, 0)]))
    e, y, p = np.concatenate(err), np.concatenate(act), np.concatenate(pers)
    out: dict[str, Any] = _fit_stats(e, y)
    out["n"] = len(e)
    naive = float(np.concatenate(naive_train).mean())
    out["mase"] = out["mae"] / naive
    out["persistence"] = {**_fit_stats(p, y), "mase": float(np.abs(p).mean()) / naive}
    out["mae_ratio_persistence"] = out["mae"] / out["persistence"]["mae"]
    if season:
        s = np.concatenate(seas)
        scale = float(np.concatenate(seas_train).mean())
        out["seasonal_naive"] = {"season": int(season), "mae": float(np.abs(s).mean()),
                                 "mase_seasonal": float(np.abs(s).mean()) / scale}
        out["mase_seasonal"] = out["mae"] / scale
        out["mae_ratio_seasonal"] = out["mae"] / out["seasonal_naive"]["mae"]
    else:
        out["seasonal_naive"] = None
    out["per_feature"] = {name: _fit_stats(e[:, i] * float(std[i]), y[:, i] * float(std[i]))
                          for i, name in enumerate(features)}
    return out


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (:func:`seqstream.evaluation.metrics.roc_auc`, which drops non-finite scores)
    with a beat that had no finite score (``-inf`` from :func:`beat_outcomes`) kept, ranked below
    every scored one and tied with the others like it."""
    s = np.asarray(scores, dtype=np.float64)
    unscored = np.isneginf(s)
    if unscored.any():
        s = s.copy()
        s[unscored] = s[~unscored].min() - 1.0 if (~unscored).any() else 0.0
    return roc_auc(s, labels)


def flag_metrics(labels: np.ndarray, flags: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    """Precision / recall / F1 of 0/1 ``flags`` against 0/1 ``labels``, with chance levels."""
    labels, flags = np.asarray(labels).astype(bool), np.asarray(flags).astype(bool)
    tp = int((labels & flags).sum())
    positives, flagged, n = int(labels.sum()), int(flags.sum()), len(labels)
    precision = tp / flagged if flagged else 0.0
    recall = tp / positives if positives else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    prevalence, rate = positives / n if n else float("nan"), flagged / n if n else float("nan")
    chance = 2 * prevalence * rate / (prevalence + rate) if prevalence + rate > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "positives": positives,
            "flagged": flagged, "n": n, "prevalence": prevalence, "flag_rate": rate,
            "f1_chance": chance, "auc": _auc(labels, scores)}


def beat_outcomes(samples: np.ndarray, labels: np.ndarray, n: int, lo: int, hi: int,
                  scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For beats with R peak in ``[lo, hi)`` and a known label: (index into the beats, label,
    highest score over the beat's extent). Extents run midpoint to midpoint between R peaks."""
    starts, ends = beat_windows(samples, n)
    idx = np.nonzero((samples >= lo) & (samples < hi) & (labels >= 0))[0]
    top = np.empty(len(idx))
    for j, i in enumerate(idx):
        window = scores[max(starts[i], lo):min(ends[i], hi)]
        window = window[np.isfinite(window)]
        top[j] = window.max() if len(window) else -np.inf
    return idx, labels[idx].astype(np.int8), top
