"""QRS detection accuracy of :mod:`stream.qrs` on MIT-BIH records, beat by beat (EC57).

``python3 -m seqstream.evaluation.qrs --data ../shared/data/mitdb`` runs the detector over
the MLII lead (picked by name: record 114 has its leads swapped) of every record in the folder
except the paced ones (102, 104, 107, 217), matches its R peaks to the reference beats within 150 ms
(:mod:`seqstream.evaluation.ec57`) and prints a per-record table and the gross totals. Ventricular
flutter
episodes (``[`` .. ``]``) are left out of the scoring as EC57 does; ``--start`` leaves out the
first seconds of each record (EC57's learning period is 300 s; the detector reports nothing
in its first 2 s). ``--chunk`` streams each record in chunks of that many samples instead of one
pass (the result must not change). Without ``--data`` it runs on the records bundled with the
package (``training/bundled/mitdb``), so a fresh clone can run it. ``--detector xqrs`` scores
WFDB's own offline detector (``wfdb.processing.xqrs_detect``, default settings) on the same
records and lead instead, as a baseline.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import wfdb
import wfdb.processing

from seqstream.evaluation.ec57 import Score, exclude, match, score, total
from seqstream.evaluation.labels import BEAT_SYMBOLS, ecg_records
from stream.errors import ConfigError
from stream.qrs import QRSDetector, detect
from training.sources import BUNDLED_MITDB

__all__ = ["evaluate_record", "flutter_spans", "main", "read_record"]


def read_record(path: Path) -> tuple[np.ndarray, float, wfdb.Annotation]:
    """The MLII lead (mV, float64), its sampling rate and the reference annotations."""
    rec = wfdb.rdrecord(str(path), channel_names=["MLII"])
    if rec.p_signal is None or rec.p_signal.shape[1] != 1:
        raise ValueError(f"expected an MLII lead in record {path}, found {rec.sig_name}")
    ann = wfdb.rdann(str(path), "atr")
    return rec.p_signal[:, 0].astype(np.float64), float(rec.fs), ann


def flutter_spans(ann: wfdb.Annotation, n: int) -> list[tuple[int, int]]:
    """Inclusive sample spans of ventricular flutter (``[`` to ``]``; open ones run to the end)."""
    spans, start = [], None
    for s, sym in zip(ann.sample.tolist(), ann.symbol, strict=True):
        if sym == "[" and start is None:
            start = s
        elif sym == "]" and start is not None:
            spans.append((start, s))
            start = None
    if start is not None:
        spans.append((start, n - 1))
    return spans


def evaluate_record(path: Path, start_s: float = 0.0, chunk: int = 0,
                    detector: str = "ours") -> tuple[Score, int, np.ndarray]:
    """EC57 score of one record, the number of samples processed, and the offsets (seconds)
    of matched detections from their reference beats."""
    x, fs, ann = read_record(path)
    if detector == "xqrs":
        peaks = np.asarray(wfdb.processing.xqrs_detect(x, fs, verbose=False), dtype=np.int64)
    elif chunk > 0:
        det = QRSDetector(fs)
        st = det.initial(1)
        found = [det.process(st, [x[i: i + chunk]])[0] for i in range(0, len(x), chunk)]
        peaks = np.concatenate(found)
    else:
        peaks = detect(x, fs)
    is_beat = np.array([s in BEAT_SYMBOLS for s in ann.symbol], bool)
    ref = ann.sample[is_beat].astype(np.int64)
    spans = [*flutter_spans(ann, len(x)), (0, round(start_s * fs) - 1)]
    ref, peaks = exclude(ref, spans), exclude(peaks, spans)
    pairs = match(ref, peaks, fs)
    return score(ref, peaks, fs), len(x), (peaks[pairs[:, 1]] - ref[pairs[:, 0]]) / fs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m seqstream.evaluation.qrs",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=BUNDLED_MITDB,
                    help="folder of MIT-BIH records (default: the bundled ones)")
    ap.add_argument("--start", type=float, default=0.0,
                    help="seconds at the start of each record left out of the scoring")
    ap.add_argument("--chunk", type=int, default=0,
                    help="stream each record in chunks of this many samples (0: one pass)")
    ap.add_argument("--detector", choices=("ours", "xqrs"), default="ours",
                    help="stream.qrs (ours) or WFDB's offline xqrs_detect as a baseline")
    args = ap.parse_args(argv)
    try:
        paths = [args.data / name for name in ecg_records(args.data)]
    except ConfigError as ex:
        ap.error(str(ex))
    print(f"{'record':>6} {'beats':>6} {'TP':>6} {'FN':>5} {'FP':>5} {'Se %':>7} {'+P %':>7}")
    scores, offsets, samples, t0 = [], [], 0, time.perf_counter()
    for p in paths:
        s, n, off = evaluate_record(p, args.start, args.chunk, args.detector)
        scores.append(s)
        offsets.append(off)
        samples += n
        print(f"{p.name:>6} {s.tp + s.fn:>6} {s.tp:>6} {s.fn:>5} {s.fp:>5} "
              f"{100 * s.se:>7.2f} {100 * s.ppv:>7.2f}")
    g = total(scores)
    print(f"{'gross':>6} {g.tp + g.fn:>6} {g.tp:>6} {g.fn:>5} {g.fp:>5} "
          f"{100 * g.se:>7.2f} {100 * g.ppv:>7.2f}")
    off_ms = np.concatenate(offsets) * 1000.0
    lo, med, hi = np.percentile(off_ms, [5, 50, 95])
    print(f"R peak detected - reference: median {med:+.1f} ms, 90 % within [{lo:+.1f}, "
          f"{hi:+.1f}] ms")
    worst = sorted(scores, key=lambda s: min(s.se, s.ppv))[:1]
    print(f"{len(paths)} records, {samples:,} samples in {time.perf_counter() - t0:.1f} s "
          f"(reading included); worst min(Se, +P) {100 * min(worst[0].se, worst[0].ppv):.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
