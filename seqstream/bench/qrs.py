"""Speed of the online QRS detector (:mod:`stream.qrs`) on real ECG.

``python3 -m seqstream.bench.qrs`` prints samples per second for

- a fleet: ``--entities`` entities (1,000) each sending ``--chunk``-sample chunks (36 = 100 ms
  at 360 Hz, as the demo's monitors do), every call advancing all of them, for ``--seconds`` of
  signal; entity ``e`` plays bundled record ``e mod 3`` (MLII) from its own start offset, so
  beats fall at different samples in different entities;
- one entity alone in ``--chunk``-sample calls (the fixed cost of a call);
- one long record: the whole of each bundled record in one ``process`` call.

Both wall-clock and CPU time (of this process) are printed: on a shared, busy machine the
CPU figure is the one that says what one core does. The state round trip through bytes (what
Redis stores) is not included; it is one ``tobytes``/``frombuffer`` of ``entities × state
bytes``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from seqstream.evaluation.qrs import read_record
from stream.qrs import QRSDetector
from training.sources import BUNDLED_MITDB

__all__ = ["main"]

RECORDS = ("100", "106", "215")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m seqstream.bench.qrs",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=1000)
    ap.add_argument("--chunk", type=int, default=36)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args(argv)
    leads = [read_record(BUNDLED_MITDB / r)[:2] for r in RECORDS]
    fs = leads[0][1]
    det = QRSDetector(fs)
    n = round(args.seconds * fs)
    span = min(len(x) for x, _ in leads) - n
    offsets = (np.arange(args.entities) * 7919) % span
    sig = np.stack([leads[e % len(leads)][0][o: o + n] for e, o in enumerate(offsets)])
    st = det.initial(args.entities)
    beats, t0, c0 = 0, time.perf_counter(), time.process_time()
    for i in range(0, n, args.chunk):
        chunks = list(sig[:, i: i + args.chunk])
        beats += sum(len(b) for b in det.process(st, chunks))
    print(f"fleet: {args.entities:,} entities x {args.chunk}-sample chunks, {args.seconds:g} s "
          f"each: {sig.size:,} samples, {_rates(sig.size, t0, c0)} ({beats:,} beats; state "
          f"{det.state_dtype.itemsize:,} bytes per entity)")
    one = sig[0]
    st1 = det.initial(1)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, n, args.chunk):
        det.process(st1, [one[i: i + args.chunk]])
    calls = -(-n // args.chunk)
    print(f"one entity, {calls:,} calls of {args.chunk} samples: "
          f"{(time.process_time() - c0) / calls * 1e6:.0f} us CPU per call, "
          f"{_rates(n, t0, c0)}")
    for r, (x, _) in zip(RECORDS, leads, strict=True):
        st1 = det.initial(1)
        t0, c0 = time.perf_counter(), time.process_time()
        found = det.process(st1, [x])[0]
        print(f"record {r}: {len(x):,} samples in one call, {_rates(len(x), t0, c0)} "
              f"({len(found):,} beats)")
    return 0


def _rates(samples: int, t0: float, c0: float) -> str:
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return (f"{samples / wall / 1e6:.2f} M samples/s wall ({wall:.2f} s), "
            f"{samples / cpu / 1e6:.2f} M per CPU-second ({cpu:.2f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
