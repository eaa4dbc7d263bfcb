"""A stand-in beat stage for the worker's beat-path tests, written to the BeatStage contract
(``stream/beats.py``) and nothing more: the tests exercise the engine's glue (states, rows,
resets, record times, topics, metrics), not beat detection.

Detector: an R peak is a sample where the lead rises through ``level`` mV, at least
``refractory_s`` after the previous one. A beat is decided when the next R peak comes (post-RR
known) or ``cap_s`` after it, whichever is first; ``p_abnormal`` is a logistic function of the
beat's pre- and post-RR against the entity's running RR average, plus a small term from the
sample-level score at the R peak (so the residuals the engine passes matter). Everything is float64
and exactly the same for any split of the stream into chunks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class BeatOut(NamedTuple):
    sample: int
    rr_s: float | None
    cls: str
    p_abnormal: float
    anomaly: bool
    decided: int


class StandInBeatStage:
    """``BeatStage``'s interface over a level-crossing detector (tests only)."""

    state_dtype = np.dtype([("n", "<i8"), ("prev", "<f8"), ("last_r", "<i8"), ("pend", "<i8"),
                            ("pend_rr", "<f8"), ("pend_res", "<f8"), ("rr_avg", "<f8")])

    def __init__(self, fs: float = 360.0, lead: int = 0, threshold: float = 0.5,
                 level: float = 0.5, refractory_s: float = 0.25, cap_s: float = 2.0) -> None:
        self.fs, self.lead, self.threshold, self.level = fs, lead, threshold, level
        self.refractory = int(refractory_s * fs)
        self.cap = int(cap_s * fs)

    def initial(self, n: int) -> np.ndarray:
        rows = np.zeros(n, dtype=self.state_dtype)
        rows["prev"] = np.inf  # no crossing at the first sample
        rows["last_r"] = rows["pend"] = -1
        rows["pend_rr"] = rows["rr_avg"] = np.nan
        return rows

    def process(self, states: np.ndarray, signals: Sequence[np.ndarray],
                residuals: Sequence[np.ndarray]) -> list[list[BeatOut]]:
        return [self._one(states[i:i + 1], np.asarray(x, np.float64),
                          np.asarray(r, np.float64))
                for i, (x, r) in enumerate(zip(signals, residuals, strict=True))]

    def _one(self, st: np.ndarray, x: np.ndarray, res: np.ndarray) -> list[BeatOut]:
        n0 = int(st["n"][0])
        if x.size == 0:
            return []
        before = np.concatenate([[st["prev"][0]], x[:-1]])
        crossings = np.flatnonzero((before < self.level) & (x >= self.level))
        out: list[BeatOut] = []
        for k in crossings.tolist():
            a = n0 + k
            last = int(st["last_r"][0])
            if last >= 0 and a - last < self.refractory:
                continue
            self._timeout(st, a - 1, out)
            if int(st["pend"][0]) >= 0:
                self._decide(st, a, a - int(st["pend"][0]), out)
            st["pend"] = a
            st["pend_rr"] = (a - last) / self.fs if last >= 0 else np.nan
            s = float(res[k])
            st["pend_res"] = 0.0 if math.isnan(s) else s
            st["last_r"] = a
        self._timeout(st, n0 + x.size - 1, out)
        st["n"] = n0 + x.size
        st["prev"] = x[-1]
        return out

    def _timeout(self, st: np.ndarray, upto: int, out: list[BeatOut]) -> None:
        p = int(st["pend"][0])
        if p >= 0 and p + self.cap <= upto:
            self._decide(st, p + self.cap, self.cap, out)

    def _decide(self, st: np.ndarray, at: int, post: int, out: list[BeatOut]) -> None:
        p, pre = int(st["pend"][0]), float(st["pend_rr"][0])
        avg = float(st["rr_avg"][0])
        post_s = post / self.fs
        ref = avg if not math.isnan(avg) else (pre if not math.isnan(pre) else post_s)
        pre_ratio = pre / ref if not math.isnan(pre) else 1.0
        z = 6.0 * (1.0 - pre_ratio) + 3.0 * (post_s / ref - 1.0) + 0.01 * float(st["pend_res"][0])
        prob = 1.0 / (1.0 + math.exp(-z))
        anomaly = prob > self.threshold
        cls = ("V" if post_s / ref > 1.3 else "S") if anomaly else "N"
        out.append(BeatOut(p, None if math.isnan(pre) else pre, cls, prob, anomaly, at))
        if not math.isnan(pre):
            st["rr_avg"] = pre if math.isnan(avg) else 0.8 * avg + 0.2 * pre
        st["pend"] = -1
