"""Quality metrics at the level users act on: per abnormal beat, per anomaly window, per alarm.

No point-adjustment anywhere: a long anomaly window detected by one flag counts as one detected
event, never as all of its samples, and every flag outside the labels counts against precision.

**Beats (ECG).** Each annotated beat owns a *window*: the samples from halfway after the previous
R peak to halfway before the next (the first and last beat reach the record's ends). The windows
partition the record, so every flag lands in exactly one beat and none is dropped or counted
twice. A causal detector sees an ectopic beat from its early onset (a premature P wave or QRS,
before the R peak) to its abnormal repolarisation (the T wave, after it); the half-RR window
covers both without reaching into the neighbours' own complexes. (The EC57 ±150 ms beat-matching
window is for QRS *detectors*; a forecaster's surprise peaks on the T wave as often as on the QRS.)
A beat is *flagged* when any sample of its window is. Then, over beats of known class::

    TP = flagged abnormal beats     FP = flagged normal beats     FN = unflagged abnormal beats
    precision = TP / (TP + FP)      recall = TP / (TP + FN)       F1 = 2PR / (P + R)

Per class ``c`` (SVEB, VEB, F), the other abnormal classes are left out of the count, as EC57's
class-wise sensitivity and positive predictivity do: precision_c = TP_c / (TP_c + FP).

**Windows (NAB, SKAB).** An *alarm* is a maximal run of consecutive flagged samples. A window is
detected when a flag falls inside it; an alarm is true when it overlaps a window::

    precision = true alarms / alarms          recall = detected windows / windows

**False flags per hour** = false alarms (flagged normal beats; alarms outside every window) per
hour of normal signal (the total span of normal beats' windows; the samples outside windows).

**Detection delay** of a detected event: the time from its R peak (beats; negative = flagged
before the peak) or its window start to the first flag inside it.

**Ranking.** ROC-AUC (Mann–Whitney, ties counted half) and PR-AUC (average precision, the
step-wise area sklearn reports) of a score over units: a beat's score is the largest score in its
window; for windows, each sample is a unit.

**Forecasts.** With actual ``x_t``, 1-step forecast ``x̂_t`` and persistence ``x_{t-1}``, per
feature ``f`` over the same samples::

    MAE = mean |x - x̂|     RMSE = sqrt(mean (x - x̂)^2)     MASE_f = MAE_f / mean |x_t - x_{t-1}|

MASE is scaled by persistence's error on *the same* test samples (Hyndman's MASE scales by its
in-sample error instead), so MASE < 1 means better than persistence exactly where we were tested;
over several features it is the mean of the MASE_f.

Beats at samples 1, 4, 8 own ``[0, 2)``, ``[2, 6)``, ``[6, 10)``; a flag at 2 detects the VEB
two samples before its R peak, a flag at 7 is a false flag on the last (normal) beat:

>>> flags = np.zeros(10, bool); flags[[2, 7]] = True
>>> d = beat_detection(flags, np.array([1, 4, 8]), np.array(["N", "VEB", "N"]), period_s=1.0)
>>> d.events, d.detected, d.alarms, d.false_alarms, d.precision, d.recall, d.delays_s
(1, 1, 2, 1, 0.5, 1.0, (-2.0,))
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ABNORMAL",
    "Detection",
    "ForecastErrors",
    "average_precision",
    "beat_detection",
    "beat_scores",
    "beat_windows",
    "f1_score",
    "first_flags",
    "forecast_errors",
    "roc_auc",
    "runs",
    "window_detection",
]

ABNORMAL = ("SVEB", "VEB", "F")


def f1_score(precision: float, recall: float) -> float:
    """Harmonic mean; 0 when both are 0, NaN when either is undefined."""
    if math.isnan(precision) or math.isnan(recall):
        return math.nan
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Detection:
    """Event-level counts of one detector on one or more series; ``+`` pools them."""

    events: int = 0  # labelled anomalies: abnormal beats or anomaly windows
    detected: int = 0  # of them, with a flag inside
    alarms: int = 0  # flagged beats of known class, or runs of flags
    true_alarms: int = 0  # of them, on a labelled anomaly
    normal_s: float = 0.0  # seconds of normal signal
    delays_s: tuple[float, ...] = field(default=(), repr=False)  # one per detected event

    def __add__(self, other: Detection) -> Detection:
        return Detection(self.events + other.events, self.detected + other.detected,
                         self.alarms + other.alarms, self.true_alarms + other.true_alarms,
                         self.normal_s + other.normal_s, self.delays_s + other.delays_s)

    @classmethod
    def pool(cls, parts: Iterable[Detection]) -> Detection:
        return sum(parts, cls())

    @property
    def false_alarms(self) -> int:
        return self.alarms - self.true_alarms

    @property
    def precision(self) -> float:
        """Share of alarms on a labelled anomaly (0 when there is no alarm at all)."""
        return self.true_alarms / self.alarms if self.alarms else 0.0

    @property
    def recall(self) -> float:
        """Share of labelled anomalies detected (NaN when there is none)."""
        return self.detected / self.events if self.events else math.nan

    @property
    def f1(self) -> float:
        return f1_score(self.precision, self.recall)

    @property
    def false_per_hour(self) -> float:
        return self.false_alarms / (self.normal_s / 3600.0) if self.normal_s > 0 else math.nan

    @property
    def delay_mean_s(self) -> float:
        return float(np.mean(self.delays_s)) if self.delays_s else math.nan

    @property
    def delay_median_s(self) -> float:
        return float(np.median(self.delays_s)) if self.delays_s else math.nan

    def summary(self) -> dict[str, float | int]:
        """The numbers a report shows (JSON-ready; NaN stays NaN)."""
        return {"events": self.events, "detected": self.detected, "alarms": self.alarms,
                "false_alarms": self.false_alarms, "precision": self.precision,
                "recall": self.recall, "f1": self.f1, "false_per_hour": self.false_per_hour,
                "normal_hours": self.normal_s / 3600.0, "delay_mean_s": self.delay_mean_s,
                "delay_median_s": self.delay_median_s}


def runs(flags: np.ndarray) -> np.ndarray:
    """``[k, 2]`` start and stop (exclusive) of each maximal run of True in ``flags``.

    >>> runs(np.array([0, 1, 1, 0, 1], bool)).tolist()
    [[1, 3], [4, 5]]
    """
    f = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(f[1:] != f[:-1])
    return edges.reshape(-1, 2)


def beat_windows(r_peaks: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` of each beat's window: from the midpoint to the previous R peak to the
    midpoint to the next (``hi`` exclusive); the first starts at 0, the last ends at ``n``.

    >>> [a.tolist() for a in beat_windows(np.array([10, 20, 40]), 50)]
    [[0, 15, 30], [15, 30, 50]]
    """
    r = np.asarray(r_peaks, dtype=np.int64)
    if len(r) and (np.any(np.diff(r) <= 0) or r[0] < 0 or r[-1] >= n):
        raise ValueError(f"r_peaks: expected strictly increasing samples in [0, {n}), got "
                         f"{r[:5].tolist()}…")
    mids = (r[:-1] + r[1:]) // 2
    lo = np.concatenate([[0], mids]) if len(r) else r
    hi = np.concatenate([mids, [n]]) if len(r) else r
    return lo, hi


