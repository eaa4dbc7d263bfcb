"""Per-entity score scaling: each entity's score relative to its own typical beat-sized peak.

The card's ``residual_scale`` is one number per feature for every entity, so an entity whose
normal pattern the network forecasts less well than the training entities' scores high all the
time, and one it forecasts well hides its anomalies below a shared threshold. Two more numbers
per entity, kept in its state, fix much of that (``evaluation`` measures it)::

    p_t  = max(s_t, g · p_{t-1}),                       g = 2^(-period / h)   peak hold
    μ_t  = μ_{t-1} + α (ln max(p_t, 1e-6) - μ_{t-1}),   α = min(1, period / τ)
    s'_t = s_t / exp(μ_{t-1})                                                 published score

``p`` follows each beat's peak score (half-life ``h`` = 0.3 s, about one QRS–T span), ``μ`` is a
running log average of it over ``τ`` = 10 s (about ten beats; one ectopic beat hardly moves a
log average). A fresh entity starts at ``p = 0``, ``μ = μ_0`` (the mean ``ln p`` over normal
validation samples, from the card). A NaN score (no forecast preceded the sample) leaves both as
they are and scales to NaN. All arithmetic is float64 on the float32 score.

Vectorised over many entities at once: rows ``[R, T]`` (NaN = no sample, so ragged rows are
NaN-padded at their end). The valid samples of each row are moved to its front, then processed
in blocks of :data:`BLOCK` steps with every row together. Inside a block the peak hold is one
running maximum in log space,
``ln p_j = (j+1) ln g + max(ln p_in, max_{i<=j} ln s_i - (i+1) ln g)``, and the log average,
a first-order linear filter, one product with the lower-triangular matrix
``W[j, i] = α (1-α)^(j-i)``: ``μ_j = (1-α)^(j+1) μ_in + Σ_i W[j, i] L_i``. Blocks keep both
exponents bounded, so the result equals the sample-by-sample recursion to float64 rounding.

>>> s = np.array([[np.nan, 1.0, 4.0, 1.0]])
>>> scale = EntityScale(mu0=0.0, peak_hold_s=1.0, average_s=2.0)
>>> out = scale.apply(s, period_s=1.0)
>>> out.scaled.round(3).tolist(), round(float(out.log_mu[0]), 4)
([[nan, 1.0, 4.0, 0.5]], 0.6931)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream.errors import ArtifactError

__all__ = ["AVERAGE_S", "BLOCK", "FLOOR", "PEAK_HOLD_S", "EntityScale", "Scaled",
           "typical_log_peak"]

PEAK_HOLD_S = 0.3
AVERAGE_S = 10.0
FLOOR = 1e-6
BLOCK = 64
_LOG_FLOOR = math.log(FLOOR)
_MIN_LOG_G = -700.0  # g below e^-700 is 0 for any score; keeps (i+1)·ln g finite


@dataclass(frozen=True)
class Scaled:
    """Scaled scores ``[R, T]`` (NaN where the input is), ``ln max(p_t, 1e-6)`` after each
    sample (held at NaN samples) and each row's final state."""

    scaled: np.ndarray
    log_peak: np.ndarray
    peak: np.ndarray  # [R] p after the row's last sample
    log_mu: np.ndarray  # [R] μ after the row's last sample


