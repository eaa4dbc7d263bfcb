"""The anomaly threshold and residual scale, calibrated on validation data after training.

``residual_scale`` (the card's ``score.residual_scale``) is the per-feature standard deviation
of 1-step validation residuals in scaled units; :func:`stream.scoring.score` divides by it, so a
typical normal score is about 1 on every data set.

The threshold is chosen so that a share ``risk`` (say 1e-3) of normal validation scores exceeds it.
Two methods:

- ``quantile``: the empirical (1 - risk) quantile. Simple, but at small risks it rests on the
  few largest scores, so it jumps from one validation set to the next.
- ``pot`` (peaks over threshold, the default): by the Pickands–Balkema–de Haan theorem the excesses
  of a score over a high initial threshold ``u`` (the ``initial_quantile``, e.g. 0.98) follow a
  generalised Pareto distribution GPD(ξ, σ), whatever the bulk of the distribution. Fitting it
  by maximum likelihood to the ``N_u`` peaks out of ``n`` scores gives (Siffer et al., KDD 2017)::

      z = u + σ/ξ · ((risk · n / N_u)^(-ξ) - 1)        (ξ ≠ 0)
      z = u - σ · log(risk · n / N_u)                   (ξ = 0)

  which uses all the tail's peaks (2 % of the data) instead of its last few points, and extends
  past the largest value seen when the risk is smaller than 1/n. This is why it is the default:
  residual scores of ECG and sensors are heavy-tailed and validation parts are short.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> s = rng.exponential(size=100_000)
>>> t = calibrate_threshold(s, "pot", risk=1e-3)
>>> t["method"], round(t["value"], 2), round(float(np.log(1e3)), 2)  # fit vs exact quantile
('pot', 6.96, 6.91)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stream.errors import ConfigError

__all__ = ["MIN_PEAKS", "calibrate_threshold", "residual_scale"]

MIN_PEAKS = 30
SCALE_FLOOR = 1e-6


def residual_scale(residuals: np.ndarray) -> np.ndarray:
    """Per-feature std of 1-step residuals ``[N, F]`` (finite rows only), floored above 0."""
    finite = residuals[np.all(np.isfinite(residuals), axis=1)]
    if len(finite) < 2:
        raise ConfigError(f"calibration: expected validation residuals, got {len(finite)} rows "
                          "(validation part too short?)")
    return np.maximum(finite.std(axis=0), SCALE_FLOOR)


def _quantile(scores: np.ndarray, risk: float) -> dict[str, Any]:
    return {"value": float(np.quantile(scores, 1.0 - risk)), "method": "quantile",
            "quantile": 1.0 - risk, "risk": risk, "n": len(scores)}


def calibrate_threshold(scores: np.ndarray, method: str = "pot", risk: float = 1e-3,
                        initial_quantile: float = 0.98) -> dict[str, Any]:
    """The card's ``threshold`` section from normal validation ``scores`` (NaNs ignored)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if not 0.0 < risk < 0.5:
        raise ConfigError(f"calibration.risk: expected a share in (0, 0.5), got {risk}")
    if len(scores) < 100:
        raise ConfigError(f"calibration: expected at least 100 validation scores, got "
                          f"{len(scores)}")
    if method == "quantile":
        return _quantile(scores, risk)
    if method != "pot":
        raise ConfigError(f"calibration.method: expected pot or quantile, got {method!r}")
    if not 0.5 <= initial_quantile < 1.0:
        raise ConfigError(f"calibration.initial_quantile: expected [0.5, 1), got "
                          f"{initial_quantile}")
    u = float(np.quantile(scores, initial_quantile))
    excess = scores[scores > u] - u
    n, n_u = len(scores), len(excess)
    ratio = risk * n / max(n_u, 1)
    if n_u < MIN_PEAKS or ratio >= 1.0:
        # Too few peaks to fit, or a risk that is not in the tail: the quantile is exact there.
        out = _quantile(scores, risk)
        out["note"] = (f"pot fell back to the empirical quantile: {n_u} peaks over "
                       f"u={u:.4g}, risk·n/N_u={ratio:.3g} (need >= {MIN_PEAKS} and < 1)")
        return out
    from scipy.stats import genpareto  # imported here: only calibration needs scipy

    shape, _, scale = genpareto.fit(excess, floc=0.0)
    if abs(shape) < 1e-9:
        value = u - scale * math.log(ratio)
    else:
        value = u + scale / shape * (ratio ** (-shape) - 1.0)
    return {"value": float(value), "method": "pot", "risk": risk,
            "initial_quantile": initial_quantile, "initial_threshold": u,
            "gpd_shape": float(shape), "gpd_scale": float(scale), "n": n, "n_peaks": n_u,
            "empirical_quantile": float(np.quantile(scores, 1.0 - risk))}