def first_flags(flags: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Index of the first flagged sample in each ``[lo, hi)``, or -1 where none is."""
    idx = np.flatnonzero(flags)
    pos = np.searchsorted(idx, lo)
    first = np.full(len(lo), -1, dtype=np.int64)
    ok = pos < len(idx)
    cand = idx[np.minimum(pos, max(len(idx) - 1, 0))] if len(idx) else np.zeros(len(lo), int)
    ok &= cand < hi
    first[ok] = cand[ok]
    return first


def beat_detection(flags: np.ndarray, r_peaks: np.ndarray, classes: Sequence[str],
                   period_s: float, positive: Sequence[str] = ABNORMAL, start: int = 0
                   ) -> Detection:
    """Beat-level counts: ``classes`` holds each beat's AAMI class (N, SVEB, VEB, F, or Q for
    unknown); beats of ``positive`` classes are the events, N beats the normal ones, any other
    class is left out. Beats whose window begins before ``start`` (a warm-up) are left out."""
    flags = np.asarray(flags, dtype=bool)
    classes = np.asarray(classes)
    if len(classes) != len(r_peaks):
        raise ValueError(f"classes: expected one per R peak ({len(r_peaks)}), got "
                         f"{len(classes)}")
    lo, hi = beat_windows(r_peaks, len(flags))
    keep = lo >= start
    first = first_flags(flags, lo, hi)
    flagged = first >= 0
    pos = keep & np.isin(classes, list(positive))
    neg = keep & (classes == "N")
    tp = pos & flagged
    delays = (first[tp] - np.asarray(r_peaks)[tp]) * period_s
    return Detection(events=int(pos.sum()), detected=int(tp.sum()),
                     alarms=int(tp.sum() + (neg & flagged).sum()), true_alarms=int(tp.sum()),
                     normal_s=float((hi[neg] - lo[neg]).sum() * period_s),
                     delays_s=tuple(float(d) for d in delays))


def window_detection(flags: np.ndarray, windows: Sequence[tuple[int, int]], period_s: float,
                     start: int = 0) -> Detection:
    """Window-level counts for labelled anomaly windows ``[lo, hi)`` (sample indices); samples
    before ``start`` (a warm-up) are left out, and windows that end before it too."""
    flags = np.asarray(flags, dtype=bool).copy()
    n = len(flags)
    flags[:start] = False
    w = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
    w = w[w[:, 1] > start]
    w[:, 0] = np.maximum(w[:, 0], start)
    inside = np.zeros(n, dtype=bool)
    for lo, hi in w:
        inside[lo:hi] = True
    first = first_flags(flags, w[:, 0], w[:, 1])
    detected = first >= 0
    alarms = runs(flags)
    true = np.array([inside[a:b].any() for a, b in alarms], dtype=bool)
    normal = int((~inside[start:]).sum())
    return Detection(events=len(w), detected=int(detected.sum()), alarms=len(alarms),
                     true_alarms=int(true.sum()), normal_s=normal * period_s,
                     delays_s=tuple(float(d) for d in (first[detected] - w[detected, 0])
                                    * period_s))


def beat_scores(scores: np.ndarray, r_peaks: np.ndarray) -> np.ndarray:
    """The largest score in each beat's window (NaNs ignored; NaN if all are)."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(r_peaks) == 0:
        return np.zeros(0)
    lo, _ = beat_windows(r_peaks, len(scores))
    return np.fmax.reduceat(scores, lo)


