"""The beat-level part of ``seqstream evaluate``: every detector scored on the *detected* beats.

For each test record the artifact's beat stage (:mod:`stream.beats`: online QRS detection,
causal beat features, the beat network) runs over the ECG lead with the sample-level scores
as its residual input, exactly as the worker feeds it. Its beats are matched to the reference
annotations (EC57, 150 ms: :mod:`seqstream.evaluation.ec57`) and counted by
:mod:`seqstream.evaluation.beatmetrics`:
the classifier per class (V, S, F) and its flags pooled (S + V + F). The sample-level detectors
(the network's residual score, the baselines) are scored on the same detected beats: a beat is
flagged when one of its samples is (:func:`seqstream.evaluation.beatmetrics.flags_on_beats`), so
every row of the table counts the same beats.

Live, the worker's beat records (topic ``seqstream.beats``) must equal this offline pass:
:func:`compare_beats` (R peak samples, RR, decision samples, classes and flags exactly,
``p_abnormal`` to 1e-5).

Beats and reference beats before ``start`` (the warm-up) are left out, in pairs: a detection
matched to a reference beat on the other side of ``start`` counts nowhere.

One CSV per record, ``beats/<record>.csv``, columns ``sample,time_s,rr_s,class,p_abnormal,
anomaly`` (one row per detected beat; ``sample`` the R peak's 0-based index in the record,
``rr_s`` empty for the first beat, ``anomaly`` 0/1), so another harness can score them.
"""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqstream.evaluation.beatmetrics import BeatTally, beat_tally, flags_on_beats, match_of
from seqstream.evaluation.dataset import EvalData
from seqstream.evaluation.labels import Labels

__all__ = ["CSV_COLUMNS", "RecordBeats", "beat_section", "compare_beats", "detect_beats",
           "record_tally", "restrict", "write_beats_csv"]

log = logging.getLogger(__name__)
CSV_COLUMNS = ("sample", "time_s", "rr_s", "class", "p_abnormal", "anomaly")
BEAT_STAGE = "seqstream_beats"


@dataclass(frozen=True)
class RecordBeats:
    """The beat stage's output on one record, as arrays."""

    entity: str
    samples: np.ndarray  # int64 R peaks
    rr_s: np.ndarray  # float64, NaN for none
    classes: np.ndarray  # str N/S/V/F
    p_abnormal: np.ndarray  # float64
    anomaly: np.ndarray  # bool
    decided: np.ndarray  # int64
    irregular: np.ndarray  # bool: the rhythm rule held when the beat was decided

    @classmethod
    def of(cls, entity: str, beats: Sequence) -> RecordBeats:
        """From a list of :class:`stream.beats.BeatOut`."""
        return cls(entity, np.array([b.sample for b in beats], dtype=np.int64),
                   np.array([math.nan if b.rr_s is None else b.rr_s for b in beats],
                            dtype=np.float64),
                   np.array([b.cls for b in beats], dtype="<U1"),
                   np.array([b.p_abnormal for b in beats], dtype=np.float64),
                   np.array([b.anomaly for b in beats], dtype=bool),
                   np.array([b.decided for b in beats], dtype=np.int64),
                   np.array([b.irregular for b in beats], dtype=bool))


def detect_beats(artifact, data: EvalData, residuals: Sequence[np.ndarray]) -> list[RecordBeats]:
    """The artifact's beat stage over each test series' lead, one chunk per series (the
    offline pass; the live worker must give the same beats)."""
    from stream.beats import offline_beats

    stage = artifact.beats
    if abs(stage.fs * data.period_s - 1.0) > 1e-9:
        raise ValueError(f"beat stage: expected fs = 1/period = {1 / data.period_s:g} Hz, got "
                         f"{stage.fs:g} Hz")
    out = []
    for s, res in zip(data.test, residuals, strict=True):
        signal = np.ascontiguousarray(s.values[:, stage.lead], dtype=np.float64)
        out.append(RecordBeats.of(s.entity, offline_beats(stage, signal,
                                                          np.asarray(res, np.float64))))
    return out


