"""A sensor anomaly score that sees sustained faults, on each entity's own level and scale.

Two things made flags on pumps and servers near chance: a 1-step residual only sees the step
*into* a level shift (after it the forecast follows the new level), and one scaler per artifact
cannot fit series whose levels differ by orders of magnitude. So every entity carries its own
running level ``m_f`` and scale ``s_f`` per feature, and the score accumulates the Gaussian
negative log-likelihood of each sample under them over several horizons:

1. **Learning** (the first ``L = warmup // 2`` samples): Welford's running mean and variance of
   each feature. No score, no flag.
2. Then, for each sample ``x``: ``z_f = (x_f - m_f) / max(s_f, floor_f)``, the per-sample NLL
   (up to constants) ``d = min(mean_f z_f², D_MAX)``, and one exponentially weighted average
   per horizon ``h`` (half-life ``h`` samples, ``a_h = 1 - 2^(-1/h)``)::

       e_h ← e_h + a_h (d - e_h)          (e_h starts at d)

   A single spike moves the short horizon only; a shift of ``k`` scales that lasts keeps every
   ``e_h`` near ``k²``, however long it lasts, which is what a sustained fault looks like.
   ``D_MAX`` bounds what one wild sample can add.

   Two options (off in cards made before them; README, "Sensors", has what each measured):
   with ``shrinkage`` ``λ < 1`` the learning also keeps Welford's cross-products, and
   ``mean_f z_f²`` becomes ``z' P z / F`` with ``P`` the inverse of the learnt correlation
   shrunk towards the identity, ``(1 - λ) C + λ I`` (Ledoit & Wolf 2004; λ = 1 is the
   independent case), so a broken correlation between sensors counts too. With
   ``mean_shift`` each horizon also averages the z vector itself, ``v_h ← v_h + a_h (z - v_h)``
   from 0, and adds the statistic ``v_h' P v_h / F · (2 - a_h) / a_h`` (MEWMA, Lowry et al.
   1992): a shift of a fraction of a scale in one sensor, lost in the mean of ``z²`` over all
   of them, stands out of the averaged noise.
3. **Reference** (samples ``L+1 .. warmup``): still no flag; each horizon's largest average
   ``R_h`` here is kept (each MEWMA statistic's likewise). From then on, with ``u_h = e_h /
   R_h``, ``score = min(max_h u_h, margin · u_1)`` and the flag is ``score > margin`` (4/3: SKAB's
   Conv-AE baseline sets its control limit the same way, a high quantile of normal residuals
   times 4/3): any horizon beyond its normal range by the margin raises it, and the shortest
   one back inside its range (``u_1 <= 1``) ends it at once rather than when the longest
   average has decayed (with ``mean_shift``, ``u_1`` is the larger of that ratio and
   ``2 v_1' P v_H / v_H' P v_H``: a small shift lifts the shortest average of z without taking
   it out of its normal range, so its flag holds while that average is still at least halfway
   to the longest one). Each entity so gets its own threshold from its own normal start;
   nothing is tuned on labelled data.
4. **Adapting**: after each sample not flagged, the level and scale follow it slowly
   (``m += b (x - m)``, ``s² += b ((x - m)² - s²)``, ``b = 1 - 2^(-1/adapt)``); a flagged
   sample leaves them, so a fault is not learnt as normal (or, with
   ``flagged_adapt_half_life``, is learnt at that slower half-life: a drift that once crossed
   the limit cannot hold the flag for ever).

All of it is a fixed-size float64 vector per entity (:data:`layout`), stepped for a batch of
entities at once; streaming an entity event by event and replaying it offline run the same
:func:`step`, so they agree to float rounding.

5. **Alarms**: the flags of one fault are one alarm: an alarm starts with a flag after at
   least ``hold`` samples without one (the *onset*; ``hold`` = the longest half-life, in which
   the long average still remembers the last flag) and ends ``hold`` samples after its last
   flag; a sample is *in* an alarm from its onset until ``hold`` samples after its last flag
   (all three from the flags alone). NAB scores alerts, so its detections are the onsets; SKAB
   labels every anomalous row, so its predictions are the rows in an alarm (a sustained fault
   whose flags flicker is one block of rows, one pair of changepoints).

A shift of 3 scales on both features for 40 samples (rows 200-239) of white noise: every row of
it is flagged, 7 of the 100 normal rows before it; three alarms start:

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(300, 2)); x[200:240] += 3.0
>>> out = SensorScore(warmup=100, half_lives=(2.0, 8.0)).run(x)
>>> int(out.flags[200:240].sum()), int(out.flags[100:200].sum())
(40, 7)
>>> np.flatnonzero(out.onsets).tolist()
[119, 151, 200]

The shift's alarm: its last flag at row 244, then ``hold`` (8) samples:

>>> a = np.flatnonzero(out.alarms[200:]) + 200; int(a.min()), int(a.max()), len(a)
(200, 251, 52)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.errors import ArtifactError

__all__ = ["D_MAX", "Run", "SensorScore"]

D_MAX = 1e4  # bound of one sample's mean squared z (a 100-scale jump)


@dataclass(frozen=True)
class Run:
    """One series' per-sample scores (NaN while learning) and flags."""

    scores: np.ndarray  # [T] float64
    flags: np.ndarray  # [T] bool
    onsets: np.ndarray  # [T] bool: the flags that start an alarm
    alarms: np.ndarray  # [T] bool: the samples in an alarm (item 5)
    state: np.ndarray  # the entity's state after its last sample