def _clean(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels: expected the same shape, got {s.shape} and "
                         f"{y.shape}")
    ok = np.isfinite(s)
    return s[ok], y[ok]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Probability that a random positive outscores a random negative (ties count half);
    NaN scores are dropped; NaN if a class is missing.

    >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    from scipy.stats import rankdata

    s, y = _clean(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the step-wise precision–recall curve, ``Σ (R_k - R_{k-1}) P_k`` over the
    distinct score thresholds from the top; NaN scores dropped; NaN without positives.

    >>> round(average_precision(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])), 4)
    0.8333
    """
    s, y = _clean(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # end of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class ForecastErrors:
    """Sums over samples, per feature, so results of several series pool exactly with ``+``."""

    n: int
    abs_sum: np.ndarray  # [F] Σ|x - x̂|
    sq_sum: np.ndarray  # [F] Σ(x - x̂)²
    naive_abs_sum: np.ndarray  # [F] Σ|x_t - x_{t-1}|
    naive_sq_sum: np.ndarray  # [F]

    def __add__(self, other: ForecastErrors) -> ForecastErrors:
        return ForecastErrors(self.n + other.n, self.abs_sum + other.abs_sum,
                              self.sq_sum + other.sq_sum,
                              self.naive_abs_sum + other.naive_abs_sum,
                              self.naive_sq_sum + other.naive_sq_sum)

    @classmethod
    def pool(cls, parts: Sequence[ForecastErrors]) -> ForecastErrors:
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out

    @property
    def mae(self) -> np.ndarray:
        return self.abs_sum / self.n

    @property
    def rmse(self) -> np.ndarray:
        return np.sqrt(self.sq_sum / self.n)

    @property
    def mae_persistence(self) -> np.ndarray:
        return self.naive_abs_sum / self.n

    @property
    def rmse_persistence(self) -> np.ndarray:
        return np.sqrt(self.naive_sq_sum / self.n)

    @property
    def mase(self) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.mean(self.abs_sum / self.naive_abs_sum))

    def summary(self) -> dict[str, float | int | list[float]]:
        return {"n": self.n, "mae": self.mae.tolist(), "rmse": self.rmse.tolist(),
                "mae_persistence": self.mae_persistence.tolist(),
                "rmse_persistence": self.rmse_persistence.tolist(), "mase": self.mase}


def forecast_errors(actual: np.ndarray, forecast: np.ndarray,
                    previous: np.ndarray) -> ForecastErrors:
    """Errors of 1-step ``forecast`` ``[N, F]`` of ``actual`` ``[N, F]`` and of persistence
    (``previous``, the sample before each actual one) on the same samples.

    >>> e = forecast_errors(np.array([[1.0], [2.0]]), np.array([[1.5], [2.0]]),
    ...                     np.array([[0.0], [1.0]]))
    >>> e.mae.tolist(), e.mase
    ([0.25], 0.25)
    """
    a, f, p = (np.asarray(v, dtype=np.float64) for v in (actual, forecast, previous))
    if a.ndim != 2 or f.shape != a.shape or p.shape != a.shape:
        raise ValueError(f"actual, forecast, previous: expected one shape [N, F], got "
                         f"{a.shape}, {f.shape}, {p.shape}")
    e, naive = a - f, a - p
    return ForecastErrors(len(a), np.abs(e).sum(0), (e * e).sum(0), np.abs(naive).sum(0),
                          (naive * naive).sum(0))
