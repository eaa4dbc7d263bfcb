"""Ground truth for evaluation: AAMI EC57 beat classes (MIT-BIH), NAB and SKAB anomaly windows.

**ECG (AAMI EC57, the grouping cardiologists' benchmarks use).** Each beat annotation of the
reference annotator (``atr``) gets a class:

====== ============================================ =============
class  MIT-BIH symbols                              role here
====== ============================================ =============
N      N, L, R, e, j (normal, bundle-branch block,  normal
       atrial and nodal escape)
SVEB   A, a, J, S (supraventricular ectopic)        anomaly
VEB    V, E (ventricular ectopic)                   anomaly
F      F (fusion of ventricular and normal)         anomaly
Q      /, f, Q and any other beat symbol (paced,    left out
       fusion of paced, unclassifiable)
====== ============================================ =============

The paced records 102, 104, 107 and 217 are left out altogether, as EC57 allows and as
published MIT-BIH benchmarks do: nearly all their beats are paced (class Q). Beats during
ventricular flutter episodes (between ``[`` and ``]``) become Q too, since EC57 scores those
episodes separately, not beat by beat. Non-beat annotations (rhythm ``+``, noise ``~``, …) are not
beats. :data:`DS1` and :data:`DS2` are de Chazal's inter-patient split: an evaluation of MIT-BIH
tests on DS2 records only, never on the DS1 records beat models learn from.

**NAB.** ``labels/combined_windows.json`` gives each series' windows as first and last timestamp
(inclusive); a window becomes the sample range ``[first row at or after start, last row at or
before end + 1)``.

**SKAB.** The per-row ``anomaly`` column; each run of 1s is one window.

A :class:`Labels` holds either beats or windows in sample indices of one series, and
:meth:`Labels.part` cuts them to a time range of it (the test part of a record).

>>> lab = Labels.from_windows([(2, 5), (8, 12)])
>>> lab.part(4, 10).windows.tolist()
[[0, 1], [4, 6]]
>>> [aami_class(s) for s in "NVAFx/"]
['N', 'VEB', 'SVEB', 'F', None, 'Q']
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stream.errors import ConfigError

__all__ = [
    "AAMI",
    "BEAT_SYMBOLS",
    "DS1",
    "DS2",
    "PACED_RECORDS",
    "Labels",
    "aami_class",
    "ecg_labels",
    "ecg_records",
    "nab_labels",
    "skab_labels",
    "windows_of",
]

AAMI = {"N": "NLRej", "SVEB": "AaJS", "VEB": "VE", "F": "F", "Q": "/fQ"}
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")  # wfdb's beat annotation codes
PACED_RECORDS = ("102", "104", "107", "217")
# de Chazal, O'Dwyer & Reilly (2004)'s inter-patient split of the non-paced MIT-BIH records:
# beat models train and set thresholds on DS1 only and are tested on DS2
DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
       "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213",
       "214", "219", "221", "222", "228", "231", "232", "233", "234")
_CLASS_OF = {s: c for c, symbols in AAMI.items() for s in symbols}


def aami_class(symbol: str) -> str | None:
    """The AAMI class of a beat symbol (Q for a beat outside the four scored classes), None
    for a non-beat annotation."""
    if symbol not in BEAT_SYMBOLS:
        return None
    return _CLASS_OF.get(symbol, "Q")


@dataclass(frozen=True)
class Labels:
    """Labelled anomalies of one series: ``beats`` (R-peak samples with AAMI classes) or
    ``windows`` (``[k, 2]`` sample ranges ``[lo, hi)``)."""

    kind: str  # "beats" | "windows"
    r_peaks: np.ndarray | None = None  # int64 [n]
    classes: np.ndarray | None = None  # str [n]
    windows: np.ndarray | None = None  # int64 [k, 2]

    @classmethod
    def from_beats(cls, r_peaks: Sequence[int], classes: Sequence[str]) -> Labels:
        r = np.asarray(r_peaks, dtype=np.int64)
        c = np.asarray(classes, dtype="<U4")
        if r.shape != c.shape:
            raise ValueError(f"beats: expected one class per R peak, got {len(r)} peaks and "
                             f"{len(c)} classes")
        return cls("beats", r_peaks=r, classes=c)

    @classmethod
    def from_windows(cls, windows: Sequence[tuple[int, int]] | np.ndarray) -> Labels:
        w = np.asarray(windows, dtype=np.int64).reshape(-1, 2)
        if np.any(w[:, 1] <= w[:, 0]):
            raise ValueError(f"windows: expected lo < hi each, got {w.tolist()}")
        return cls("windows", windows=w)

    def part(self, lo: int, hi: int) -> Labels:
        """The labels of samples ``[lo, hi)``, re-indexed so that ``lo`` is sample 0."""
        if self.kind == "beats":
            keep = (self.r_peaks >= lo) & (self.r_peaks < hi)
            return Labels.from_beats(self.r_peaks[keep] - lo, self.classes[keep])
        w = np.clip(self.windows, lo, hi) - lo
        return Labels.from_windows(w[w[:, 1] > w[:, 0]])

    def counts(self) -> dict[str, int]:
        """Beats per AAMI class, or the number of windows."""
        if self.kind == "beats":
            return {c: int((self.classes == c).sum()) for c in AAMI}
        return {"windows": len(self.windows)}


def windows_of(mask: np.ndarray) -> np.ndarray:
    """``[k, 2]`` ranges of the runs of true values in a 0/1 mask."""
    m = np.concatenate([[False], np.asarray(mask).astype(bool), [False]])
    return np.flatnonzero(m[1:] != m[:-1]).reshape(-1, 2)


def ecg_records(directory: str | Path, exclude: Sequence[str] = PACED_RECORDS) -> list[str]:
    """Record names of a WFDB directory that have reference annotations, paced ones left out."""
    directory = Path(directory)
    names = sorted(p.stem for p in directory.glob("*.atr") if (p.with_suffix(".hea")).is_file())
    if not names:
        raise ConfigError(f"ECG data: expected WFDB records with .hea and .atr files in "
                          f"{directory}, found none")
    return [n for n in names if n not in set(exclude)]


def ecg_labels(directory: str | Path, record: str, annotator: str = "atr") -> Labels:
    """AAMI-classed beats of one annotated WFDB record."""
    import wfdb  # imported here: only ECG evaluation needs it

    base = Path(directory) / record
    try:
        ann = wfdb.rdann(str(base), annotator)
    except (FileNotFoundError, ValueError) as ex:
        raise ConfigError(f"ECG labels: expected annotations {base}.{annotator}, got {ex}"
                          ) from ex
    samples = np.asarray(ann.sample, dtype=np.int64)
    symbols = list(ann.symbol)
    beats = [(s, aami_class(sym)) for s, sym in zip(samples, symbols, strict=True)
             if aami_class(sym) is not None]
    r = np.array([b[0] for b in beats], dtype=np.int64)
    c = np.array([b[1] for b in beats], dtype="<U4")
    # ventricular flutter episodes [ ... ]: not scored beat by beat
    opened = None
    for s, sym in zip(samples, symbols, strict=True):
        if sym == "[":
            opened = s
        elif sym == "]" and opened is not None:
            c[(r >= opened) & (r <= s)] = "Q"
            opened = None
    # a beat at the same sample as another (rare) would break the window partition: keep first
    keep = np.r_[True, np.diff(r) > 0]
    return Labels.from_beats(r[keep], c[keep])


def nab_labels(root: str | Path, name: str, timestamps: Sequence) -> Labels:
    """NAB windows of series ``name`` (``category/file.csv``) as sample ranges of its rows."""
    import pandas as pd

    path = Path(root) / "labels" / "combined_windows.json"
    if not path.is_file():
        raise ConfigError(f"NAB labels: expected {path}")
    table = json.loads(path.read_text())
    if name not in table:
        raise ConfigError(f"NAB labels: expected {name!r} in {path}, it is not there")
    stamps = pd.to_datetime(pd.Series(timestamps)).to_numpy()
    out = []
    for lo, hi in table[name]:
        a = int(np.searchsorted(stamps, np.datetime64(pd.Timestamp(lo)), side="left"))
        b = int(np.searchsorted(stamps, np.datetime64(pd.Timestamp(hi)), side="right"))
        if b > a:
            out.append((a, b))
    return Labels.from_windows(out)


def skab_labels(anomaly: Sequence[float]) -> Labels:
    """SKAB windows from an experiment's ``anomaly`` column."""
    return Labels.from_windows(windows_of(np.asarray(anomaly) > 0.5))
