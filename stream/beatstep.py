"""The beat path inside one engine batch: the artifact's beat stage over every row at once.

For an artifact with a beat model (``artifact.beats``, :class:`stream.beats.BeatStage`), after
the sample step the engine hands :meth:`BeatStep.step` the batch's rows (one row = consecutive
new samples of one entity, see :mod:`stream.engine`). ONE ``BeatStage.process`` call advances
them all, with for row ``r``:

    states[r]    = the entity's stored beat row, or ``BeatStage.initial`` for a row that starts
                   fresh (a new entity, an undecodable state, or a gap reset)
    signals[r]   = the row's samples of the card's ECG lead in USER units (mV, float64, the
                   values as they came in, not the network's scaled float32)
    residuals[r] = the row's published per-sample scores (NaN where none)

An entity owns several rows only when a gap reset split its samples, and every row after the
first starts fresh, so no row depends on another's result and one call serves them all in
order; the entity's saved beat row is its last row's.

Every beat the call decides becomes a record (:func:`stream.records.beat_record`). Its times
come from the deciding sample, which is always in this call's row: that row's first sample has
the absolute index ``n0 = steps`` (the engine's count of samples since the entity's start or
reset, which the beat stage counts alike from ``initial``), so the deciding sample is the row's
sample ``decided - n0``, whose time the batch knows (``ts + period * k`` in its event); the R
peak's time is counted back from it by the card's ``period_s``. ``steps`` saturates at 2**32
samples (138 days at 360 Hz without a gap): past that the position cannot be known and the step
raises rather than publish wrong times.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
import orjson

from stream.errors import ArtifactError
from stream.records import beat_record

if TYPE_CHECKING:
    from stream.beats import BeatStage
    from stream.engine import Batch, Outcome

__all__ = ["BeatStep"]


class BeatStep:
    """The beat stage of one artifact, driven by the engine's rows; see the module docstring."""

    def __init__(self, stage: BeatStage, *, n_features: int, period_s: float, threshold: float,
                 model_id: str) -> None:
        lead = int(stage.lead)
        if not 0 <= lead < n_features:
            raise ArtifactError(f"card beats: expected the lead index in [0, {n_features}), "
                                f"got {stage.lead!r}")
        if not period_s > 0:
            raise ArtifactError(f"card period_s: expected the sampling period in seconds (beat "
                                f"times are counted back by it), got {period_s!r}")
        self.stage, self.lead, self.period_s = stage, lead, period_s
        self.threshold, self.model_id = threshold, model_id
        self.dtype = np.dtype(stage.state_dtype)

    def prime(self, rows: np.ndarray, found: np.ndarray) -> None:
        """Give every entity without a decodable stored state the stage's initial beat row."""
        missing = np.flatnonzero(~found)
        if missing.size:
            rows["beat"][missing] = self.stage.initial(missing.size)

    def step(self, batch: Batch, entity_of_row: np.ndarray, fresh: np.ndarray,
             steps0: np.ndarray, lengths: np.ndarray, sample_of: np.ndarray, scores: np.ndarray,
             stored: np.ndarray, out: Outcome) -> np.ndarray:
        """Advance every row's beat state, append the decided beats' records to ``out``; return
        the beat rows after each row (the engine saves each entity's last)."""
        states = stored[entity_of_row]  # a copy: one state per row
        if fresh.any():
            states[fresh] = self.stage.initial(int(fresh.sum()))
        bounds = np.cumsum(lengths)[:-1]
        signals = np.split(batch.values[sample_of, self.lead], bounds)
        residuals = np.split(np.asarray(scores, dtype=np.float64), bounds)
        decided = self.stage.process(states, signals, residuals)
        if any(decided):
            self._records(batch, entity_of_row, steps0, lengths, sample_of, decided, out)
        return states

    def _records(self, batch: Batch, entity_of_row: np.ndarray, steps0: np.ndarray,
                 lengths: np.ndarray, sample_of: np.ndarray, decided: list, out: Outcome) -> None:
        ids, events = batch.entity_ids, batch.events
        firsts = np.fromiter((lo for lo, _ in batch.spans), dtype=np.int64,
                             count=len(batch.spans))
        row_start = np.cumsum(lengths) - lengths
        period, thr, model_id = self.period_s, self.threshold, self.model_id
        flagged: Counter[str] = Counter()
        for r, beats in enumerate(decided):
            if not beats:
                continue
            n0, n = int(steps0[r]), int(lengths[r])
            entity = ids[int(entity_of_row[r])]
            key = entity.encode()
            for beat in beats:
                j = int(beat.decided) - n0
                if not 0 <= j < n:
                    raise RuntimeError(f"beat stage: expected beats decided within the row's "
                                       f"samples {n0}..{n0 + n - 1}, got one decided at "
                                       f"{beat.decided} (entity {entity!r})")
                at = int(sample_of[row_start[r] + j])
                i = int(np.searchsorted(firsts, at, side="right")) - 1
                e = events[i]
                decided_ts = e.ts + e.period * (at - int(firsts[i]))
                value = orjson.dumps(beat_record(entity, beat, decided_ts, period, thr,
                                                 model_id))
                out.beats.append((key, value))
                if beat.anomaly:
                    out.anomalies.append((key, value))
                    flagged[str(beat.cls)] += 1
        for cls, count in flagged.items():
            out.abnormal_beats[cls] = out.abnormal_beats.get(cls, 0) + count
