"""Per-entity heartbeats: online QRS detection, causal beat features, the beat classifier.

:class:`BeatFeatures` turns each entity's ECG lead (one chunk at a time, any split) into one
feature vector per detected beat; :class:`BeatStage` adds the recurrent classifier
(:class:`stream.beatnet.BeatNet`) and returns :class:`BeatOut` per decided beat. Everything an
entity needs between chunks is one fixed-size numpy row (``state_dtype``), so the worker keeps it
in Redis beside the sample-level state.

**When a beat is decided.** Beat ``i`` (R peak at sample ``r_i``) waits for its post-RR interval,
so a premature beat's compensatory pause is visible. With ``D`` the detector's report delay in
samples (``ceil(delay_s·fs) + 1``) and ``C`` the cap (``cap_s·fs``)::

    decided_i = max(r_{i+1} + D, r_i + H)     if r_{i+1} - r_i <= C      post_rr = r_{i+1} - r_i
    decided_i = r_i + C + D                   otherwise                  post_rr = C

where ``H`` is half the morphology window. By sample ``r + D`` the detector has reported any
peak ``r``, so both rules depend only on the stream, never on how it was cut into chunks: the
beats, their features and ``decided`` are identical for any chunking (inputs are cast to float32
on entry, and the per-beat arithmetic is float64 on those values).

**Features of beat i** (``FEATURES``; all from samples up to ``decided_i``), each relative to the
entity's own running references so that one network fits every patient:

- rhythm: pre-RR and post-RR over the running short RR average (``s ← s + (rr - s)/8``),
  pre-RR over the long one (``l ← l + (rr - l)·min(1, rr/300 s)``, about 5 minutes); post/pre;
  s/l (de Chazal's set); and, scale-free, against the *local* rhythm of the last 16 pre-RRs
  ``q``: pre-RR over ``m = median(q)``, and ``z(pre)``, ``z(post)`` with
  ``z(x) = slog((x - m)/σ)``, ``σ = max(median|Δq|, 0.025·m)`` (median absolute successive
  difference) and ``slog(z) = sign(z)·log(1 + |z|)``. In atrial fibrillation ``σ`` is large,
  so an irregular but normal beat is not far from its neighbours; in sinus rhythm ``σ`` is
  small and a premature beat stands out, whatever the patient's rate;
- morphology: the window ``r_i ± H`` (about ±267 ms) minus its median (baseline), averaged in
  ``M = 32`` blocks of ``step`` samples → ``w``; the entity's running dominant-beat template
  ``t`` (exponential, ``α = max(1/(k+1), 1/16)`` over the beats it has taken) and its
  peak-to-peak ``a = max(ptp t, 0.05 mV)``: correlation(w, t), rms(w - t)/a, ptp(w)/a and
  ``(w - t)/a`` (32 values); and ``slog((dist - μ)/max(δ, 0.01))`` with ``μ``, ``δ`` the
  running mean and mean absolute deviation of ``dist`` over the beats the template took (same
  ``α``): the distance in units of this patient's own beat-to-beat variation;
- QRS: the half-amplitude width of the baseline-removed central ±150 ms over the template's
  running width, log of the energy of the central ±50 ms and of the steepest slope over the
  template's running values.

Absolute quantities (RR in seconds, QRS width in seconds, the raw window ``w/a``) were features
once and are not: on held-out DS1 patients they let the network learn patients rather than beats
(validation loss 0.68 with them, 0.16 without; pooled abnormal F1 0.76 → 0.96).

**References that follow the dominant rhythm.** A beat is *premature* when its pre-RR is below
both ``0.8·m`` and ``m - 3σ`` (in sinus rhythm the classic 80 % rule; in an irregular rhythm
the local dispersion widens it), and *template-like* when its correlation with the template is
above 0.7 (or it is one of the template's first 8). ``q`` and ``s`` take every pre-RR except
those of beats both premature and unlike the template (ectopic-looking), so in bigeminy the
ventricular beats do not become half of the rhythm they are judged against, while in atrial
fibrillation, where every beat looks like the template, all RRs count and ``σ`` is large. ``l``
and the template take only template-like beats that are not premature. After 16 consecutive
beats the template did not take, it starts afresh (its first 8 beats again): the dominant beat
has changed (a new conduction pattern, a lead moved), and a frozen template would make every
later beat look ectopic. These are rules on the features, not the network's class: a template
fed by the network would make the training features depend on the weights being trained; with
the rules, the features seen in training are exactly those streamed. The sample-level
forecaster's residuals are accepted (``residuals``) but not used as a feature.

**Irregular rhythm.** In atrial fibrillation or flutter there is no sinus rhythm for a beat to
be premature against, and cardiologists annotate its beats N; a call of S there rests on timing
alone and is not one a cardiologist would trust. DS1 (training) has no such rhythm, so the rule
is a published one, not learned: :func:`irregular_rhythm`, Dash et al. (2009)'s AF detector
with their constants, over the last ``AF_WINDOW`` = 128 pre-RRs of beats that are not premature
(above). Dash et al. trim 8 + 8 outliers against ectopic beats; frequent ectopy defeats the
trim, and leaving the premature beats' short RRs out does what the trim meant to, while in
fibrillation the local dispersion is so wide that hardly a beat is premature. Chosen on DS1,
whose rhythms are all non-AF: over all RRs the rule marks 4.8 % of its beats irregular, 63 of
its 810 S beats among them; over the RRs the references take, 3.9 % and 55; without the
premature beats, 3.2 % and 6 (the rest in ventricular runs, flutter and bigeminy). For a beat
decided while it holds, the S part leaves ``p_abnormal`` (``p·(1 - q_S)``, ``q`` the network's
S/V/F softmax) and S cannot be the class called (:func:`without_sveb`): a ventricular beat in
fibrillation is still flagged, an irregular normal one is not called supraventricular, and the
beat record says why (``irregular``). The rule uses only the entity's own RR history, so it is
causal and the same for any chunking.

**State size.** One row holds the detector's state, a float32 ring of ``C + D + H + 2`` samples
(the largest part: at 360 Hz and a 2 s cap about 3 kB; :attr:`BeatFeatures.ring_bytes`), up to
``PENDING`` undecided R peaks, the RR averages, the last 16 pre-RRs, the template (``M``
float64), the count of beats since it last took one, the last 128 RRs of the rhythm rule
(int32 samples) and the network's hidden state.

>>> feats = BeatFeatures(360.0, detector=_Demo())
>>> sig = np.zeros(3600); sig[[100, 460, 820, 1180, 1500, 1900, 2260]] = 1.0
>>> beats = feats.extract(feats.initial(1), [sig])[0]
>>> [(b.sample, b.rr_s, b.decided) for b in beats][:3]
[(100, None, 461), (460, 1.0, 821), (820, 1.0, 1181)]
>>> len(FEATURES), round(float(beats[4].features[FEATURES.index("pre_rr_short")]), 3)
(47, 0.889)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stream.beatnet import CLASSES, BeatNet
from stream.errors import ArtifactError

__all__ = ["FEATURES", "BeatFeatures", "BeatOut", "BeatStage", "DecidedBeat", "irregular_rhythm",
           "offline_beats", "without_sveb"]

M = 32  # morphology blocks
PENDING = 32  # most undecided R peaks one entity may hold
RR_FEATURES = ("pre_rr_short", "post_rr_short", "pre_rr_long", "post_pre", "short_long",
               "pre_rr_local", "pre_rr_z", "post_rr_z")
SHAPE_FEATURES = ("corr", "dist", "amp", "width_ratio", "log_energy_ratio", "log_slope_ratio",
                  "dist_z")
FEATURES = (*RR_FEATURES, *SHAPE_FEATURES, *(f"d{j}" for j in range(M)))
AMP_FLOOR_MV = 0.05
TEMPLATE_WARMUP = 8
TEMPLATE_MIN_ALPHA = 1 / 16
SHORT_ALPHA = 1 / 8
LONG_TAU_S = 300.0
PREMATURE_RATIO = 0.8  # premature: pre-RR below this fraction of the local median RR ...
PREMATURE_Z = 3.0  # ... and below it by this many local RR dispersions
TEMPLATE_STALE = 16  # consecutive beats the template did not take before it starts afresh
TEMPLATE_CORR = 0.7
RR_HISTORY = 16  # pre-RRs behind the local median and dispersion
RR_DISP_FLOOR = 0.025  # the local RR dispersion is at least this fraction of the local median
DIST_DISP_FLOOR = 0.01  # the template-distance dispersion is at least this (amplitude units)
# Dash et al. (2009)'s atrial fibrillation rule, their published constants (see irregular_rhythm)
AF_WINDOW = 128  # RRs per segment
AF_TRIM = 8  # the 8 longest and the 8 shortest RRs left out of RMSSD and Shannon entropy
AF_RMSSD = 0.1  # RMSSD over the mean RR above this ...
AF_ENTROPY = 0.7  # ... and the normalised Shannon entropy of 16 bins above this ...
AF_BINS = 16
AF_TPR = (0.54, 0.77)  # ... and the turning point ratio between these: irregular


def _median(xs: list[float]) -> float:
    """Median of a short list (16 values: plain Python is several times faster than numpy)."""
    o = sorted(xs)
    h = len(o) // 2
    return o[h] if len(o) % 2 else (o[h - 1] + o[h]) / 2


def _mean(x: np.ndarray) -> float:
    """``x.mean()`` of a 1-D array without numpy's Python-level dispatch: the same sum, the same
    division (bit for bit), a few times faster on the short arrays of one beat."""
    return np.add.reduce(x) / x.size


def _ptp(x: np.ndarray) -> float:
    """``np.ptp(x)``: max - min."""
    return float(np.maximum.reduce(x) - np.minimum.reduce(x))


def _median_of(x: np.ndarray) -> float:
    """``np.median(x)`` of a 1-D array of finite values: the same two order statistics and their
    mean, without numpy's generic path (the largest cost of a beat's features otherwise)."""
    h = x.size // 2
    kth = (h,) if x.size % 2 else (h - 1, h)
    return np.add.reduce(np.partition(x, kth)[kth[0]:h + 1]) / len(kth)


def _slog(z: float) -> float:
    """``sign(z)·log(1 + |z|)``: a standardised deviation compressed, so a 40-sigma beat does
    not dominate the feature's scale."""
    return math.copysign(math.log1p(abs(z)), z)