def compare_beats(streamed: Sequence[Sequence[dict]], offline: Sequence[RecordBeats],
                  period_s: float, tol: float = 1e-5) -> dict[str, Any]:
    """The worker's beat records against the offline beats, series by series: one record per
    offline beat (a repeat allowed by at-least-once delivery must be identical), same R peak,
    RR, decision time, class, flag and rhythm rule (``irregular``), ``p_abnormal`` within ``tol``.

    >>> off = RecordBeats("e", np.array([10]), np.array([np.nan]), np.array(["V"]),
    ...                   np.array([0.9]), np.array([True]), np.array([40]), np.array([False]))
    >>> rec = {"sample": 10, "rr": None, "class": "V", "p_abnormal": 0.9 + 2e-6,
    ...        "anomaly": True, "ts": 10.0, "decided_ts": 40.0, "irregular": False}
    >>> out = compare_beats([[rec, rec]], [off], period_s=1.0)
    >>> out["passed"], out["records"], out["beats"], out["max_abs_diff_p"] < 1e-5
    (True, 2, 1, True)
    >>> compare_beats([[{**rec, "irregular": True}]], [off], period_s=1.0)["differing"]
    1
    """
    missing = extra = differing = repeats_differing = records = 0
    max_dp = 0.0
    for recs, off in zip(streamed, offline, strict=True):
        records += len(recs)
        by_sample: dict[int, dict] = {}
        for r in recs:
            first = by_sample.setdefault(int(r["sample"]), r)
            repeats_differing += first != r
        want = {int(s): k for k, s in enumerate(off.samples)}
        missing += len(set(want) - set(by_sample))
        extra += len(set(by_sample) - set(want))
        for s in set(want) & set(by_sample):
            r, k = by_sample[s], want[s]
            rr = math.nan if r["rr"] is None else float(r["rr"])
            dp = abs(float(r["p_abnormal"]) - float(off.p_abnormal[k]))
            max_dp = max(max_dp, dp)
            same = (r["class"] == off.classes[k] and bool(r["anomaly"]) == bool(off.anomaly[k])
                    and bool(r["irregular"]) == bool(off.irregular[k])
                    and (rr == off.rr_s[k] or (math.isnan(rr) and math.isnan(off.rr_s[k])))
                    and round((r["decided_ts"] - r["ts"]) / period_s) == off.decided[k] - s
                    and dp <= tol)
            differing += not same
    beats = sum(len(o.samples) for o in offline)
    passed = missing == extra == differing == repeats_differing == 0
    summary = (f"beat records {records:,} for {beats:,} offline beats: missing {missing}, extra "
               f"{extra}, differing {differing} (repeats differing {repeats_differing}), max "
               f"|Δ p_abnormal| {max_dp:.1e}: **{'equal' if passed else 'NOT equal'}**")
    return {"passed": passed, "records": records, "beats": beats, "missing": missing,
            "extra": extra, "differing": differing, "repeats_differing": repeats_differing,
            "max_abs_diff_p": max_dp, "tolerance_p": tol, "summary": summary}


