"""Per-entity scaling: each entity's score relative to its own typical beat-sized peak.

The card's ``residual_scale`` is one number per feature for every entity, so a patient whose
normal beats the network forecasts less well than the training patients' (another QRS shape, a
noisier lead) scores high on every beat, and one whose beats it forecasts well hides its ectopic
beats below the shared threshold. On unseen MIT-BIH patients the largest score of a beat is
then *less* likely to be high on an abnormal beat than on a normal one (ROC-AUC below 0.5).
Scaling by the entity's own level fixes much of that. Two more numbers per entity, kept in its
state::

    p_t  = max(s_t, g · p_{t-1}),          g = 2^(-period / h)      peak hold, half-life h
    μ_t  = μ_{t-1} + α (ln max(p_t, 1e-6) - μ_{t-1}),   α = period / τ
    s'_t = s_t / exp(μ_{t-1})                                      the scaled score

``p`` holds the largest recent score and decays with half-life ``h`` = 0.3 s (about one QRS–T
span), so it follows each beat's peak score; ``μ`` averages its logarithm over ``τ`` = 10 s
(about ten beats), a robust running "typical beat peak" of this entity (a log average is hardly
moved by one ectopic beat). ``μ`` starts at ``μ_0``, the mean of ``ln p`` over the normal
validation samples (the typical peak of the training patients), and ``p`` at 0. A NaN score (the
first sample) leaves both as they are. The flag is ``s' > threshold'``, with ``threshold'`` from
the same calibration rule on validation ``s'``. These constants come from the ECG's time scales,
not from a search on test data; they are the same for every detector it is applied to.

For the live system to match, the worker would keep ``p`` and ``μ`` (two float32) in each
entity's state, update them after scoring each sample exactly as above (float64 arithmetic on
the float32 score, stored as float32), publish ``s'`` as the score, and read ``h``, ``τ``,
``μ_0`` and ``threshold'`` from a ``score.entity_scale`` section of the card that calibration
would write.

>>> s = np.array([np.nan, 1.0, 4.0, 1.0])
>>> entity_scaled(s, period_s=1.0, log_peak0=0.0, half_life_s=1.0, tau_s=2.0).round(3).tolist()
[nan, 1.0, 4.0, 0.5]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["HALF_LIFE_S", "TAU_S", "entity_scaled", "log_peaks", "typical_log_peak"]

HALF_LIFE_S = 0.3
TAU_S = 10.0
FLOOR = 1e-6


def log_peaks(scores: np.ndarray, period_s: float, half_life_s: float = HALF_LIFE_S
              ) -> np.ndarray:
    """``ln p_t`` of the peak hold (NaN scores hold it)."""
    g = 0.5 ** (period_s / half_life_s)
    out = np.empty(len(scores))
    p = 0.0
    for t, s in enumerate(np.asarray(scores, dtype=np.float64).tolist()):
        if not math.isnan(s):
            p = max(s, p * g)
        out[t] = math.log(max(p, FLOOR))
    return out


def typical_log_peak(scores: Sequence[np.ndarray], normal: Sequence[np.ndarray],
                     period_s: float, half_life_s: float = HALF_LIFE_S) -> float:
    """``μ_0``: the mean ``ln p`` over the samples marked in ``normal`` (validation)."""
    parts = [log_peaks(s, period_s, half_life_s)[m] for s, m in zip(scores, normal, strict=True)]
    pooled = np.concatenate(parts) if parts else np.zeros(0)
    return float(pooled.mean()) if len(pooled) else 0.0


def entity_scaled(scores: np.ndarray, period_s: float, log_peak0: float,
                  half_life_s: float = HALF_LIFE_S, tau_s: float = TAU_S) -> np.ndarray:
    """One entity's scores divided by its running typical peak (see the module docstring)."""
    g = 0.5 ** (period_s / half_life_s)
    alpha = min(1.0, period_s / tau_s)
    out = np.empty(len(scores))
    p, mu = 0.0, log_peak0
    for t, s in enumerate(np.asarray(scores, dtype=np.float64).tolist()):
        if math.isnan(s):
            out[t] = math.nan
            continue
        out[t] = s / math.exp(mu)
        p = max(s, p * g)
        mu += alpha * (math.log(max(p, FLOOR)) - mu)
    return out