def irregular_rhythm(rr: np.ndarray) -> bool:
    """Whether ``AF_WINDOW`` consecutive RR intervals (any unit, oldest first) are irregular
    the way atrial fibrillation is, by Dash S, Chon KH, Lu S, Raeder EA, "Automatic real time
    detection of atrial fibrillation", Ann Biomed Eng 37(9):1701-1709 (2009), with their
    published constants: 128 RRs; with the 8 longest and 8 shortest left out (ectopic beats and
    their pauses), RMSSD over the mean RR > 0.1 and the Shannon entropy of a 16-bin histogram
    over log(16) > 0.7; and the turning point ratio of the 128 in (0.54, 0.77), which excludes
    the alternation of bigeminy (ratio near 1) and slow trends (near 0).

    >>> rng = np.random.default_rng(0)
    >>> irregular_rhythm(rng.uniform(0.5, 1.1, 128)), irregular_rhythm(np.full(128, 0.8))
    (True, False)
    >>> irregular_rhythm(np.tile([0.5, 1.1], 64))  # ventricular bigeminy: regularly irregular
    False
    """
    x = np.asarray(rr, dtype=np.float64)
    mid = x[1:-1]
    turns = np.count_nonzero((mid - x[:-2]) * (mid - x[2:]) > 0)
    if not AF_TPR[0] < turns / x.size < AF_TPR[1]:
        return False
    kept = x[np.sort(np.argsort(x, kind="stable")[AF_TRIM:x.size - AF_TRIM])]
    d = kept[1:] - kept[:-1]
    if not math.sqrt(_mean(d * d)) > AF_RMSSD * _mean(kept):
        return False
    lo, hi = kept.min(), kept.max()
    if hi <= lo:
        return False
    counts = np.bincount(np.minimum(((kept - lo) * (AF_BINS / (hi - lo))).astype(np.int64),
                                    AF_BINS - 1), minlength=AF_BINS)
    q = counts[counts > 0] / kept.size
    return float(-(q * np.log(q)).sum() / math.log(AF_BINS)) > AF_ENTROPY


