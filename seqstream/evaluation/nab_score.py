"""The NAB score (Lavin & Ahmad 2015, "Evaluating real-time anomaly detection algorithms — the
Numenta Anomaly Benchmark"), as numenta/NAB's own scorer computes it (``nab/sweeper.py``, which
replaced ``nab/scorer.py`` in NAB 1.0; rules below cite the lines they follow).

A series of ``n`` rows has labelled anomaly windows ``[l, r]`` (row indices, both ends inside).
A detector gives one 0/1 detection per row. The first ``p = min(floor(0.15 n), 0.15 * 5000)`` rows
are the **probationary period**: nothing in it is scored (``Sweeper._getProbationaryLength``).

The **scaled sigmoid** of a relative position ``y`` is ``σ(y) = 2 / (1 + e^{5y}) - 1`` (and
``-1`` for ``y >= 3``): ``+0.987`` at ``y = -1``, ``0`` at ``y = 0``, ``-0.987`` at ``y = 1``.

- **Inside a window** of width ``w = r - l + 1``, a detection at row ``i`` is worth
  ``A_tp σ(-(r - i + 1) / w) / σ(-1)``: exactly ``A_tp`` on the window's first row, falling
  towards 0 at its end. A window counts once, by its earliest detection (the largest value);
  a window with no detection costs ``A_fn`` (``-A_fn`` added).
- **Outside every window**, each detection is a false positive worth ``A_fp σ(|i - r'| /
  (w' - 1))`` where ``[l', r']`` (width ``w'``) is the closest window that ended before ``i``:
  just after a window it costs almost nothing, 3 window widths later the full ``-A_fp``. A false
  positive with no window before it costs ``-A_fp``.
- A window whose rows all lie in the probationary period is not scored at all.

The three **profiles** (NAB's ``config/profiles.json``) weigh them::

    standard   A_tp = 1, A_fp = 0.11, A_fn = 1
    low FP     A_tp = 1, A_fp = 0.22, A_fn = 1
    low FN     A_tp = 1, A_fp = 0.11, A_fn = 2

**Normalised score.** Raw scores are summed over the corpus, then
``100 (S - S_null) / (S_perfect - S_null)``: the null detector (no detection) scores 0, the
perfect one (a detection on each window's first scorable row, nothing else) scores 100.

The scoreboard also tunes each detector's threshold on the whole corpus (``nab/optimizer.py``);
seqstream does not: its flags are what the worker raised, with a threshold fixed beforehand.

One window [10, 19] in 40 rows (probation: floor(0.15 · 40) = 6 rows); a detection on the
window's first row and one false positive 5 rows after it:

>>> det = np.zeros(40, bool); det[[10, 24]] = True
>>> s = score_series(det, [(10, 19)], STANDARD)
>>> round(s.raw, 4), round(s.null, 4), round(s.perfect, 4), s.tp, s.fp, s.fn
(0.9029, -1.0, 1.0, 1, 1, 0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LOW_FN", "LOW_FP", "PROFILES", "STANDARD", "Profile", "SeriesScore",
           "normalised", "probation_rows", "scaled_sigmoid", "score_series",
           "windows_from_stamps"]

PROBATION_FRACTION = 0.15
PROBATION_CAP_ROWS = 5000  # the cap is 0.15 of this (750 rows), as NAB's sweeper has it


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB application profile (``config/profiles.json``)."""

    name: str
    tp: float
    fp: float
    fn: float


STANDARD = Profile("standard", 1.0, 0.11, 1.0)
LOW_FP = Profile("reward_low_FP_rate", 1.0, 0.22, 1.0)
LOW_FN = Profile("reward_low_FN_rate", 1.0, 0.11, 2.0)
PROFILES = (STANDARD, LOW_FP, LOW_FN)


@dataclass(frozen=True)
class SeriesScore:
    """One series' raw NAB score, and what the null and perfect detectors score on it."""

    raw: float
    null: float
    perfect: float
    tp: int  # windows detected
    fn: int  # windows missed
    fp: int  # detections outside every window (after the probation)


