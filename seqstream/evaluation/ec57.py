"""Beat-by-beat comparison of detected R peaks with reference beats (ANSI/AAMI EC57).

A detection matches a reference beat when they are at most ``window_s`` (150 ms) apart; each is
matched at most once. Pairs are taken closest first (ties: earlier reference first), which is
the one-to-one matching that the EC57 rule describes and WFDB's ``bxb`` implements for the
usual case of one candidate per beat. Then

- TP = matched pairs, FN = reference beats left unmatched, FP = detections left unmatched;
- sensitivity ``Se = TP / (TP + FN)``, positive predictivity ``+P = TP / (TP + FP)``.

Spans to exclude (EC57 leaves out ventricular flutter, annotated ``[`` .. ``]`` in MIT-BIH) drop
both reference beats and detections inside them before matching.

>>> ref = np.array([100, 460, 820, 1180])
>>> test = np.array([104, 470, 700, 1180, 1400])
>>> score(ref, test, fs=360.0)
Score(tp=3, fn=1, fp=2, se=0.75, ppv=0.6)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

__all__ = ["Score", "exclude", "match", "score", "total"]


class Score(NamedTuple):
    """Counts and rates of one comparison (rates are NaN when their denominator is 0)."""

    tp: int
    fn: int
    fp: int
    se: float
    ppv: float


def match(ref: np.ndarray, test: np.ndarray, fs: float, window_s: float = 0.15
          ) -> np.ndarray:
    """Matched pairs as an ``[k, 2]`` int array of (reference index, test index), closest first.

    ``ref`` and ``test`` are sample indexes (any order); indexes returned point into them.
    """
    ref = np.asarray(ref, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    if ref.ndim != 1 or test.ndim != 1:
        raise ValueError(f"expected 1-D index arrays, got shapes {ref.shape} and {test.shape}")
    if not fs > 0 or not window_s >= 0:
        raise ValueError(f"expected fs > 0 and window_s >= 0, got fs={fs}, window_s={window_s}")
    w = window_s * fs
    ro, to = np.argsort(ref, kind="stable"), np.argsort(test, kind="stable")
    rs, ts = ref[ro], test[to]
    lo = np.searchsorted(ts, rs - w, side="left")
    hi = np.searchsorted(ts, rs + w, side="right")
    counts = hi - lo
    ri = np.repeat(np.arange(len(rs)), counts)
    ti = (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
          + np.repeat(lo, counts))
    dist = np.abs(rs[ri] - ts[ti])
    order = np.lexsort((ri, dist))
    used_r = np.zeros(len(rs), bool)
    used_t = np.zeros(len(ts), bool)
    pairs = []
    for k in order.tolist():
        a, b = ri[k], ti[k]
        if not used_r[a] and not used_t[b]:
            used_r[a] = used_t[b] = True
            pairs.append((ro[a], to[b]))
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def _rates(tp: int, fn: int, fp: int) -> Score:
    se = tp / (tp + fn) if tp + fn else float("nan")
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    return Score(tp, fn, fp, se, ppv)


def score(ref: np.ndarray, test: np.ndarray, fs: float, window_s: float = 0.15) -> Score:
    """TP, FN, FP, Se and +P of ``test`` detections against ``ref`` beats."""
    tp = len(match(ref, test, fs, window_s))
    return _rates(tp, len(ref) - tp, len(test) - tp)


def total(scores: Sequence[Score]) -> Score:
    """Gross statistics: counts summed over records, rates from the sums."""
    return _rates(sum(s.tp for s in scores), sum(s.fn for s in scores),
                  sum(s.fp for s in scores))


def exclude(idx: np.ndarray, spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """``idx`` without the values inside any inclusive ``(start, end)`` span.

    >>> exclude(np.array([5, 10, 15, 20]), [(9, 15)]).tolist()
    [5, 20]
    """
    idx = np.asarray(idx, dtype=np.int64)
    keep = np.ones(len(idx), bool)
    for a, b in spans:
        keep &= (idx < a) | (idx > b)
    return idx[keep]
