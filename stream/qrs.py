"""Online, causal QRS detection per entity, exactly chunk-invariant (Pan–Tompkins style).

The signal path (Pan & Tompkins 1985, with Hamilton & Tompkins' 1986 decision rules):

1. band-pass 5–15 Hz, a 4th-order Butterworth run as second-order sections (``sosfilt`` with its
   carried ``zi``, started at steady state on the first sample so the DC offset gives no step);
2. five-point derivative ``d[n] = fs/8 · (2b[n] + b[n-1] - b[n-3] - 2b[n-4])``;
3. squaring, a moving integration over ``W = round(0.15·fs)`` samples summed term by term in
   a fixed order, and a square root: ``m[n] = sqrt((1/W) Σ_{k<W} d²[n-k])``, the RMS slope. The
   root keeps peak heights proportional to the QRS amplitude rather than its square, so one
   large ectopic beat does not lift the threshold above the normal beats around it;
4. candidate peaks: the local maxima of ``m`` (``m[p-1] < m[p] >= m[p+1]``, known at ``p+1``).
   A candidate is kept only if no larger one lies within the refractory ``R = 0.2 s`` before
   or after it (Hamilton's rule; a candidate ``c`` replaces the pending one ``p`` when
   ``c - p <= R`` and it is larger), so the pending peak is final at ``p + R + 1``;
5. a final peak of height ``h`` is a QRS when ``h > T1 = N + 0.3125 (Q - N)``, ``Q`` and ``N``
   the medians of the last 8 QRS and noise peak heights (Hamilton & Tompkins' best estimator),
   unless it comes within 0.36 s of the previous QRS with less than half its steepest
   band-passed slope (a T wave). Both buffers start from the first 2 s (``Q = max m / 3``,
   ``N = mean m / 2``), during which nothing is reported;
6. search-back: when no QRS came for ``1.66 ×`` the mean of the last 8 RR intervals (1 s before
   any), the largest noise peak since the last QRS that is above ``T1 / 2`` and no older than
   the normal reporting delay is taken as a QRS (otherwise the search is repeated one RR
   later). Older peaks are given up so that the delay stays bounded (on MIT-BIH DS1 allowing
   2 s instead recovers 6 beats in 37,000);
7. the R peak is the largest ``|b|`` in the integration window that made the peak, shifted back by
   the band-pass group delay at 10 Hz (so it falls on the raw R wave within a few samples).

Every step is sequential in the sample order with all its memory in one fixed-size row per entity
(:attr:`QRSDetector.state_dtype`, 804 bytes at 360 Hz; the band-passed, squared-derivative and
integrated histories are kept as float32, and every new value is rounded to float32 before use,
so that a value is the same whether it comes from this call or from the state), and the
decisions depend only on the ordered events (candidate known, peak final, search-back due), so
any split of the stream into chunks, and a state saved to bytes and back between chunks, gives
bit-for-bit the same beats. An R peak is reported at most :attr:`QRSDetector.delay_s` after it
(``W + 2 + group delay + R + 1`` samples: 0.4 s at 360 Hz), and never before the samples up to
:attr:`QRSDetector.after_s` after it (``R + 3 + group delay``: 0.25 s) have been passed in.
Filters run on all the entities of a batch whose chunks have the same length at once (2-D
arrays), and so do the decisions: in rounds, every row with an event left before the end of its
chunk takes its next one (candidate, final peak or search-back), the rows together under masks.
A round costs a few tens of numpy calls whatever the number of rows, so once few rows are left,
or more rounds are ahead than rows (long chunks, a whole record in one call), the rest run row by
row in Python over their candidate peaks (a few per beat); both paths make the same float64
operations in the same order, so the beats are the same bit for bit. ``seqstream.bench.qrs``
(1,000 entities × 36-sample chunks, a shared 2-core machine): 5.5–6.6 M samples per CPU-second,
against 2.8–2.9 M when every row was decided in Python (commit 8e2037a, runs alternated); a
whole record in one call runs row by row, as before.

>>> import wfdb
>>> from pathlib import Path
>>> rec = wfdb.rdrecord(str(Path(__file__).parents[1] / "training/bundled/mitdb/100"),
...                     sampto=21600, channel_names=["MLII"])
>>> peaks = detect(rec.p_signal[:, 0], rec.fs)
>>> len(peaks), peaks[:3].tolist()  # the reference marks R at 662, 946, 1231
(72, [665, 949, 1234])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.signal

__all__ = ["QRSDetector", "detect"]

BAND_HZ = (5.0, 15.0)
INTEGRATION_S = 0.15
REFRACTORY_S = 0.2
TWAVE_S = 0.36
TWAVE_SLOPE = 0.5
SEARCHBACK_RR = 1.66
LEARN_S = 2.0
DEFAULT_RR_S = 1.0
RR_COUNT = 8
LEVEL_COUNT = 8
THRESHOLD = 0.3125
SEARCHBACK_LEVEL = 0.5
NONE = -1
NEVER = np.iinfo(np.int64).max
# the state fields the decisions read and write (the rest belongs to the filters)
DECISION_SCALARS = ("pend", "pend_h", "pend_r", "pend_s", "sb", "sb_h", "sb_r", "sb_due",
                    "last", "last_s", "qn", "nn", "rr_n")
DECISION_FIELDS = (*DECISION_SCALARS, "rr", "qh", "nh")


class QRSDetector:
    """Causal QRS detector for many entities sampled at ``fs`` Hz (one state row each)."""

    #: the decisions run as masked rounds over the rows with events left while there are at
    #: least ``vector_rows`` of them and ``vector_depth`` times the most candidates any of
    #: them has left (the rounds still to come); the rest run one row at a time, the same
    #: beats either way. A round's fixed cost is that of a few tens of events run row by row,
    #: so rounds pay for many rows with few events each (short chunks), not for a few rows
    #: with many (long chunks, a whole record); the bounds were set on ``bench.qrs`` runs
    vector_rows = 16
    vector_depth = 1.0

    def __init__(self, fs: float) -> None:
        if not (math.isfinite(fs) and fs >= 50.0):
            raise ValueError(f"expected a sampling rate fs >= 50 Hz, got {fs!r}")
        self.fs = float(fs)
        self._sos = scipy.signal.butter(2, BAND_HZ, btype="bandpass", fs=self.fs, output="sos")
        self._sos_zi = scipy.signal.sosfilt_zi(self._sos)
        _, gd = scipy.signal.group_delay(scipy.signal.sos2tf(self._sos), w=[10.0], fs=self.fs)
        self._group = round(float(gd[0]))
        self._w = round(INTEGRATION_S * self.fs)
        self._refr = round(REFRACTORY_S * self.fs)
        self._twave = round(TWAVE_S * self.fs)
        self._learn = round(LEARN_S * self.fs)
        # a candidate p is known at p + 1 and needs the band-passed window [p - W - 2, p - 2]
        self._ring = self._w + 4
        nsec = self._sos.shape[0]
        self.state_dtype = np.dtype([
            ("n", "<i8"),                        # samples consumed
            ("bp_zi", "<f8", (nsec, 2)),         # band-pass sections' state
            ("bp", "<f4", (self._ring,)),        # last band-passed samples, oldest first
            ("sq", "<f4", (self._w - 1,)),       # last squared derivatives
            ("m", "<f4", (2,)),                  # last two integrated values
            ("lmax", "<f8"), ("lsum", "<f8"),    # learning-phase max and running sum of m
            ("qh", "<f8", (LEVEL_COUNT,)), ("nh", "<f8", (LEVEL_COUNT,)),  # last peak heights
            ("qn", "<i8"), ("nn", "<i8"),        # QRS and noise peaks seen
            ("pend", "<i8"), ("pend_h", "<f8"), ("pend_r", "<i8"), ("pend_s", "<f8"),
            ("sb", "<i8"), ("sb_h", "<f8"), ("sb_r", "<i8"),  # best noise peak since last QRS
            ("sb_due", "<i8"),                   # when to search back (-1: not armed)
            ("last", "<i8"), ("last_s", "<f8"),  # last QRS peak and its slope
            ("rr", "<i8", (RR_COUNT,)), ("rr_n", "<i8"),
        ])
        # longest wait after an R peak: its integration peak comes at most W + 2 + group delay
        # samples later and is final R + 1 samples after that; search-back takes only peaks
        # no older than that
        self._delay = self._w + 2 + self._group + self._refr + 1
        self.delay_s = self._delay / self.fs
        # and never earlier than when its peak is final: R + 1 samples after the integration
        # peak, itself at least 2 + group delay samples after the R peak
        self.after_s = (self._refr + 1 + 2 + self._group) / self.fs

    def initial(self, n: int) -> np.ndarray:
        """``n`` fresh state rows: nothing seen yet."""
        st = np.zeros(n, self.state_dtype)
        st["m"] = -np.inf
        for f in ("pend", "pend_r", "sb", "sb_r", "sb_due", "last"):
            st[f] = NONE
        return st

    def process(self, states: np.ndarray, chunks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Advance ``states[i]`` in place by ``chunks[i]`` (consecutive samples, mV).

        Returns per entity an int64 array of the R peaks confirmed in this call: absolute sample
        indexes counted from the entity's initial state, ascending, each reported once, the
        same for any split of the stream into chunks. Empty chunks are allowed.
        """
        if states.dtype != self.state_dtype or states.ndim != 1:
            raise ValueError(f"expected a 1-D state array of QRSDetector.state_dtype, "
                             f"got {states.dtype} with shape {states.shape}")
        if len(chunks) != len(states):
            raise ValueError(f"expected one chunk per state row ({len(states)}), "
                             f"got {len(chunks)}")
        out = [np.empty(0, np.int64)] * len(states)
        by_len: dict[int, list[int]] = {}
        for i, c in enumerate(chunks):
            if np.ndim(c) != 1:
                raise ValueError(f"expected 1-D chunks, got shape {np.shape(c)} for entity {i}")
            if len(c):
                by_len.setdefault(len(c), []).append(i)
        groups = [(idx, np.stack([np.asarray(chunks[i], dtype=np.float64) for i in idx]))
                  for idx in by_len.values()]
        for idx, x in groups:
            if not np.isfinite(x).all():
                bad = idx[int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])]
                raise ValueError(f"expected finite samples (mV), got NaN or inf in the chunk of "
                                 f"entity {bad}; no state was changed")
        for idx, x in groups:
            rows = np.asarray(idx)
            st = states[rows]
            found = self._advance(st, x)
            states[rows] = st
            for k, i in enumerate(idx):
                out[i] = found[k]
        return out

    def _advance(self, st: np.ndarray, x: np.ndarray) -> list[np.ndarray]:
        k, t = x.shape
        n0 = st["n"].copy()
        fresh = n0 == 0
        zi = np.ascontiguousarray(np.moveaxis(st["bp_zi"], 1, 0))
        if fresh.any():
            zi[:, fresh, :] = self._sos_zi[:, None, :] * x[fresh, 0][None, :, None]
        b, zi = scipy.signal.sosfilt(self._sos, x, axis=1, zi=zi)
        st["bp_zi"] = np.moveaxis(zi, 0, 1)
        # the kept histories are float32: round every new value to float32 too, so a value
        # computed in this call and the same value read back from the state are identical
        r, w1 = self._ring, self._w - 1
        eb = np.empty((k, r + t))  # eb column of global index g: g - n0 + r
        eb[:, :r] = st["bp"]
        eb[:, r:] = b.astype(np.float32)
        d = (2.0 * eb[:, r:] + eb[:, r - 1:-1] - eb[:, r - 3:-3] - 2.0 * eb[:, r - 4:-4])
        d *= self.fs / 8.0
        es = np.empty((k, w1 + t))
        es[:, :w1] = st["sq"]
        es[:, w1:] = (d * d).astype(np.float32)
        m = _window_sums(es, self._w)
        m *= 1.0 / self._w
        m = np.sqrt(m).astype(np.float32).astype(np.float64)
        st["bp"] = eb[:, -r:]
        st["sq"] = es[:, -w1:]
        if (n0 < self._learn).any():
            self._learn_levels(st, m, n0)
        em = np.concatenate([st["m"], m], axis=1)  # em column of global g: g - n0 + 2
        st["m"] = em[:, -2:]
        # candidates p in [n0 - 1, n0 + t - 2]: m[p - 1] < m[p] >= m[p + 1]
        mid = em[:, 1:-1]
        is_peak = (mid > em[:, :-2]) & (mid >= em[:, 2:])
        ci, cj = np.nonzero(is_peak)
        cp = n0[ci] - 1 + cj
        keep = cp >= self._learn
        ci, cp, cj = ci[keep], cp[keep], cj[keep]
        ch = mid[ci, cj]
        # a candidate within R after the pending peak and not above it changes nothing (the
        # pending peak, or a larger one replacing it, is still pending when it comes): drop it
        pend, pend_h = st["pend"][ci], st["pend_h"][ci]
        moot = (pend >= 0) & (cp - pend <= self._refr) & (ch <= pend_h)
        ci, cp, ch = ci[~moot], cp[~moot], ch[~moot]
        crel, cs = self._locate(eb, ci, cp - n0[ci] + r)
        st["n"] = n0 + t
        end = n0 + t - 1  # last global index received
        pend_due = np.where(st["pend"] >= 0, st["pend"] + self._refr + 1, NEVER)
        sb_fire = np.where(st["sb_due"] >= 0, np.maximum(st["sb_due"] + 1, np.where(
            st["pend"] >= 0, pend_due, 0)), NEVER)
        busy = (pend_due <= end) | (sb_fire <= end)
        busy[ci] = True
        rows = np.flatnonzero(busy)
        if len(rows) == 0:
            return [np.empty(0, np.int64)] * k
        starts = np.searchsorted(ci, np.arange(k + 1))
        cand = _Candidates(cp, ch, cp - (self._w + 2 + self._group) + crel, cs)
        fields = {f: st[f] for f in DECISION_FIELDS}  # views: decisions write into st
        return self._decide(fields, rows, end, starts[:-1], starts[1:], cand)

    def _learn_levels(self, st: np.ndarray, m: np.ndarray, n0: np.ndarray) -> None:
        """Running max and sequential sum of ``m`` over the first LEARN_S; levels at its end."""
        t = m.shape[1]
        inside = np.clip(self._learn - n0, 0, t)
        for span in np.unique(inside[inside > 0]):
            rows = np.flatnonzero(inside == span)
            part = m[rows, :span]
            st["lmax"][rows] = np.maximum(st["lmax"][rows], part.max(axis=1))
            acc = np.concatenate([st["lsum"][rows, None], part], axis=1)
            st["lsum"][rows] = np.cumsum(acc, axis=1)[:, -1]
        done = (n0 < self._learn) & (n0 + t >= self._learn)
        st["qh"][done] = (st["lmax"][done] / 3.0)[:, None]
        st["nh"][done] = (st["lsum"][done] / self._learn / 2.0)[:, None]

    def _locate(self, eb: np.ndarray, ci: np.ndarray, col: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """R index and steepest band-passed slope in each candidate's integration window."""
        if len(ci) == 0:
            return np.empty(0, np.int64), np.empty(0)
        span = self._w + 1
        offs = np.arange(span) - self._w - 2
        win = eb[ci[:, None], col[:, None] + offs[None, :]]
        rel = np.abs(win).argmax(axis=1)
        slope = np.abs(np.diff(win, axis=1)).max(axis=1)
        return rel, slope

    def _decide(self, s: dict[str, np.ndarray], act: np.ndarray, end: np.ndarray,
                nxt: np.ndarray, stop: np.ndarray, cand: _Candidates) -> list[np.ndarray]:
        """Run rows ``act``'s events up to sample ``end[j]`` in time order (row ``j``'s
        candidates are ``cand[nxt[j]:stop[j]]``); ``s`` holds every row's decision fields,
        updated in place. Returns the beats of every row.

        Rounds: every row still having an event before its end takes its next one, all rows
        at once with masks. Once few rows remain, or more rounds are ahead than rows (each
        round's fixed cost would then dominate), they are finished one by one in Python.
        """
        beat_j: list[np.ndarray] = []
        beat_r: list[np.ndarray] = []
        nxt = nxt.copy()  # advanced below (and may share memory with stop)
        cp = np.append(cand.p, NEVER - 1)  # a sentinel: a row with no candidate left reads it
        while len(act) >= max(self.vector_rows, 1):
            i, z = nxt[act], stop[act]
            if len(act) < self.vector_depth * (z - i).max():
                break  # more rounds ahead than rows: one row at a time is cheaper
            pend = s["pend"][act]
            pending = pend >= 0
            pend_due = np.where(pending, pend + self._refr + 1, NEVER)
            sbd = s["sb_due"][act]
            sb_due = np.where(sbd >= 0, np.maximum(sbd + 1, np.where(pending, pend_due, 0)),
                              NEVER)
            arrive = np.where(i < z, cp[i] + 1, NEVER)
            go = np.minimum(np.minimum(pend_due, sb_due), arrive) <= end[act]
            if not go.all():
                act, pend, pending, pend_due, sb_due, i, arrive = (
                    v[go] for v in (act, pend, pending, pend_due, sb_due, i, arrive))
                if len(act) < self.vector_rows:
                    break
            is_arr = (arrive <= pend_due) & (arrive <= sb_due)
            is_fin = ~is_arr & (pend_due <= sb_due)
            is_sb = ~is_arr & ~is_fin
            if is_arr.any():
                a, ia = act[is_arr], i[is_arr]
                repl = ((~pending[is_arr]) | (cand.p[ia] - pend[is_arr] > self._refr)
                        | (cand.h[ia] > s["pend_h"][a]))
                a, ia = a[repl], ia[repl]
                s["pend"][a], s["pend_h"][a] = cand.p[ia], cand.h[ia]
                s["pend_r"][a], s["pend_s"][a] = cand.r[ia], cand.s[ia]
                nxt[act[is_arr]] += 1
            if is_fin.any():
                self._finalize_rows(s, act[is_fin], beat_j, beat_r)
            if is_sb.any():
                self._search_back_rows(s, act[is_sb], sb_due[is_sb], beat_j, beat_r)
        beats = ([np.empty(0, np.int64)] * len(end) if not beat_j
                 else _split(np.concatenate(beat_j), np.concatenate(beat_r), len(end)))
        if len(act):
            self._decide_each(s, act, end, nxt, stop, cand, beats)
        return beats

    def _threshold(self, s: dict[str, np.ndarray], j: np.ndarray) -> np.ndarray:
        """``T1`` of rows ``j``: the same float64 operations as :meth:`_decide_row`."""
        q = np.sort(s["qh"][j], axis=1)
        n = np.sort(s["nh"][j], axis=1)
        q = 0.5 * (q[:, 3] + q[:, 4])
        n = 0.5 * (n[:, 3] + n[:, 4])
        return n + THRESHOLD * (q - n)

    def _mean_rr(self, s: dict[str, np.ndarray], j: np.ndarray) -> np.ndarray:
        """Mean of rows ``j``'s last (up to 8) RR intervals, ``DEFAULT_RR_S`` before any."""
        cnt = np.minimum(s["rr_n"][j], RR_COUNT)
        total = np.where(np.arange(RR_COUNT) < cnt[:, None], s["rr"][j], 0).sum(axis=1)
        return np.where(cnt > 0, total / np.maximum(cnt, 1), DEFAULT_RR_S * self.fs)

    def _accept_rows(self, s: dict[str, np.ndarray], j: np.ndarray, p: np.ndarray,
                     h: np.ndarray, r: np.ndarray, slope: np.ndarray | float,
                     beat_j: list[np.ndarray], beat_r: list[np.ndarray]) -> None:
        """Rows ``j`` take peaks ``p`` as QRS (R at ``r``): levels, RR, search-back reset."""
        beat_j.append(j)
        beat_r.append(r)
        s["qh"][j, s["qn"][j] % LEVEL_COUNT] = h
        s["qn"][j] += 1
        seen = s["last"][j] >= 0
        js = j[seen]
        s["rr"][js, s["rr_n"][js] % RR_COUNT] = p[seen] - s["last"][js]
        s["rr_n"][js] += 1
        s["last"][j], s["last_s"][j] = p, slope
        s["sb"][j] = s["sb_r"][j] = NONE
        s["sb_h"][j] = 0.0
        s["sb_due"][j] = p + np.rint(SEARCHBACK_RR * self._mean_rr(s, j)).astype(np.int64)

    def _finalize_rows(self, s: dict[str, np.ndarray], j: np.ndarray,
                       beat_j: list[np.ndarray], beat_r: list[np.ndarray]) -> None:
        """Rows ``j``'s pending peaks are final: QRS, or noise (and maybe the search-back's)."""
        p, h, r, slope = s["pend"][j], s["pend_h"][j], s["pend_r"][j], s["pend_s"][j]
        s["pend"][j] = s["pend_r"][j] = NONE
        last = s["last"][j]
        twave = (last >= 0) & (p - last < self._twave) & (slope < TWAVE_SLOPE * s["last_s"][j])
        qrs = (h > self._threshold(s, j)) & ~twave
        if qrs.any():
            self._accept_rows(s, j[qrs], p[qrs], h[qrs], r[qrs], slope[qrs], beat_j, beat_r)
        noise = ~qrs
        jn, hn = j[noise], h[noise]
        s["nh"][jn, s["nn"][jn] % LEVEL_COUNT] = hn
        s["nn"][jn] += 1
        best = ~twave[noise] & (hn > s["sb_h"][jn])
        jb = jn[best]
        s["sb"][jb], s["sb_h"][jb], s["sb_r"][jb] = p[noise][best], hn[best], r[noise][best]

    def _search_back_rows(self, s: dict[str, np.ndarray], j: np.ndarray, now: np.ndarray,
                          beat_j: list[np.ndarray], beat_r: list[np.ndarray]) -> None:
        """Rows ``j`` search back at ``now``: their best noise peak, or a new wait."""
        sb, sb_h, sb_r = s["sb"][j], s["sb_h"][j], s["sb_r"][j]
        ok = ((sb >= 0) & (sb_h > SEARCHBACK_LEVEL * self._threshold(s, j))
              & (now - sb_r <= self._delay))
        if ok.any():
            self._accept_rows(s, j[ok], sb[ok], sb_h[ok], sb_r[ok], 0.0, beat_j, beat_r)
        jn = j[~ok]
        s["sb"][jn] = s["sb_r"][jn] = NONE
        s["sb_h"][jn] = 0.0
        s["sb_due"][jn] = now[~ok] - 1 + np.rint(self._mean_rr(s, jn)).astype(np.int64)

    def _decide_each(self, s: dict[str, np.ndarray], act: np.ndarray, end: np.ndarray,
                     nxt: np.ndarray, stop: np.ndarray, cand: _Candidates,
                     beats: list[np.ndarray]) -> None:
        """Finish rows ``act`` one at a time (:meth:`_decide_row`), appending to ``beats``."""
        cols = {f: s[f][act].tolist() for f in DECISION_FIELDS}
        cp, ch, cr, cs = (v.tolist() for v in cand)
        for k, j in enumerate(act.tolist()):
            a, z = int(nxt[j]), int(stop[j])
            row = {f: cols[f][k] for f in DECISION_SCALARS}
            more = self._decide_row(row, cols["rr"][k], cols["qh"][k], cols["nh"][k],
                                    int(end[j]), cp[a:z], ch[a:z], cr[a:z], cs[a:z])
            for f in DECISION_SCALARS:
                cols[f][k] = row[f]
            beats[j] = np.concatenate([beats[j], more])
        for f, v in cols.items():
            s[f][act] = v

    def _decide_row(self, s: dict, rr: list[int], qh: list[float], nh: list[float], end: int,
                    cp: list[int], ch: list[float], cr: list[int], cs: list[float]
                    ) -> np.ndarray:
        """Run one entity's events up to sample ``end`` in time order; ``s`` and the lists
        (RR intervals, QRS and noise heights) are its state, updated in place."""
        beats: list[int] = []
        refr = self._refr

        def threshold() -> float:
            q, n = _median8(qh), _median8(nh)
            return n + THRESHOLD * (q - n)

        def mean_rr() -> float:
            cnt = min(s["rr_n"], RR_COUNT)
            return sum(rr[:cnt]) / cnt if cnt else DEFAULT_RR_S * self.fs

        def accept(p: int, h: float, r: int, slope: float) -> None:
            beats.append(r)
            qh[s["qn"] % LEVEL_COUNT] = h
            s["qn"] += 1
            if s["last"] >= 0:
                rr[s["rr_n"] % RR_COUNT] = p - s["last"]
                s["rr_n"] += 1
            s["last"], s["last_s"] = p, slope
            s["sb"] = s["sb_r"] = NONE
            s["sb_h"] = 0.0
            s["sb_due"] = p + round(SEARCHBACK_RR * mean_rr())

        def finalize() -> None:
            p, h, r, slope = s["pend"], s["pend_h"], s["pend_r"], s["pend_s"]
            s["pend"] = s["pend_r"] = NONE
            twave = (s["last"] >= 0 and p - s["last"] < self._twave
                     and slope < TWAVE_SLOPE * s["last_s"])
            if h > threshold() and not twave:
                accept(p, h, r, slope)
                return
            nh[s["nn"] % LEVEL_COUNT] = h
            s["nn"] += 1
            if not twave and h > s["sb_h"]:
                s["sb"], s["sb_h"], s["sb_r"] = p, h, r

        def search_back(now: int) -> None:
            thr2 = SEARCHBACK_LEVEL * threshold()
            if s["sb"] >= 0 and s["sb_h"] > thr2 and now - s["sb_r"] <= self._delay:
                accept(s["sb"], s["sb_h"], s["sb_r"], 0.0)
                return
            s["sb"] = s["sb_r"] = NONE
            s["sb_h"] = 0.0
            s["sb_due"] = now - 1 + round(mean_rr())

        # events in time order, each at the sample where it becomes known: candidate p at
        # p + 1, the pending peak final at pend + R + 1 (every candidate within R after it is
        # known by then), search-back at sb_due + 1 but not before the pending peak is final
        i, inf = 0, math.inf
        while True:
            pending = s["pend"] >= 0
            pend_due = s["pend"] + refr + 1 if pending else inf
            sb_due = (max(s["sb_due"] + 1, pend_due if pending else 0)
                      if s["sb_due"] >= 0 else inf)
            arrive = cp[i] + 1 if i < len(cp) else inf
            if min(pend_due, sb_due, arrive) > end:
                break
            if arrive <= pend_due and arrive <= sb_due:
                p, h = cp[i], ch[i]
                if not pending or p - s["pend"] > refr or h > s["pend_h"]:
                    s["pend"], s["pend_h"] = p, h
                    s["pend_r"], s["pend_s"] = cr[i], cs[i]
                i += 1
            elif pend_due <= sb_due:
                finalize()
            else:
                search_back(int(sb_due))
        return np.asarray(beats, np.int64)


class _Candidates(NamedTuple):
    """A call's candidate peaks, ordered by row then sample: peak sample, height, R sample and
    steepest band-passed slope."""

    p: np.ndarray
    h: np.ndarray
    r: np.ndarray
    s: np.ndarray


def _split(j: np.ndarray, r: np.ndarray, rows: int) -> list[np.ndarray]:
    """``r`` grouped by row ``j`` (in their order within each row), one array per row."""
    order = np.argsort(j, kind="stable")
    j, r = j[order], r[order]
    has, first = np.unique(j, return_index=True)
    out = [np.empty(0, np.int64)] * rows
    for row, part in zip(has.tolist(), np.split(r, first[1:]), strict=True):
        out[row] = part
    return out


def _median8(v: list[float]) -> float:
    """Median of 8 values (mean of the middle two)."""
    w = sorted(v)
    return 0.5 * (w[3] + w[4])


def _window_sums(e: np.ndarray, w: int) -> np.ndarray:
    """``out[:, j] = e[:, j] + ... + e[:, j + w - 1]`` for every full window, by doubling.

    Sums of 1, 2, 4, ... consecutive values are built from pairs of the previous size, and each
    window adds the blocks of ``w``'s binary digits, largest first: every output is the same
    fixed expression of its own inputs (so chunking cannot change it) at ~2 log2(w) array
    operations instead of w.

    >>> _window_sums(np.arange(8.0)[None], 3).tolist()
    [[3.0, 6.0, 9.0, 12.0, 15.0, 18.0]]
    """
    t = e.shape[1] - w + 1
    blocks = [e]  # blocks[k][:, j] = e[:, j] + ... + e[:, j + 2**k - 1]
    for k in range(1, w.bit_length()):
        half = 1 << (k - 1)
        blocks.append(blocks[-1][:, :-half] + blocks[-1][:, half:])
    out, at = np.zeros((e.shape[0], t)), 0
    for k in reversed(range(w.bit_length())):
        if w >> k & 1:
            out += blocks[k][:, at: at + t]
            at += 1 << k
    return out


def detect(signal: np.ndarray, fs: float) -> np.ndarray:
    """R peaks of one whole ECG lead (mV) in one pass: the online detector fed one chunk."""
    det = QRSDetector(fs)
    return det.process(det.initial(1), [np.asarray(signal, dtype=np.float64)])[0]