@dataclass(frozen=True)
class EntityScale:
    """The card's ``score.entity_scale`` section and the update it defines."""

    mu0: float
    peak_hold_s: float = PEAK_HOLD_S
    average_s: float = AVERAGE_S

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> EntityScale | None:
        """The section of ``card["score"]``, or None when the card has none (no scaling)."""
        section = card.get("score", {}).get("entity_scale")
        if section is None:
            return None
        try:
            out = cls(float(section["mu0"]), float(section.get("peak_hold_s", PEAK_HOLD_S)),
                      float(section.get("average_s", AVERAGE_S)))
        except (TypeError, KeyError, ValueError) as ex:
            raise ArtifactError(f"card score.entity_scale: expected {{'mu0': number, "
                                f"'peak_hold_s': number, 'average_s': number}}, got "
                                f"{section!r}") from ex
        if not (math.isfinite(out.mu0) and out.peak_hold_s > 0 and out.average_s > 0):
            raise ArtifactError(f"card score.entity_scale: expected a finite mu0 and positive "
                                f"peak_hold_s, average_s, got {section!r}")
        return out

    def card(self) -> dict[str, float]:
        return {"peak_hold_s": self.peak_hold_s, "average_s": self.average_s, "mu0": self.mu0}

    def apply(self, scores: np.ndarray, period_s: float, peak: np.ndarray | None = None,
              log_mu: np.ndarray | None = None) -> Scaled:
        """Scale rows of scores ``[R, T]`` from the states ``peak``, ``log_mu`` ``[R]`` (a
        fresh entity's, ``0`` and ``μ_0``, when None)."""
        s = np.asarray(scores, dtype=np.float64)
        if s.ndim != 2:
            raise ValueError(f"scores: expected [rows, time], got shape {list(s.shape)}")
        n_rows, n = s.shape
        p_in = np.zeros(n_rows) if peak is None else np.asarray(peak, dtype=np.float64)
        mu_in = (np.full(n_rows, self.mu0) if log_mu is None
                 else np.asarray(log_mu, dtype=np.float64))
        log_g = max(math.log(0.5) * period_s / self.peak_hold_s, _MIN_LOG_G)
        alpha = min(1.0, period_s / self.average_s)
        valid = ~np.isnan(s)
        counts = valid.sum(axis=1)
        width = int(counts.max()) if n_rows and n else 0
        # valid samples moved to the front of their row, order kept
        front = np.arange(width)[None, :] < counts[:, None]
        packed = np.full((n_rows, width), -np.inf)
        with np.errstate(divide="ignore"):
            packed[front] = np.log(s[valid])
            lp_in = np.log(np.maximum(p_in, 0.0))
        raw = np.empty((n_rows, width))  # ln p
        lpeak = np.empty((n_rows, width))  # ln max(p, floor)
        mu = np.empty((n_rows, width))
        lag = np.arange(BLOCK)
        steps = np.arange(1, BLOCK + 1) * log_g
        decay = (1.0 - alpha) ** (lag[:, None] - lag[None, :]).clip(0)
        weights = np.tril(alpha * decay)  # W[j, i]
        carry_mu = (1.0 - alpha) ** np.arange(1, BLOCK + 1)
        lp, m = lp_in, mu_in
        for lo in range(0, width, BLOCK):
            b = min(BLOCK, width - lo)
            run = np.maximum.accumulate(packed[:, lo:lo + b] - steps[None, :b], axis=1)
            block_lp = steps[None, :b] + np.maximum(lp[:, None], run)
            floored = np.maximum(block_lp, _LOG_FLOOR)
            block_mu = m[:, None] * carry_mu[None, :b] + floored @ weights[:b, :b].T
            raw[:, lo:lo + b] = block_lp
            lpeak[:, lo:lo + b] = floored
            mu[:, lo:lo + b] = block_mu
            lp, m = block_lp[:, -1], block_mu[:, -1]
        # the state before each valid sample divides it; the state after the last one is kept
        mu_before = np.concatenate([mu_in[:, None], mu[:, :-1]], axis=1)[:, :width]
        scaled = np.full((n_rows, n), np.nan)
        scaled[valid] = s[valid] / np.exp(mu_before[front])
        last = counts - 1
        has = counts > 0
        rows = np.arange(n_rows)
        peak_out, mu_out = p_in.copy(), mu_in.copy()
        if width:
            peak_out[has] = np.exp(raw[rows[has], last[has]])
            mu_out[has] = mu[rows[has], last[has]]
        # ln max(p, floor) after each sample, held over NaN samples
        held = np.concatenate([np.maximum(lp_in, _LOG_FLOOR)[:, None], lpeak], axis=1)
        index = np.cumsum(valid, axis=1)
        log_peak = np.take_along_axis(held, index, axis=1)
        return Scaled(scaled, log_peak, peak_out, mu_out)


def typical_log_peak(scores: Sequence[np.ndarray], normal: Sequence[np.ndarray],
                     period_s: float, peak_hold_s: float = PEAK_HOLD_S) -> float:
    """``μ_0``: the mean ``ln max(p_t, 1e-6)`` of fresh peak holds over the samples marked in
    ``normal`` (calibration: normal validation samples past the warm-up); 0 if none."""
    probe = EntityScale(0.0, peak_hold_s)
    parts = [probe.apply(np.asarray(s, dtype=np.float64)[None], period_s).log_peak[0][m]
             for s, m in zip(scores, normal, strict=True)]
    pooled = np.concatenate(parts) if parts else np.zeros(0)
    return float(pooled.mean()) if len(pooled) else 0.0

