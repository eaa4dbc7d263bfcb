"""Per-entity residual scaling: each entity's score divided by its own recent typical score.

The card's ``residual_scale`` is one number per feature for every entity, so a patient whose
normal beats the network forecasts less well than the training patients' scores high all the
time. Here each entity keeps one more number in its state, a running mean square of its own
scores ``v``, and is scored relative to it::

    s'_t = s_t / sqrt(v_{t-1})                      (v_0 = 1: the card's scale to start with)
    v_t  = v_{t-1} + α · (min(s_t², cap · v_{t-1}) - v_{t-1}),   α = period / τ

so ``v`` follows the entity's typical squared score with time constant ``τ`` (60 s: a few dozen
beats), and the ``cap`` (25 = five times its current RMS) keeps one anomaly from inflating it.
Samples with no score (the first one, NaN) leave ``v`` as it is. The flag is then
``s'_t > threshold'`` with ``threshold'`` calibrated on validation scores the same way.

For the live system to match, the worker would store ``v`` (float32) in each entity's state,
update it after scoring each sample exactly as above in float64 arithmetic on the float32 score,
and publish ``s'`` (or both). Offline it is applied to the replayed scores.

>>> s = np.array([np.nan, 1.0, 1.0, 10.0])
>>> entity_scaled(s, period_s=1.0, tau_s=2.0).round(3).tolist()
[nan, 1.0, 1.0, 10.0]
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CAP", "TAU_S", "entity_scaled"]

TAU_S = 60.0
CAP = 25.0


def entity_scaled(scores: np.ndarray, period_s: float, tau_s: float = TAU_S,
                  cap: float = CAP) -> np.ndarray:
    """Scores of one entity, each divided by the RMS of its own earlier scores (see above)."""
    alpha = min(1.0, period_s / tau_s)
    out = np.empty(len(scores))
    v = 1.0
    for t, s in enumerate(np.asarray(scores, dtype=np.float64).tolist()):
        if math.isnan(s):
            out[t] = math.nan
            continue
        out[t] = s / math.sqrt(v)
        v += alpha * (min(s * s, cap * v) - v)
    return out