@dataclass(frozen=True)
class SensorScore:
    """The score's settings (from the artifact's card, or the benchmark's protocol)."""

    warmup: int
    half_lives: tuple[float, ...] = (4.0, 32.0)
    # the slowest adaptation whose flag rate on SKAB's anomaly-free run (held-out last 30 %, cut
    # into 1150-row pseudo-experiments) stayed near 1 % (30, 60, 120 tried; 3600 flagged 34-85 %
    # of those normal rows: the fluid temperature drifts); README, Quality
    adapt_half_life: float = 120.0
    margin: float = 4.0 / 3.0
    floor: tuple[float, ...] = field(default=())  # per-feature scale floor (user units)
    # MEWMA statistics beside the NLL averages (a sustained shift of the mean); off in cards
    # made before them
    mean_shift: bool = False
    # 1: the features taken as independent (cards made before); below 1: their correlation,
    # learnt with the level and scale, shrunk towards the identity by this much
    shrinkage: float = 1.0
    # the level and scale follow flagged samples too, with this half-life (None: never, as
    # cards made before), so that a drift that once crossed the limit cannot hold the flag
    # for ever
    flagged_adapt_half_life: float | None = None

    def __post_init__(self) -> None:
        if self.warmup < 4:
            raise ValueError(f"warmup: expected at least 4 samples, got {self.warmup}")
        if not 0.0 < self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage: expected a number in (0, 1], got {self.shrinkage}")
        if (not self.half_lives or min(self.half_lives) <= 0 or self.adapt_half_life <= 0
                or (self.flagged_adapt_half_life is not None
                    and self.flagged_adapt_half_life <= 0)):
            raise ValueError(f"half-lives: expected positive numbers, got {self.half_lives}, "
                             f"{self.adapt_half_life}, {self.flagged_adapt_half_life}")

    @classmethod
    def from_card(cls, card: dict[str, Any]) -> SensorScore | None:
        """The card's ``score.sensor`` section, or None when the card has none."""
        section = card.get("score", {}).get("sensor")
        if section is None:
            return None
        try:
            slow = section.get("flagged_adapt_half_life")
            return cls(int(section["warmup"]), tuple(float(h) for h in section["half_lives"]),
                       float(section["adapt_half_life"]), float(section["margin"]),
                       mean_shift=bool(section.get("mean_shift", False)),
                       shrinkage=float(section.get("shrinkage", 1.0)),
                       flagged_adapt_half_life=None if slow is None else float(slow))
        except (KeyError, TypeError, ValueError) as ex:
            raise ArtifactError(f"card score.sensor: expected warmup, half_lives, "
                                f"adapt_half_life and margin, got {section!r} ({ex})") from ex

    def card(self) -> dict[str, Any]:
        """The card's ``score.sensor`` section."""
        return {"warmup": self.warmup, "half_lives": list(self.half_lives),
                "adapt_half_life": self.adapt_half_life, "margin": self.margin,
                "mean_shift": self.mean_shift, "shrinkage": self.shrinkage,
                "flagged_adapt_half_life": self.flagged_adapt_half_life}

    def layout(self, n_features: int) -> int:
        """Length of one entity's state vector: n, the sample number of the last flag (0:
        none yet), then per statistic its reference maximum and its current value, then per
        feature the level and the variance (Welford's M2 while learning); with
        :attr:`mean_shift` each horizon's average of the z vector; with :attr:`shrinkage`
        below 1 an ``F × F`` matrix (Welford's cross-products while learning, then the
        inverse of the shrunk correlation)."""
        return (2 + 2 * self.statistics + 2 * n_features
                + self.mean_shift * len(self.half_lives) * n_features
                + (self.shrinkage < 1.0) * n_features * n_features)

    @property
    def statistics(self) -> int:
        """How many statistics are compared with their reference maxima: the NLL average per
        horizon, and with :attr:`mean_shift` the T² of the z vector's average per horizon."""
        return len(self.half_lives) * (1 + self.mean_shift)

    def empty(self, entities: int, n_features: int) -> np.ndarray:
        """Fresh states (a new entity, or one reset)."""
        return np.zeros((entities, self.layout(n_features)), dtype=np.float64)

    @property
    def hold(self) -> float:
        """Samples without a flag that end an alarm: the longest horizon's half-life."""
        return max(self.half_lives)

    def _precision(self, m2: np.ndarray, count: np.ndarray) -> np.ndarray:
        """Inverse of the correlation learnt from Welford's cross-products ``m2`` ``[E, F, F]``
        over ``count`` samples, shrunk towards the identity by :attr:`shrinkage` (so it stays
        invertible however few samples, however collinear the sensors)."""
        cov = m2 / np.maximum(count - 1, 1)[:, None, None]
        sd = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
        ok = sd > 1e-12
        outer = np.where(ok[:, :, None] & ok[:, None, :], sd[:, :, None] * sd[:, None, :], np.inf)
        eye = np.eye(m2.shape[1])
        corr = np.where(eye > 0, 1.0, cov / outer)
        return np.linalg.inv((1.0 - self.shrinkage) * corr + self.shrinkage * eye)

    def step(self, state: np.ndarray, x: np.ndarray, active: np.ndarray | None = None,
             warmup: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance ``state`` ``[E, S]`` (in place) by one sample ``x`` ``[E, F]`` per entity;
        rows where ``active`` is False are left alone; ``warmup`` ``[E]`` overrides the
        setting per entity. Returns (scores, flags, onsets, alarms) ``[E]``: the score is NaN
        until the warm-up ends; an onset is a flag that starts an alarm (no flag in the
        :attr:`hold` samples before it); a sample is in an alarm from its onset until
        :attr:`hold` samples after the alarm's last flag."""
        e, f = x.shape
        h, k = len(self.half_lives), self.statistics
        if state.shape != (e, self.layout(f)):
            raise ValueError(f"state: expected shape {(e, self.layout(f))}, got {state.shape}")
        act = np.ones(e, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        wu = np.full(e, self.warmup) if warmup is None else np.asarray(warmup)
        learn = wu // 2
        n = state[:, 0] + act
        state[:, 0] = n
        ref = state[:, 2:2 + k]
        acc = state[:, 2 + k:2 + 2 * k]
        o = 2 + 2 * k
        level = state[:, o:o + f]
        var = state[:, o + f:o + 2 * f]
        o += 2 * f
        means = state[:, o:o + self.mean_shift * h * f]
        o += self.mean_shift * h * f
        matrix = state[:, o:]  # empty unless shrinkage < 1
        scores = np.full(e, np.nan)
        flags = np.zeros(e, dtype=bool)
        onsets = np.zeros(e, dtype=bool)
        alarms = np.zeros(e, dtype=bool)

        learning = act & (n <= learn)
        if learning.any():  # Welford: var (and the matrix) hold M2 until the learning ends
            delta = x[learning] - level[learning]
            level[learning] += delta / n[learning, None]
            after = x[learning] - level[learning]
            var[learning] += delta * after
            if matrix.shape[1]:
                matrix[learning] += (delta[:, :, None] * after[:, None, :]).reshape(-1, f * f)
        ending = act & (n == learn)
        if matrix.shape[1] and ending.any():
            matrix[ending] = self._precision(matrix[ending].reshape(-1, f, f),
                                             learn[ending]).reshape(-1, f * f)
        var[ending] /= np.maximum(learn[ending] - 1, 1)[:, None]

        on = act & (n > learn)
        if not on.any():
            return scores, flags, onsets, alarms
        floor = np.asarray(self.floor, dtype=np.float64) if self.floor else 0.0
        scale = np.maximum(np.sqrt(var[on]), np.maximum(floor, 1e-12))
        z = (x[on] - level[on]) / scale
        precision = matrix[on].reshape(-1, f, f) if matrix.shape[1] else None

        def quadratic(v: np.ndarray) -> np.ndarray:
            """``v' P v / F`` per row of ``v`` ``[m, ..., F]`` (the mean of ``v²`` when the
            features are taken as independent)."""
            if precision is None:
                return np.mean(v * v, axis=-1)
            pv = np.einsum("mfg,m...g->m...f", precision, v)
            return np.sum(v * pv, axis=-1) / f

        a = 1.0 - 2.0 ** (-1.0 / np.asarray(self.half_lives, dtype=np.float64))
        d = np.minimum(quadratic(z), D_MAX)[:, None]
        nll = acc[on, :h]
        acc[on, :h] = np.where((n[on] == learn[on] + 1)[:, None], d, nll + a * (d - nll))
        if self.mean_shift:  # MEWMA (Lowry et al. 1992): averages of z from 0, then their T²
            avg = means[on].reshape(-1, h, f)
            avg += a[None, :, None] * (z[:, None, :] - avg)
            means[on] = avg.reshape(-1, h * f)
            acc[on, h:] = np.minimum(quadratic(avg) * ((2.0 - a) / a), D_MAX)
        reference = on & (n <= wu)
        ref[reference] = np.maximum(ref[reference], acc[reference])
        live = on & (n > wu)
        u = acc[live] / np.maximum(ref[live], 1e-12)
        # the shortest horizon back inside its normal range (u_1 <= 1) ends a flag at once,
        # instead of when the longest average has decayed; folded into the score so that the
        # flag is exactly ``score > margin``
        shortest = u[:, 0]
        if self.mean_shift:
            # a small shift lifts the shortest average of z, not out of its normal range: the
            # flag holds while it is still at least halfway to the longest one
            # (``2 v_1' P v_H / v_H' P v_H > 1``), the shift still there
            avg = means[live].reshape(-1, h, f)
            pl = avg[:, -1] if precision is None else np.einsum(
                "mfg,mg->mf", matrix[live].reshape(-1, f, f), avg[:, -1])
            half = 2.0 * np.sum(avg[:, 0] * pl, axis=1) / np.maximum(
                np.sum(avg[:, -1] * pl, axis=1), 1e-12)
            shortest = np.maximum(shortest, half)
        scores[live] = np.minimum(u.max(axis=1), self.margin * shortest)
        flags[live] = scores[live] > self.margin
        last = state[:, 1]
        onsets[:] = flags & ((last == 0) | (n - last > self.hold))
        last[flags] = n[flags]
        alarms[:] = act & (last > 0) & (n - last < self.hold)

        slow = self.flagged_adapt_half_life
        b = np.where(flags[on], 0.0 if slow is None else 1.0 - 2.0 ** (-1.0 / slow),
                     1.0 - 2.0 ** (-1.0 / self.adapt_half_life))[:, None]
        delta = x[on] - level[on]
        level[on] += b * delta
        var[on] += b * (delta * delta - var[on])
        return scores, flags, onsets, alarms

    def run_rows(self, state: np.ndarray, rows: Sequence[np.ndarray],
                 warmups: Sequence[int] | None = None) -> list[Run]:
        """Advance each entity's ``state[i]`` ``[E, S]`` (in place) by its row of consecutive
        samples ``rows[i]`` ``[L_i, F]``, all entities stepped together; the engine's call for
        one batch, and :meth:`run_many`'s from fresh states."""
        arrays = [np.asarray(v, dtype=np.float64) for v in rows]
        if not arrays:
            return []
        f = arrays[0].shape[1]
        if any(a.ndim != 2 or a.shape[1] != f or not np.all(np.isfinite(a)) for a in arrays):
            raise ValueError(f"rows: expected finite values [time, {f}] each, got shapes "
                             f"{[list(a.shape) for a in arrays]}")
        longest = max(len(a) for a in arrays)
        scores = np.full((len(arrays), longest), np.nan)
        flags = np.zeros((len(arrays), longest), dtype=bool)
        onsets = np.zeros((len(arrays), longest), dtype=bool)
        alarms = np.zeros((len(arrays), longest), dtype=bool)
        lengths = np.array([len(a) for a in arrays])
        padded = np.zeros((len(arrays), longest, f))
        for i, a in enumerate(arrays):
            padded[i, :len(a)] = a
        wu = None if warmups is None else np.asarray(warmups, dtype=np.int64)
        for t in range(longest):
            scores[:, t], flags[:, t], onsets[:, t], alarms[:, t] = self.step(
                state, padded[:, t], t < lengths, wu)
        return [Run(scores[i, :len(a)].copy(), flags[i, :len(a)].copy(),
                    onsets[i, :len(a)].copy(), alarms[i, :len(a)].copy(), state[i].copy())
                for i, a in enumerate(arrays)]

    def run_many(self, series: Sequence[np.ndarray],
                 warmups: Sequence[int] | None = None) -> list[Run]:
        """Every series as a fresh entity, all stepped together (the offline replay);
        ``warmups`` overrides the warm-up per series."""
        if not series:
            return []
        return self.run_rows(self.empty(len(series), np.shape(series[0])[1]), series, warmups)

    def run(self, values: np.ndarray) -> Run:
        """:meth:`run_many` for one series."""
        return self.run_many([values])[0]
