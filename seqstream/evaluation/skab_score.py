"""SKAB's leaderboard metrics (waico/SKAB v0.9, README "Leaderboards"), computed as SKAB's own
code computes them: ``core/metrics.py`` (from the TSAD library) called the way the leaderboard's
notebooks call it (``notebooks/Conv_AE.ipynb`` and the others).

**Outlier detection** (``chp_score(..., metric="binary")``): the rows' 0/1 predictions against
the ``anomaly`` column, counts pooled over every file, every row::

    F1 = TP / (TP + (FN + FP) / 2)     FAR = 100 FP / (FP + TN) %     MAR = 100 FN / (FN + TP) %

**Changepoint detection** (``chp_score(..., metric="nab", window_width="30S",
anomaly_window_destination="center")``): a detector's changepoints are the rows where its 0/1
prediction changes (``|diff|``, and the first row's own value). Each labelled changepoint at
time ``c`` (the ``changepoint`` column) owns the window ``[c - 15 s, c + 15 s]``; where two
windows overlap the right one starts where the left one ends (``intersection_mode="cut right
window"``). Per file and profile (the NAB weights ``A_tp = 1``, ``A_fp = -0.11 / -0.22 /
-0.11``, ``A_fn = -1 / -1 / -2``):

- a window's first predicted changepoint at time ``t`` scores SKAB's "improved" NAB scale
  (``my_scale``): with ``x`` the 1000 points of ``linspace(-π/2, π/2)`` and
  ``k = int(1000 (t - t1) / (t2 - t1))`` (at most 999),
  ``(A_tp - A_fp) / 2 · (1 - tanh(x_k) / tanh(π/2)) + A_fp``: ``A_tp`` at the window's start,
  ``A_fp`` at its end; later changepoints in the same window count for nothing;
- a window without one adds ``A_fn``; each predicted changepoint outside every window adds
  ``A_fp`` (no distance weighting, unlike NAB's own scorer);
- null = windows · ``A_fn``, perfect = windows · ``A_tp``; summed over files, then
  ``100 (S - null) / (perfect - null)``.

The leaderboard's detectors see each file's first 400 rows as its anomaly-free reference;
these rows are scored like the others (SKAB's notebooks predict 0 there).

>>> truth = np.array([0, 0, 1, 1, 0, 0]); pred = np.array([0, 1, 1, 0, 0, 0])
>>> outlier_counts([truth], [pred]).summary()
{'f1': 0.5, 'far_pct': 25.0, 'mar_pct': 50.0, 'tp': 1, 'fp': 1, 'fn': 1, 'tn': 3}
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seqstream.evaluation.nab_score import PROFILES, Profile

__all__ = ["Counts", "changepoint_score", "changepoint_windows", "changepoints_of",
           "improved_scale", "outlier_counts"]

WINDOW_S = 30.0
DETAIL = 1000  # points of SKAB's scale function (``my_scale(detalization=1000)``)


@dataclass(frozen=True)
class Counts:
    """Pooled row counts of one detector over all files."""

    tp: int
    fp: int
    fn: int
    tn: int

    def summary(self) -> dict[str, float | int]:
        """F1, FAR % and MAR % as SKAB defines them (NaN where a denominator is 0)."""
        def ratio(a: float, b: float) -> float:
            return a / b if b else float("nan")

        return {"f1": ratio(self.tp, self.tp + (self.fn + self.fp) / 2),
                "far_pct": 100 * ratio(self.fp, self.fp + self.tn),
                "mar_pct": 100 * ratio(self.fn, self.fn + self.tp),
                "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def outlier_counts(truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray]) -> Counts:
    """Pooled TP, FP, FN, TN of 0/1 predictions against 0/1 labels, file by file."""
    if len(truths) != len(predictions):
        raise ValueError(f"expected one prediction per file, got {len(predictions)} for "
                         f"{len(truths)} files")
    tp = fp = fn = tn = 0
    for i, (t, p) in enumerate(zip(truths, predictions, strict=True)):
        t, p = np.asarray(t) == 1, np.asarray(p) == 1
        if t.shape != p.shape:
            raise ValueError(f"file {i}: expected one prediction per row ({t.shape}), got "
                             f"{p.shape}")
        tp += int((t & p).sum())
        fp += int((~t & p).sum())
        fn += int((t & ~p).sum())
        tn += int((~t & ~p).sum())
    return Counts(tp, fp, fn, tn)


def changepoints_of(prediction: np.ndarray) -> np.ndarray:
    """SKAB's predicted changepoints: ``|diff|`` of the 0/1 prediction, the first row its own.

    >>> changepoints_of(np.array([1, 1, 0, 0, 1])).tolist()
    [1, 0, 1, 0, 1]
    """
    p = np.asarray(prediction).astype(np.int64)
    out = np.abs(np.diff(p, prepend=0))
    return out.astype(np.int8)


def changepoint_windows(times_s: np.ndarray, changepoints: np.ndarray,
                        width_s: float = WINDOW_S) -> list[tuple[float, float]]:
    """Windows ``[c - w/2, c + w/2]`` (seconds) around the labelled changepoints, an
    overlapping right window cut to start where the left one ends."""
    centres = np.asarray(times_s, dtype=np.float64)[np.asarray(changepoints) == 1]
    bounds = [[c - width_s / 2, c + width_s / 2] for c in centres]
    for left, right in itertools.pairwise(bounds):
        if left[1] >= right[0]:
            right[0] = left[1]
    return [(a, b) for a, b in bounds]


def improved_scale(t: float, t1: float, t2: float, profile: Profile) -> float:
    """SKAB's ``my_scale``: ``A_tp`` at ``t1`` falling (tanh) to ``A_fp`` at ``t2``.

    >>> round(improved_scale(0.0, 0.0, 30.0, PROFILES[0]), 6)
    1.0
    >>> round(improved_scale(15.0, 0.0, 30.0, PROFILES[0]), 4)
    0.444
    """
    a_tp, a_fp = profile.tp, -profile.fp
    k = min(int((t - t1) / (t2 - t1) * DETAIL), DETAIL - 1)
    x = -math.pi / 2 + k * math.pi / (DETAIL - 1)
    return (a_tp - a_fp) / 2 * -math.tanh(x) / math.tanh(math.pi / 2) + (a_tp - a_fp) / 2 + a_fp


def _file_scores(times: np.ndarray, windows: list[tuple[float, float]], cps: np.ndarray,
                 profile: Profile) -> tuple[float, float, float]:
    pred = np.asarray(times, dtype=np.float64)[np.asarray(cps) == 1]
    outside = np.ones(len(pred), dtype=bool)
    score = 0.0
    for t1, t2 in windows:
        inside = (pred >= t1) & (pred <= t2)
        outside &= ~inside
        score += improved_scale(float(pred[inside][0]), t1, t2, profile) if inside.any() \
            else -profile.fn
    score -= profile.fp * int(outside.sum())
    return score, -profile.fn * len(windows), profile.tp * len(windows)


def changepoint_score(times_s: Sequence[np.ndarray], true_cps: Sequence[np.ndarray],
                      predictions: Sequence[np.ndarray], width_s: float = WINDOW_S,
                      given: bool = False) -> dict[str, float]:
    """The normalised NAB score per profile of 0/1 row predictions (``predictions``: the
    detector's anomaly flags, their changepoints taken here; with ``given``, the detector's
    own changepoints, e.g. its alarm onsets), pooled over files.

    ``times_s``: each file's row times in seconds; ``true_cps``: its ``changepoint`` column.
    """
    if not (len(times_s) == len(true_cps) == len(predictions)):
        raise ValueError(f"expected times, changepoints and predictions for each file, got "
                         f"{len(times_s)}, {len(true_cps)}, {len(predictions)}")
    out = {}
    for profile in PROFILES:
        s = null = perfect = 0.0
        for t, c, p in zip(times_s, true_cps, predictions, strict=True):
            if not (len(t) == len(c) == len(p)):
                raise ValueError(f"expected one time, label and prediction per row, got "
                                 f"{len(t)}, {len(c)}, {len(p)}")
            a, b, d = _file_scores(t, changepoint_windows(t, c, width_s),
                                   p if given else changepoints_of(p), profile)
            s, null, perfect = s + a, null + b, perfect + d
        out[profile.name] = 100 * (s - null) / (perfect - null) if perfect > null \
            else float("nan")
    return out
