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

The worker does exactly this when the card carries a ``score.entity_scale`` section (calibration
writes it, with ``μ_0`` and the threshold on validation ``s'``); the one implementation lives in
:mod:`stream.entity_scale`; :func:`entity_scaled` is its per-series form for offline detectors, and
:func:`typical_log_peak` (``μ_0``) is the stream's own.

>>> s = np.array([np.nan, 1.0, 4.0, 1.0])
>>> entity_scaled(s, period_s=1.0, log_peak0=0.0, peak_hold_s=1.0, average_s=2.0).round(3).tolist()
[nan, 1.0, 4.0, 0.5]
"""

from __future__ import annotations

import numpy as np

from stream.entity_scale import AVERAGE_S, PEAK_HOLD_S, EntityScale, typical_log_peak

__all__ = ["entity_scaled", "typical_log_peak"]


def entity_scaled(scores: np.ndarray, period_s: float, log_peak0: float,
                  peak_hold_s: float = PEAK_HOLD_S, average_s: float = AVERAGE_S) -> np.ndarray:
    """One entity's scores divided by its running typical peak (see the module docstring)."""
    row = np.asarray(scores, dtype=np.float64)[None]
    return EntityScale(log_peak0, peak_hold_s, average_s).apply(row, period_s).scaled[0]