def without_sveb(p: np.ndarray, logits: np.ndarray, irregular: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``p_abnormal`` and class logits with the S part taken out where the rhythm is irregular:
    ``p·(1 - q_S)``, ``q`` the softmax of the S, V, F logits, and S never the likeliest class
    there (see the module docstring, "Irregular rhythm")."""
    irr = np.asarray(irregular, dtype=bool)
    if not irr.any():
        return p, logits
    z = logits[irr, 1:] - logits[irr, 1:].max(axis=1, keepdims=True)
    e = np.exp(z)
    p, logits = p.copy(), logits.copy()
    p[irr] *= 1.0 - e[:, 0] / e.sum(axis=1)
    logits[irr, 1] = -np.inf
    return p, logits


class BeatOut(NamedTuple):
    """One decided beat as the worker publishes it."""

    sample: int
    rr_s: float | None
    cls: str
    p_abnormal: float
    anomaly: bool
    decided: int
    irregular: bool  # the rhythm rule held: S was taken out of p_abnormal and cls (without_sveb)


class DecidedBeat(NamedTuple):
    """One decided beat's features, before the network."""

    sample: int
    rr_s: float | None
    decided: int
    features: np.ndarray  # float64 [len(FEATURES)]
    irregular: bool  # the rhythm rule held at the last RR of a beat not premature


class _Demo:
    """A stand-in detector for the doctest: every sample above 0.5 is a peak, reported at once."""

    state_dtype = np.dtype([("n", np.int64)])
    delay_s = 0.0

    def initial(self, n: int) -> np.ndarray:
        return np.zeros(n, self.state_dtype)

    def process(self, states: np.ndarray, chunks: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = []
        for i, c in enumerate(chunks):
            out.append(np.flatnonzero(c > 0.5).astype(np.int64) + states["n"][i])
            states["n"][i] += len(c)
        return out


@dataclass(frozen=True)
class _Geometry:
    fs: float
    step: int  # samples per morphology block
    half: int  # H: half the morphology window, samples
    cap: int  # C
    delay: int  # D
    ring: int
    centre_width: int  # ±150 ms
    centre_energy: int  # ±50 ms


class BeatFeatures:
    """Detector + causal per-beat features for many entities (see the module docstring)."""

    def __init__(self, fs: float, cap_s: float = 2.0, block_s: float = 1 / 60,
                 detector: Any = None) -> None:
        if not (math.isfinite(fs) and fs > 0):
            raise ArtifactError(f"beats fs: expected a positive sampling rate in Hz, got {fs!r}")
        if detector is None:
            from stream.qrs import QRSDetector

            detector = QRSDetector(fs)
        self.detector = detector
        step = max(1, round(block_s * fs))
        half = M * step // 2
        cap = round(cap_s * fs)
        delay = math.ceil(detector.delay_s * fs) + 1
        self.geo = _Geometry(fs, step, half, cap, delay, cap + delay + half + 2,
                             round(0.15 * fs), round(0.05 * fs))
        self.cap_s, self.block_s = cap_s, block_s
        self.state_dtype = np.dtype([
            ("qrs", detector.state_dtype), ("n", np.int64), ("ring", np.float32, (self.geo.ring,)),
            ("pending", np.int64, (PENDING,)), ("n_pending", np.int64), ("prev_r", np.int64),
            ("rr_short", np.float64), ("rr_long", np.float64), ("template", np.float64, (M,)),
            ("n_template", np.int64), ("tmpl_width", np.float64), ("tmpl_energy", np.float64),
            ("tmpl_slope", np.float64), ("rr_hist", np.float64, (RR_HISTORY,)),
            ("n_rr", np.int64), ("n_stale", np.int64), ("dist_mean", np.float64),
            ("dist_disp", np.float64), ("af_rr", np.int32, (AF_WINDOW,)), ("n_af_rr", np.int64),
            ("af_irregular", np.bool_)])

    @property
    def fs(self) -> float:
        return self.geo.fs

    @property
    def ring_bytes(self) -> int:
        return self.geo.ring * 4

    def initial(self, n: int) -> np.ndarray:
        st = np.zeros(n, self.state_dtype)
        st["qrs"] = self.detector.initial(n)
        st["prev_r"] = -1
        for name in ("rr_short", "rr_long", "tmpl_width", "tmpl_energy", "tmpl_slope"):
            st[name] = np.nan
        return st

    def extract(self, states: np.ndarray, signals: Sequence[np.ndarray]) -> list[list[DecidedBeat]]:
        """Advance ``states[i]`` by ``signals[i]`` (the lead, float64 user units); return the
        beats decided in this call per entity, in order."""
        if len(signals) != len(states):
            raise ValueError(f"signals: expected one array per state row ({len(states)}), got "
                             f"{len(signals)}")
        sig64 = []
        for i, s in enumerate(signals):
            a = np.asarray(s, dtype=np.float64)
            if a.ndim != 1:
                raise ValueError(f"signals[{i}]: expected a 1-D array of samples, got shape "
                                 f"{a.shape}")
            sig64.append(a.astype(np.float32).astype(np.float64))
        peaks = self.detector.process(states["qrs"], sig64)
        lengths = np.fromiter(map(len, sig64), np.int64, len(sig64))
        busy = self._busy(states, lengths, np.fromiter(map(len, peaks), np.int64, len(peaks)))
        out: list[list[DecidedBeat]] = [[] for _ in sig64]
        for i in np.flatnonzero(busy).tolist():
            out[i] = self._entity(states, i, sig64[i], peaks[i])
        self._store(states, np.flatnonzero(lengths > 0), sig64, lengths)
        return out

    def _busy(self, st: np.ndarray, lengths: np.ndarray, n_peaks: np.ndarray) -> np.ndarray:
        """The rows that take new R peaks or decide their first pending one in this call: the
        others have nothing for :meth:`_entity` to do (most rows of a short chunk)."""
        g = self.geo
        n_pending, r0, r1 = st["n_pending"], st["pending"][:, 0], st["pending"][:, 1]
        close = (n_pending >= 2) & (r1 - r0 <= g.cap)
        first = np.where(close, np.maximum(r1 + g.delay, r0 + g.half), r0 + g.cap + g.delay)
        return (n_peaks > 0) | ((n_pending > 0) & (first < st["n"] + lengths))

    def _store(self, st: np.ndarray, rows: np.ndarray, sig: list[np.ndarray],
               lengths: np.ndarray) -> None:
        """Put ``rows``' new samples in their rings (sample k at k % ring) and count them, in
        one array operation per chunk length, after :meth:`_entity` has read the old ones."""
        ring = self.geo.ring
        n_old = st["n"][rows]
        for t in np.unique(lengths[rows]).tolist():
            sel = lengths[rows] == t
            idx, k = rows[sel], min(t, ring)
            cols = (n_old[sel, None] + (t - k) + np.arange(k)) % ring
            st["ring"][idx[:, None], cols] = np.stack([sig[i][t - k:] for i in idx.tolist()])
        st["n"][rows] = n_old + lengths[rows]

    def _entity(self, st: np.ndarray, i: int, sig: np.ndarray, peaks: np.ndarray
                ) -> list[DecidedBeat]:
        g = self.geo
        n_old = int(st["n"][i])
        n_new = n_old + len(sig)
        ring = st["ring"][i]
        # samples n_old - ring .. n_new as one array (the ring holds sample k at k % ring)
        at = n_old % g.ring  # the slot of sample n_old - ring
        ext = np.concatenate([ring[at:], ring[:at], sig], dtype=np.float64)
        base = n_old - g.ring
        pending = [*st["pending"][i][:st["n_pending"][i]].tolist(), *np.asarray(peaks).tolist()]
        out = []
        k = 0
        while k < len(pending):
            r = pending[k]
            nxt = pending[k + 1] if k + 1 < len(pending) else None
            if nxt is not None and nxt - r <= g.cap:
                decided, post = max(nxt + g.delay, r + g.half), nxt - r
            else:
                decided, post = r + g.cap + g.delay, g.cap
            if decided >= n_new:
                break
            seg = ext[r - g.half - base:r + g.half - base]
            out.append(self._beat(st, i, r, post, decided, seg))
            k += 1
        rest = pending[k:]
        if len(rest) > PENDING:
            raise RuntimeError(f"beats: expected at most {PENDING} undecided R peaks per entity, "
                               f"got {len(rest)} (peaks closer than the detector allows?)")
        st["pending"][i][:len(rest)] = rest
        st["n_pending"][i] = len(rest)
        return out

    def _beat(self, st: np.ndarray, i: int, r: int, post: int, decided: int,
              seg: np.ndarray) -> DecidedBeat:
        g = self.geo
        fs = g.fs
        prev = int(st["prev_r"][i])
        pre_s = (r - prev) / fs if prev >= 0 else None
        post_s = post / fs
        short, long_ = float(st["rr_short"][i]), float(st["rr_long"][i])
        pre_eff = pre_s if pre_s is not None else post_s
        short_eff = short if math.isfinite(short) else pre_eff
        long_eff = long_ if math.isfinite(long_) else short_eff
        rr = [pre_eff / short_eff, post_s / short_eff, pre_eff / long_eff, post_s / pre_eff,
              short_eff / long_eff]
        hist = st["rr_hist"][i]
        past = hist[RR_HISTORY - min(int(st["n_rr"][i]), RR_HISTORY):].tolist()
        med = _median(past) if past else short_eff
        masd = _median([abs(y - x) for x, y in pairwise(past)]) if len(past) > 1 else 0.0
        scale = max(masd, RR_DISP_FLOOR * med)
        premature = pre_eff < med - max(PREMATURE_Z * scale, (1 - PREMATURE_RATIO) * med)
        rr += [pre_eff / med, _slog((pre_eff - med) / scale), _slog((post_s - med) / scale)]

        seg = seg - _median_of(seg)
        w = np.add.reduce(seg.reshape(M, g.step), axis=1) / g.step
        nt = int(st["n_template"][i])
        t = st["template"][i].copy() if nt else w.copy()
        a = max(_ptp(t), AMP_FLOOR_MV)
        dw, dt = w - _mean(w), t - _mean(t)  # the deviations behind w.std(), t.std() and corr
        sw, st_ = math.sqrt(_mean(dw * dw)), math.sqrt(_mean(dt * dt))
        corr = float(_mean(dw * dt) / (sw * st_)) if sw > 0 and st_ > 0 else 0.0
        dist = float(math.sqrt(_mean((w - t) ** 2)) / a)
        centre = seg[g.half - g.centre_width:g.half + g.centre_width + 1]
        mag = np.abs(centre)
        top = np.maximum.reduce(mag)
        above = (mag >= 0.5 * top).nonzero()[0] if top > 0 else np.array([0])
        width = (above[-1] - above[0] + 1) / fs
        core = seg[g.half - g.centre_energy:g.half + g.centre_energy + 1]
        energy = float((core * core).sum() / fs) + 1e-9
        slope = float(np.maximum.reduce(np.abs(centre[1:] - centre[:-1])) * fs) + 1e-9
        tw, te, ts = (float(st[k][i]) for k in ("tmpl_width", "tmpl_energy", "tmpl_slope"))
        if not nt:
            tw, te, ts = width, energy, slope
        dm, dd = (float(st["dist_mean"][i]), float(st["dist_disp"][i])) if nt else (dist, 0.0)
        shape = [corr, dist, _ptp(w) / a, width / tw, math.log(energy / te),
                 math.log(slope / ts), _slog((dist - dm) / max(dd, DIST_DISP_FLOOR))]
        feats = np.concatenate([rr, shape, (w - t) / a])

        # the references follow the dominant rhythm: an ectopic-looking beat (premature and
        # unlike the template) does not enter the RR references, and only a template-like,
        # not premature beat enters the long RR average and the template
        warm = nt < TEMPLATE_WARMUP
        dominant = warm or corr > TEMPLATE_CORR
        if pre_s is not None and (dominant or not premature):
            hist[:-1] = hist[1:].copy()
            hist[-1] = pre_s
            st["n_rr"][i] += 1
            st["rr_short"][i] = pre_s if not math.isfinite(short) else short + (
                pre_s - short) * SHORT_ALPHA
            if dominant and not premature:
                st["rr_long"][i] = pre_s if not math.isfinite(long_) else long_ + (
                    pre_s - long_) * min(1.0, pre_s / LONG_TAU_S)
        if warm or (dominant and not premature):
            alpha = max(1 / (nt + 1), TEMPLATE_MIN_ALPHA)
            st["template"][i] = t + (w - t) * alpha
            st["tmpl_width"][i] = tw + (width - tw) * alpha
            st["tmpl_energy"][i] = te + (energy - te) * alpha
            st["tmpl_slope"][i] = ts + (slope - ts) * alpha
            st["dist_disp"][i] = dd + (abs(dist - dm) - dd) * alpha
            st["dist_mean"][i] = dm + (dist - dm) * alpha
            st["n_template"][i] = nt + 1
            st["n_stale"][i] = 0
        else:
            st["n_stale"][i] += 1
            if st["n_stale"][i] >= TEMPLATE_STALE:  # the dominant beat changed: start afresh
                st["n_template"][i] = 0
                st["n_stale"][i] = 0
        st["prev_r"][i] = r
        if pre_s is not None and not premature:  # the rhythm without its premature beats
            af = st["af_rr"][i]
            af[:-1] = af[1:].copy()
            af[-1] = r - prev
            st["n_af_rr"][i] += 1
            st["af_irregular"][i] = st["n_af_rr"][i] >= AF_WINDOW and irregular_rhythm(af)
        return DecidedBeat(r, pre_s, decided, feats, bool(st["af_irregular"][i]))

    def card(self) -> dict[str, Any]:
        """The parameters a card's ``beats`` section records (``BeatFeatures(**card)``)."""
        return {"fs": self.fs, "cap_s": self.cap_s, "block_s": self.block_s}


class BeatStage:
    """Features + the beat network + the threshold on ``p_abnormal``: what the worker runs."""

    def __init__(self, features: BeatFeatures, net: BeatNet, mean: np.ndarray, std: np.ndarray,
                 threshold: float, lead: int = 0) -> None:
        if mean.shape != (len(FEATURES),) or std.shape != (len(FEATURES),) or not np.all(std > 0):
            raise ArtifactError(f"beats normalisation: expected {len(FEATURES)} means and positive "
                                f"stds, got shapes {mean.shape}, {std.shape}")
        if net.n_features != len(FEATURES):
            raise ArtifactError(f"beats network: expected {len(FEATURES)} inputs, got "
                                f"{net.n_features}")
        self.features, self.net = features, net.eval()
        self.mean, self.std = mean.astype(np.float64), std.astype(np.float64)
        self.threshold, self.lead = float(threshold), lead
        self.state_dtype = np.dtype([("feat", features.state_dtype),
                                     ("hidden", np.float32, (net.state_size,))])

    @property
    def fs(self) -> float:
        return self.features.fs

    def initial(self, n: int) -> np.ndarray:
        st = np.zeros(n, self.state_dtype)
        st["feat"] = self.features.initial(n)
        return st

    def normalise(self, feats: np.ndarray) -> np.ndarray:
        """Raw feature rows → the network's float32 inputs."""
        return ((feats - self.mean) / self.std).astype(np.float32)

    def process(self, states: np.ndarray, signals: Sequence[np.ndarray],
                residuals: Sequence[np.ndarray] | None = None) -> list[list[BeatOut]]:
        """Advance every entity by its new lead samples; the beats decided in this call.

        ``residuals`` (the forecaster's per-sample scores) are accepted for the worker's
        interface and not used (see the module docstring)."""
        decided = self.features.extract(states["feat"], signals)
        rows = [i for i, d in enumerate(decided) if d]
        out: list[list[BeatOut]] = [[] for _ in decided]
        if not rows:
            return out
        counts = np.array([len(decided[i]) for i in rows])
        lengths = torch.from_numpy(counts)
        width = int(counts.max())
        x = np.zeros((len(rows), width, len(FEATURES)), dtype=np.float32)
        # every decided beat normalised in one call, then put at (its row, its place in the row)
        at = np.repeat(np.cumsum(counts) - counts, counts)
        x[np.repeat(np.arange(len(rows)), counts), np.arange(len(at)) - at] = self.normalise(
            np.stack([b.features for i in rows for b in decided[i]]))
        with torch.no_grad():
            state = self.net.unpack_state(torch.from_numpy(states["hidden"][rows]))
            z = torch.relu(self.net.embed(torch.from_numpy(x)))
            packed = pack_padded_sequence(z, lengths, batch_first=True, enforce_sorted=False)
            top, state = self.net.rnn(packed, state)
            top, _ = pad_packed_sequence(top, batch_first=True, total_length=width)
            both = torch.cat([top, z], dim=-1)
            logits = self.net.cls_head(both).numpy()
            p = torch.sigmoid(self.net.abn_head(both)[..., 0]).numpy().astype(np.float64)
            states["hidden"][rows] = self.net.pack_state(state).numpy()
        irregular = np.zeros((len(rows), width), dtype=bool)
        irregular[np.repeat(np.arange(len(rows)), counts), np.arange(len(at)) - at] = [
            b.irregular for i in rows for b in decided[i]]
        p, logits = without_sveb(p.reshape(-1), logits.reshape(-1, len(CLASSES)),
                                 irregular.reshape(-1))
        p, logits = p.reshape(len(rows), width), logits.reshape(len(rows), width, len(CLASSES))
        for j, i in enumerate(rows):
            for k, b in enumerate(decided[i]):
                flag = bool(p[j, k] >= self.threshold)
                cls = CLASSES[1 + int(np.argmax(logits[j, k, 1:]))] if flag else CLASSES[0]
                out[i].append(BeatOut(b.sample, b.rr_s, cls, float(p[j, k]), flag, b.decided,
                                      b.irregular))
        return out

    def card(self) -> dict[str, Any]:
        """The card's ``beats`` section, less what training adds (lead, threshold details,
        data, metrics)."""
        return {**self.features.card(), "architecture": self.net.config(),
                "features": list(FEATURES),
                "normalisation": {"mean": self.mean.tolist(), "std": self.std.tolist()},
                "classes": list(CLASSES), "threshold": {"value": self.threshold}}

    @classmethod
    def from_card(cls, section: dict[str, Any], tensors: dict[str, torch.Tensor],
                  lead: int, detector: Any = None) -> BeatStage:
        """Rebuild from the card's ``beats`` section and the ``beat.*`` tensors (prefix off)."""
        try:
            if list(section["features"]) != list(FEATURES):
                raise ArtifactError(f"beats features: expected {list(FEATURES)}, got "
                                    f"{section['features']} (an artifact from another version)")
            net = BeatNet(**section["architecture"])
            net.load_state_dict(tensors, strict=True)
            feats = BeatFeatures(float(section["fs"]), float(section["cap_s"]),
                                 float(section["block_s"]), detector=detector)
            return cls(feats, net, np.asarray(section["normalisation"]["mean"], np.float64),
                       np.asarray(section["normalisation"]["std"], np.float64),
                       float(section["threshold"]["value"]), lead)
        except (KeyError, TypeError, RuntimeError) as ex:
            first = str(ex).strip().splitlines()[0]
            raise ArtifactError(f"beats section: expected fs, cap_s, block_s, architecture, "
                                f"features, normalisation, threshold and matching beat.* "
                                f"weights ({type(ex).__name__}: {first})") from ex


def offline_beats(stage: BeatStage, signal: np.ndarray,
                  residuals: np.ndarray | None = None) -> list[BeatOut]:
    """One entity's whole recording as one chunk (what a stream of any chunks gives)."""
    res = np.full(len(signal), np.nan) if residuals is None else residuals
    return stage.process(stage.initial(1), [signal], [res])[0]
