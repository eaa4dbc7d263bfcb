"""Thresholds for every detector, chosen on validation data only, by two rules.

- ``calibrated``: the rule the network's own threshold came from: the card's ``threshold``
  section names a method (``pot`` or ``quantile``), a ``risk`` and an initial quantile, applied
  by :func:`training.calibrate.calibrate_threshold` to the detector's scores on the normal
  validation samples past the warm-up. So each baseline gets the same share of expected false
  alarms as the network.
- ``best_f1``: the threshold that maximises F1 on the labelled validation data (beats or
  windows): the best a detector could do if its operator tuned it on labels. Shown so that a
  baseline whose score is well ranked but badly calibrated is not judged by calibration alone.

A sample is flagged when ``score > threshold`` and it lies past the warm-up (the worker's
``warmup_steps``: no flag after an entity's first sample until it has seen that many).

>>> flags_of(np.array([np.nan, 5.0, 1.0, 5.0]), threshold=2.0, warmup=2).tolist()
[False, False, False, True]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from seqstream.evaluation.metrics import ABNORMAL, Detection, window_detection

__all__ = ["best_f1_beats", "best_f1_windows", "calibrated", "flags_of"]


def flags_of(scores: np.ndarray, threshold: float, warmup: int = 0) -> np.ndarray:
    """``score > threshold`` past the first ``warmup`` samples (NaN never flags)."""
    s = np.asarray(scores, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        flags = s > threshold
    flags[:warmup] = False
    return flags


def calibrated(normal_scores: np.ndarray, card_threshold: dict[str, Any]) -> dict[str, Any]:
    """The card's calibration rule applied to other scores (normal validation samples)."""
    from training.calibrate import calibrate_threshold

    method = card_threshold.get("method", "pot")
    return calibrate_threshold(normal_scores, method, float(card_threshold["risk"]),
                               float(card_threshold.get("initial_quantile", 0.98)))


def best_f1_beats(beat_scores: Sequence[np.ndarray], classes: Sequence[np.ndarray]
                  ) -> tuple[float, float]:
    """``(threshold, F1)`` maximising beat-level F1 over pooled validation beats.

    A beat is flagged iff its largest score exceeds the threshold, so F1 at every candidate
    (each distinct beat score) follows from one sort. Beats with a NaN score never flag.
    ``(inf, NaN)`` when there is no abnormal beat.
    """
    s = np.concatenate([np.asarray(b, dtype=np.float64) for b in beat_scores])
    c = np.concatenate([np.asarray(k) for k in classes])
    known = np.isin(c, [*ABNORMAL, "N"])
    s, pos = s[known], np.isin(c[known], ABNORMAL)
    n_pos = int(pos.sum())
    finite = np.isfinite(s)
    s, pos = s[finite], pos[finite]
    if n_pos == 0 or len(s) == 0:
        return float("inf"), float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, pos = s[order], pos[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # flag the top `last+1` beats
    tp = np.cumsum(pos)[last]
    flagged = last + 1
    f1 = 2 * tp / (flagged + n_pos)
    k = int(np.argmax(f1))
    # threshold halfway to the next lower score, so that exactly those beats exceed it
    below = s[last[k] + 1] if last[k] + 1 < len(s) else s[last[k]] - 1.0
    return float((s[last[k]] + below) / 2), float(f1[k])


def best_f1_windows(scores: Sequence[np.ndarray], windows: Sequence[np.ndarray],
                    period_s: float, warmup: int, candidates: int = 200
                    ) -> tuple[float, float]:
    """``(threshold, F1)`` maximising window-level F1 over the validation series, searched over
    ``candidates`` quantiles of their scores (alarms are runs, so no closed form); ``(inf,
    NaN)`` when the validation series hold no window."""
    pooled = np.concatenate([np.asarray(x, dtype=np.float64)[warmup:] for x in scores])
    pooled = pooled[np.isfinite(pooled)]
    if len(pooled) == 0 or not any(len(np.asarray(w)) for w in windows):
        return float("inf"), float("nan")
    grid = np.unique(np.quantile(pooled, np.linspace(0.5, 1.0, candidates)))
    best = (float("inf"), 0.0)
    for thr in grid:
        d = Detection.pool(window_detection(flags_of(x, thr, warmup), w, period_s, warmup)
                           for x, w in zip(scores, windows, strict=True))
        f1 = d.f1 if np.isfinite(d.f1) else 0.0
        if f1 > best[1]:
            best = (float(thr), float(f1))
    return best