def scaled_sigmoid(y: float) -> float:
    """NAB's ``scaledSigmoid``: ``2 / (1 + e^{5y}) - 1``, and ``-1`` from ``y = 3`` on.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if y >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(n: int, fraction: float = PROBATION_FRACTION) -> int:
    """Rows of a series of ``n`` rows that NAB leaves unscored.

    >>> probation_rows(4032), probation_rows(22695)
    (604, 750)
    """
    return int(min(math.floor(fraction * n), fraction * PROBATION_CAP_ROWS))


def windows_from_stamps(stamps: Sequence, limits: Iterable[Sequence]) -> list[tuple[int, int]]:
    """Row windows ``[l, r]`` from NAB's timestamp limits (``labels/combined_windows.json``):
    the rows whose stamp lies inside, both ends included; a limit with no row inside is left
    out (NAB's ``Window`` would be empty)."""
    import pandas as pd

    t = pd.to_datetime(pd.Series(list(stamps))).to_numpy()
    out = []
    for lo, hi in limits:
        inside = np.flatnonzero((t >= pd.Timestamp(lo).to_datetime64())
                                & (t <= pd.Timestamp(hi).to_datetime64()))
        if len(inside):
            out.append((int(inside[0]), int(inside[-1])))
    return out


def _check(detections: np.ndarray, windows: Sequence[tuple[int, int]]) -> np.ndarray:
    det = np.asarray(detections)
    if det.ndim != 1:
        raise ValueError(f"detections: expected one 0/1 value per row, got shape {det.shape}")
    last = -1
    for lo, hi in windows:
        if not (last < lo <= hi < len(det)):
            raise ValueError(f"windows: expected sorted, disjoint [l, r] rows inside 0..{len(det)}"
                             f" - 1, got {list(windows)}")
        last = hi
    return det.astype(bool)


def score_series(detections: np.ndarray, windows: Sequence[tuple[int, int]], profile: Profile,
                 probation: int | None = None) -> SeriesScore:
    """The raw NAB score of one series' detections (one bool per row) under ``profile``.

    ``probation`` defaults to NAB's :func:`probation_rows`.
    """
    det = _check(detections, windows)
    n = len(det)
    p = probation_rows(n) if probation is None else probation
    max_tp = scaled_sigmoid(-1.0)
    raw, null, perfect, tp, fn = 0.0, 0.0, 0.0, 0, 0
    for lo, hi in windows:
        if hi < p:  # wholly in the probation: NAB never names it, so never scores it
            continue
        width = hi - lo + 1
        first_scorable = max(lo, p)
        hits = np.flatnonzero(det[first_scorable:hi + 1])
        null -= profile.fn
        perfect += scaled_sigmoid(-(hi - first_scorable + 1) / width) * profile.tp / max_tp
        if len(hits):
            i = first_scorable + int(hits[0])
            raw += scaled_sigmoid(-(hi - i + 1) / width) * profile.tp / max_tp
            tp += 1
        else:
            raw -= profile.fn
            fn += 1
    inside = np.zeros(n, dtype=bool)
    for lo, hi in windows:
        inside[lo:hi + 1] = True
    ends = np.array([hi for _, hi in windows], dtype=np.int64)
    widths = np.array([hi - lo + 1 for lo, hi in windows], dtype=np.int64)
    fps = [i for i in np.flatnonzero(det & ~inside) if i >= p]
    for i in fps:
        k = int(np.searchsorted(ends, i)) - 1  # the last window that ended before row i
        if k < 0:
            raw -= profile.fp
        else:
            # a one-row window: NAB divides by w - 1 = 0; Python gives inf -> sigma = -1
            y = abs(int(ends[k]) - int(i)) / (widths[k] - 1) if widths[k] > 1 else math.inf
            raw += scaled_sigmoid(y) * profile.fp
    return SeriesScore(raw, null, perfect, tp, fn, len(fps))


def normalised(scores: Iterable[SeriesScore]) -> float:
    """NAB's corpus score: ``100 (ΣS - ΣS_null) / (ΣS_perfect - ΣS_null)``; NaN when no
    window is scored (the null and perfect detectors tie)."""
    scores = list(scores)
    raw = sum(s.raw for s in scores)
    null = sum(s.null for s in scores)
    perfect = sum(s.perfect for s in scores)
    return 100.0 * (raw - null) / (perfect - null) if perfect > null else float("nan")
