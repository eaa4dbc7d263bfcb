"""Anomaly scores from one-step forecast residuals; shared by calibration and the worker.

When sample ``x_t`` arrives, the forecast made one step earlier, ``x̂_t`` (horizon 1), is compared
with it. In the network's scaled units, each feature's residual is divided by that feature's
residual scale ``s_f`` (the std of one-step residuals on validation data, from the artifact's card),
and the score is their root mean square over the F features::

    score_t = sqrt( mean_f ((x_t,f - x̂_t,f) / s_f)^2 )

So a score of 1 is a typical residual, and the flag is ``score_t > threshold`` with the threshold
calibrated on validation scores (see ``training.calibrate``). The same function serves both sides,
so an offline score and a streamed one agree to float rounding.

>>> import numpy as np
>>> float(score(np.array([3.0, -4.0]), np.array([1.0, 2.0])))
2.5495097567963922
"""

from __future__ import annotations

import numpy as np

__all__ = ["score"]


def score(residual: np.ndarray, residual_scale: np.ndarray) -> np.ndarray:
    """Scores of residuals ``[..., F]`` (scaled units) given per-feature scales ``[F]``."""
    z = residual / residual_scale
    return np.sqrt(np.mean(z * z, axis=-1))