def write_beats_csv(path: Path, beats: RecordBeats, period_s: float) -> Path:
    """One row per detected beat (see the module docstring); numbers written in full
    (``repr``), so a reader gets back exactly what was scored."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for k in range(len(beats.samples)):
            rr = beats.rr_s[k]
            w.writerow([int(beats.samples[k]), repr(float(beats.samples[k] * period_s)),
                        "" if math.isnan(rr) else repr(float(rr)), beats.classes[k],
                        repr(float(beats.p_abnormal[k])), int(beats.anomaly[k])])
    return path


def restrict(ref: np.ndarray, det: np.ndarray, match: np.ndarray, start: int,
             stop: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keep reference and detected beats in ``[start, stop)``; pairs straddling a bound go.
    Returns the kept reference indexes, kept detection indexes and the re-indexed match.

    >>> [a.tolist() for a in restrict(np.array([5, 15, 25]), np.array([9, 14, 26]),
    ...                                np.array([0, 1, 2]), start=10)]
    [[1, 2], [1, 2], [0, 1]]
    """
    ref, det, match = (np.asarray(a, dtype=np.int64) for a in (ref, det, match))
    end = np.iinfo(np.int64).max if stop is None else stop
    keep_ref = (ref >= start) & (ref < end)
    partner_ok = np.ones(len(det), dtype=bool)
    partner_ok[match >= 0] = keep_ref[match[match >= 0]]
    keep_det = (det >= start) & (det < end) & partner_ok
    straddled = match[(match >= 0) & ~keep_det]  # reference beats whose detection went
    keep_ref[straddled] = False
    new_index = np.cumsum(keep_ref) - 1
    m = match[keep_det]
    m = np.where(m >= 0, new_index[np.maximum(m, 0)], -1)
    return np.flatnonzero(keep_ref), np.flatnonzero(keep_det), m


def record_tally(labels: Labels, det: np.ndarray, classes: np.ndarray | None,
                 flags: np.ndarray, start: int, stop: int, period_s: float) -> BeatTally:
    """One record's counts over ``[start, stop)``: detections ``det`` (R peaks), the classes
    called (None for a flag-only detector) and flags, matched to ``labels`` (EC57)."""
    match = match_of(labels.r_peaks, det, 1.0 / period_s)
    r, d, m = restrict(labels.r_peaks, det, match, start, stop)
    return beat_tally(labels.classes[r], None if classes is None else classes[d], flags[d], m,
                      hours=(stop - start) * period_s / 3600.0)


def beat_section(artifact, data: EvalData, beats: Sequence[RecordBeats],
                 sample_flags: dict[str, tuple[str, str, list[np.ndarray]]], warmup: int,
                 out: Path) -> dict[str, Any]:
    """Every detector's beat-level figures on the detected beats, and the per-record CSVs.

    ``sample_flags``: per row name, ``(label, threshold rule, per-series sample flags)`` of the
    sample-level detectors."""
    stage_parts, stage_rows = [], {}
    flag_parts: dict[str, list[BeatTally]] = {k: [] for k in sample_flags}
    csvs = []
    for i, (s, b) in enumerate(zip(data.test, beats, strict=True)):
        n, start = len(s.values), max(warmup, s.start)
        safe = s.entity.replace("/", "_")
        csvs.append(str(write_beats_csv(out / "beats" / f"{safe}.csv", b, data.period_s)))
        t = record_tally(s.labels, b.samples, b.classes, b.anomaly, start, n, data.period_s)
        stage_parts.append(t)
        stage_rows[s.entity] = {"reference_beats": int((s.labels.r_peaks >= start).sum()),
                                "detected_beats": int((b.samples >= start).sum()),
                                "counts": s.labels.part(start, n).counts(), **t.summary()}
        for name, (_, _, flags) in sample_flags.items():
            f = flags_on_beats(flags[i], b.samples)
            flag_parts[name].append(record_tally(s.labels, b.samples, None, f, start, n,
                                                 data.period_s))
    stage = artifact.beats
    detectors = {BEAT_STAGE: {"label": "seqstream beat classifier (flags: p_abnormal ≥ "
                                       f"{stage.threshold:.3g})",
                              "rule": "the card's beats threshold",
                              **BeatTally.pool(stage_parts).summary()}}
    for name, (label, rule, _) in sample_flags.items():
        detectors[name] = {"label": label, "rule": rule,
                           **BeatTally.pool(flag_parts[name]).summary()}
    return {"detectors": detectors, "per_record": stage_rows, "csv": csvs,
            "threshold": stage.threshold, "warmup": warmup, "match_window_s": 0.15}
