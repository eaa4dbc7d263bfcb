"""The benchmark's events: real MIT-BIH ECG (lead MLII, 360 Hz) fanned out to E entities.

Every pipeline reads the same bytes. Entities are laid over the recorded series with
:func:`seqstream.replay.fan_out` (entity ``i`` reads record ``i mod S`` from an evenly spaced
start, so no two entities repeat each other in lock step) and cut into events of ``m`` samples
with :func:`seqstream.replay.chunks` (``m = 1``: one reading per message; ``m = 36``: 100 ms of ECG
per message). Timestamps are the samples' recording times from a fixed epoch, so they increase
per entity and never trip the worker's gap reset; the steady-load phase stamps events with the
wall clock instead (see :mod:`seqstream.bench.load`).

The recordings come from ``../shared/data/mitdb`` when it is there, else from the subset bundled
with the package (``training/bundled/mitdb``); nothing is downloaded.

>>> series = [("r", np.arange(8.0).reshape(8, 1), 1 / 360)]
>>> evs = make_events(series, entities=2, samples_per_event=3, count=3)
>>> [(e.key, len(orjson.loads(e.value)["values"])) for e in evs]
[(b'b-r', 3), (b'b-r@4', 3), (b'b-r', 3)]
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from itertools import islice
from pathlib import Path

import numpy as np
import orjson

from seqstream.replay import chunks, fan_out
from stream.errors import ConfigError

__all__ = ["EPOCH", "PERIOD_S", "Encoded", "find_mitdb", "load_series", "make_events"]

# ../shared beside a checkout, then the subset bundled as package data of `training`
# (training.sources.BUNDLED_MITDB, without importing pandas here)
CANDIDATES = (Path(__file__).resolve().parents[3] / "shared" / "data" / "mitdb",
              Path(str(resources.files("training").joinpath("bundled", "mitdb"))))
EPOCH = 1_700_000_000.0  # ts of every entity's first sample, seconds
PERIOD_S = 1 / 360
LEAD = "MLII"


@dataclass(frozen=True)
class Encoded:
    """One event as it goes on the wire: Kafka key (the entity id) and JSON value."""

    key: bytes
    value: bytes
    samples: int


def find_mitdb() -> Path:
    """The first MIT-BIH folder that exists (shared data, then the bundled subset)."""
    for path in CANDIDATES:
        if any(path.glob("*.hea")):
            return path
    raise ConfigError("bench: expected MIT-BIH records in " + " or ".join(map(str, CANDIDATES))
                      + ", found none")


def load_series(records: int = 3, samples: int | None = None,
                folder: Path | None = None) -> list[tuple[str, np.ndarray, float]]:
    """The MLII lead of the first ``records`` records as ``(name, [T, 1] mV, period)``."""
    import wfdb  # only the harness needs it, never the pipelines

    folder = folder or find_mitdb()
    names = sorted(p.stem for p in folder.glob("*.hea"))[:records]
    out = []
    for name in names:
        rec = wfdb.rdrecord(str(folder / name), sampto=samples, channel_names=[LEAD])
        if rec.p_signal is None or rec.p_signal.shape[1] != 1:
            continue  # a record without the MLII lead
        out.append((name, rec.p_signal.astype(np.float64), 1.0 / float(rec.fs)))
    if not out:
        raise ConfigError(f"bench: expected records with lead {LEAD} in {folder}, found none")
    return out


def make_events(series: list[tuple[str, np.ndarray, float]], entities: int,
                samples_per_event: int, count: int, prefix: str = "b-") -> list[Encoded]:
    """The first ``count`` events of ``entities`` fanned-out lanes, in signal-time order
    (looping over a record's end so any count can be reached)."""
    lanes = fan_out(series, entities, prefix=prefix)
    dumps = orjson.dumps
    out: list[Encoded] = []
    for c in islice(chunks(lanes, samples_per_event, loop=True), count):
        lane = lanes[c.lane]
        ts = EPOCH + c.due_s
        values = c.values.round(4)
        if samples_per_event == 1:
            body = {"entity_id": lane.entity_id, "ts": ts, "values": values[0].tolist()}
        else:
            body = {"entity_id": lane.entity_id, "ts": ts, "period": lane.period_s,
                    "values": values.tolist()}
        out.append(Encoded(lane.entity_id.encode(), dumps(body), len(values)))
    if len(out) < count:
        raise ConfigError(f"bench: expected {count} events, the series gave {len(out)}")
    return out
