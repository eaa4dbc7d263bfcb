"""Beat-level quality on *detected* beats, by the AAMI EC57 conventions (the inter-patient
MIT-BIH benchmarks' way of counting).

The detector's R peaks are first matched to the reference beats (EC57: one-to-one, within
150 ms; :mod:`seqstream.evaluation.ec57`). ``match[k]`` is the reference beat matched to detected
beat ``k``, or -1. Reference beats of class Q (paced, unclassifiable, inside flutter) are ignored:
neither they nor the detections matched to them count anywhere below (QRS detection aside).

**Per class** ``c`` in V (VEB), S (SVEB), F, from the class the classifier gave each beat::

    TP_c = reference c, detected and called c
    FN_c = reference c, called something else or not detected at all
    FP_c = called c, its reference is another known class or it matched no reference
           (for V, a reference F called V is not counted: EC57 does not penalise it)
    Se = TP / (TP + FN)     +P = TP / (TP + FP)     F1 = 2 Se +P / (Se + +P)

**Pooled abnormal** (S + V + F) counts the *flags* (``anomaly``) instead of the classes:
TP = flagged abnormal reference beats, FN = abnormal reference beats not flagged or not
detected, FP = *false flags* = flagged detections whose reference is N or that matched no
reference. **False flags per hour** divides them by the hours of recording scored. The flag's
sensitivity per class (the share of reference c beats flagged) is kept too: it is defined for
any flagging detector, sample-level ones included, where a per-class +P is not.

**QRS detection**: Se = matched / reference beats, +P = matched / detected beats (all classes;
:class:`seqstream.evaluation.ec57.Score`, pooled by :func:`seqstream.evaluation.ec57.total`).

All counts are *gross*: summed over records first, then the ratios (EC57's gross statistics),
so a record with many beats weighs more. ``+`` pools two :class:`BeatTally`.

>>> t = beat_tally(ref_classes=["N", "V", "S", "Q", "V"], det_classes=["N", "V", "N", "V"],
...                det_flags=[False, True, True, True], match=[0, 1, 2, -1], hours=0.5)
>>> t.classes["V"].tp, t.classes["V"].fn, t.classes["V"].fp, t.classes["V"].ppv
(1, 1, 1, 0.5)
>>> t.abnormal.se, t.abnormal.fp, t.false_flags_per_hour, t.qrs
(0.6666666666666666, 1, 2.0, Score(tp=3, fn=2, fp=1, se=0.6, ppv=0.75))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from seqstream.evaluation.ec57 import Score, total
from seqstream.evaluation.metrics import f1_score

__all__ = ["CLASSES", "REFERENCE", "BeatTally", "ClassCounts", "beat_tally", "flags_on_beats",
           "match_of"]

CLASSES = ("V", "S", "F")  # the classifier's letters (stream.beats.BeatOut.cls)
# the classifier's letters -> the reference classes of evaluation.labels
REFERENCE = {"N": "N", "V": "VEB", "S": "SVEB", "F": "F", "Q": "Q"}
_ABNORMAL_REF = ("SVEB", "VEB", "F")


@dataclass(frozen=True)
class ClassCounts:
    """TP, FN, FP of one class (or of the pooled flags); ``+`` sums them."""

    tp: int = 0
    fn: int = 0
    fp: int = 0

    def __add__(self, other: ClassCounts) -> ClassCounts:
        return ClassCounts(self.tp + other.tp, self.fn + other.fn, self.fp + other.fp)

    @property
    def se(self) -> float:
        """Sensitivity (NaN without reference beats of the class)."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def ppv(self) -> float:
        """Positive predictivity (NaN when nothing was called the class)."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def f1(self) -> float:
        """F1; 0 when there are reference beats but none was called correctly."""
        if self.tp == 0 and (self.fn or self.fp):
            return 0.0
        return f1_score(self.se, self.ppv)

    def summary(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fn": self.fn, "fp": self.fp, "se": self.se, "ppv": self.ppv,
                "f1": self.f1}


def _zero_classes() -> dict[str, ClassCounts]:
    return {c: ClassCounts() for c in CLASSES}


def _no_beats() -> Score:
    return total([])


@dataclass(frozen=True)
class BeatTally:
    """Gross counts of one detector over one or more records."""

    classes: dict[str, ClassCounts] = field(default_factory=_zero_classes)  # by ``cls``
    abnormal: ClassCounts = ClassCounts()  # pooled S+V+F, by the flag
    flagged_by_class: dict[str, ClassCounts] = field(default_factory=_zero_classes)  # TP, FN
    qrs: Score = field(default_factory=_no_beats)  # QRS detection, all reference beats
    hours: float = 0.0  # of recording scored

    def __add__(self, other: BeatTally) -> BeatTally:
        return BeatTally({c: self.classes[c] + other.classes[c] for c in CLASSES},
                         self.abnormal + other.abnormal,
                         {c: self.flagged_by_class[c] + other.flagged_by_class[c]
                          for c in CLASSES},
                         total([self.qrs, other.qrs]), self.hours + other.hours)

    @classmethod
    def pool(cls, parts: Sequence[BeatTally]) -> BeatTally:
        return sum(parts, cls())

    @property
    def false_flags_per_hour(self) -> float:
        return self.abnormal.fp / self.hours if self.hours > 0 else math.nan

    def summary(self) -> dict:
        """Every number a report shows (JSON-ready; NaN stays NaN)."""
        return {"classes": {c: self.classes[c].summary() for c in CLASSES},
                "abnormal": self.abnormal.summary(),
                "flag_se": {c: self.flagged_by_class[c].se for c in CLASSES},
                "false_flags": self.abnormal.fp, "hours": self.hours,
                "false_flags_per_hour": self.false_flags_per_hour,
                "qrs": self.qrs._asdict()}


def beat_tally(ref_classes: Sequence[str], det_classes: Sequence[str] | None,
               det_flags: Sequence[bool], match: Sequence[int], hours: float) -> BeatTally:
    """Counts of one record. ``ref_classes``: each reference beat's class (N, SVEB, VEB, F, Q,
    or the classifier's letters N, S, V, F, Q); ``det_classes``: the class called for each
    detected beat (N/S/V/F), or None for a detector that only flags (then the per-class counts
    stay 0); ``det_flags``: each detected beat's flag; ``match``: each detected beat's
    reference index or -1, one-to-one."""
    ref = np.array([REFERENCE.get(c, c) for c in ref_classes], dtype="<U4")
    flags = np.asarray(det_flags, dtype=bool)
    m = np.asarray(match, dtype=np.int64)
    if len(m) != len(flags) or (det_classes is not None and len(det_classes) != len(m)):
        raise ValueError(f"det_flags, det_classes, match: expected one per detected beat, got "
                         f"{len(flags)}, {None if det_classes is None else len(det_classes)}, "
                         f"{len(m)}")
    hit = m[m >= 0]
    if np.any(hit >= len(ref)) or len(np.unique(hit)) != len(hit):
        raise ValueError(f"match: expected distinct reference indexes below {len(ref)} or -1, "
                         f"got {m[:10].tolist()}…")
    matched = m >= 0
    ref_of_det = np.where(matched, ref[np.maximum(m, 0)] if len(ref) else "", "")
    detected = np.zeros(len(ref), dtype=bool)
    detected[hit] = True
    flagged_ref = np.zeros(len(ref), dtype=bool)
    flagged_ref[m[matched & flags]] = True

    counted = ref_of_det != "Q"  # detections on Q beats are ignored; unmatched ones count
    abnormal_ref = np.isin(ref, _ABNORMAL_REF)
    abnormal = ClassCounts(tp=int((abnormal_ref & flagged_ref).sum()),
                           fn=int((abnormal_ref & ~flagged_ref).sum()),
                           fp=int((flags & counted & ~np.isin(ref_of_det, _ABNORMAL_REF)).sum()))
    by_flag, classes = {}, _zero_classes()
    for c in CLASSES:
        is_c = ref == REFERENCE[c]
        by_flag[c] = ClassCounts(tp=int((is_c & flagged_ref).sum()),
                                 fn=int((is_c & ~flagged_ref).sum()))
        if det_classes is None:
            continue
        called = np.asarray(det_classes) == c
        right = called & (ref_of_det == REFERENCE[c])
        excused = ("Q", REFERENCE[c], "F") if c == "V" else ("Q", REFERENCE[c])
        classes[c] = ClassCounts(tp=int(right.sum()), fn=int(is_c.sum() - right.sum()),
                                 fp=int((called & ~np.isin(ref_of_det, excused)).sum()))
    qrs = total([Score(int(detected.sum()), int((~detected).sum()), int((~matched).sum()),
                       math.nan, math.nan)])
    return BeatTally(classes, abnormal, by_flag, qrs, float(hours))


def match_of(ref: np.ndarray, det: np.ndarray, fs: float) -> np.ndarray:
    """Each detected beat's matched reference index or -1 (EC57, 150 ms:
    :func:`seqstream.evaluation.ec57.match`).

    >>> match_of(np.array([100, 460]), np.array([30, 104, 470]), fs=360.0).tolist()
    [-1, 0, 1]
    """
    from seqstream.evaluation.ec57 import match

    pairs = match(ref, det, fs)
    out = np.full(len(det), -1, dtype=np.int64)
    out[pairs[:, 1]] = pairs[:, 0]
    return out


def flags_on_beats(flags: np.ndarray, beats: np.ndarray) -> np.ndarray:
    """Beat flags from sample flags: a detected beat is flagged when a flagged sample lies in
    its half-RR window (midpoint to the previous detected beat to midpoint to the next), the
    rule :mod:`seqstream.evaluation.metrics` uses for reference beats, so a sample-level detector is
    scored on the same detected beats as the beat classifier.

    >>> f = np.zeros(10, bool); f[7] = True
    >>> flags_on_beats(f, np.array([1, 4, 8])).tolist()
    [False, False, True]
    """
    from seqstream.evaluation.metrics import beat_windows, first_flags

    lo, hi = beat_windows(np.asarray(beats, dtype=np.int64), len(flags))
    return first_flags(np.asarray(flags, dtype=bool), lo, hi) >= 0
