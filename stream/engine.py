"""The hot path as a pure batch processor: raw messages + loaded states → records + new states.

Nothing here talks to Kafka, Redis or Prometheus (the pipeline hands each :class:`Outcome` to
:meth:`stream.metrics.Metrics.on_batch`), so the Faust worker, a plain aiokafka loop (benchmarks)
and unit tests drive the very same code. A batch goes through two calls:

1. :meth:`Engine.prepare` validates every message (``stream.records``), scales all samples with
   one numpy call (a value that overflows float32 *after* scaling is refused too), and groups the
   events by entity keeping arrival order; its ``entity_ids`` are what the caller loads, in one
   round trip.
2. :meth:`Engine.apply` decodes the loaded states from one buffer, walks each entity's events
   against its watermark, and advances every entity with ONE no-grad call of the network over
   ragged sequences: row ``r`` holds the ``L_r`` new samples of one entity and the packed call
   (``Forecaster.forward(seq, state, lengths)``) returns each row's state after *its own* last
   sample. Padding alone would run the shorter rows through pad steps and corrupt their state.

Per sample ``x_t`` (scaled), with ``x̂_t`` the 1-step forecast made one step earlier (kept in the
state between batches) and ``s`` the card's per-feature residual scale::

    score_t   = rms_f((x_t - x̂_t) / s)              (stream.scoring.score; null without x̂_t)
    anomaly_t = score_t > threshold  and  steps since start or reset >= warmup_steps
    skip      if ts_t <= watermark ts  (duplicate if its message offset <= the watermark's
                                        offset on the same partition, else late)
    reset     if ts_t - watermark ts > max_gap_s  (state back to zero, no x̂, warm-up again)
    refuse    if ts_last > now + max_future_s     (dead letter ``future_ts``; now = wall clock)
    reset     if watermark ts > now + max_future_s (a watermark poisoned before that check)

Every message ends as exactly one of: a prediction record, a dead letter, or a counted replay.
A message whose samples are all skipped is a replay (``seqstream_replayed_total``, silent) when
its offset was already applied on the entity's partition, else out of order: a dead letter
``late`` naming its time and the watermark. A chunk that straddles the watermark is answered for
its new samples only; its record's ``ts`` is its first new sample and ``skipped`` says how many
older ones were left out (counted as ``late`` samples).

With a ``score.entity_scale`` section in the card, the published score (and the one flagged) is
``score_t / exp(μ)``, the entity's running typical peak (:mod:`stream.entity_scale`), whose two
numbers ``p``, ``μ`` live in the entity's state and restart at ``0``, ``μ_0`` with it; without
the section the score is ``score_t`` itself and they stay 0.

A reset inside a batch starts a new row from a zero state, so an entity may own several rows;
only its last row's final state is saved. For an artifact with a beat model the rows then go
through the beat stage (:mod:`stream.beatstep`: beat records on the beats topic, the stage's row
saved in the entity's state), which restarts with the rest of the state. With a
``score.sensor`` section the published score and flag are the sensor score's instead
(:mod:`stream.sensor_score`: each entity's own level and scale, the Gaussian NLL averaged over
several horizons, its own threshold; ``threshold`` in the records is its margin), stepped over
the rows' scaled samples from the entity's stored vector (zeros after a reset), which is saved
with the rest. A stored value that cannot be decoded is counted as a ``corrupt`` reset and the
entity restarts from zero rather than stopping the worker.

>>> import numpy as np, torch
>>> from stream.artifact import Artifact
>>> from stream.model import Forecaster
>>> torch.manual_seed(0) and None
>>> card = {"score": {"kind": "rms_z", "residual_scale": [1.0]}, "threshold": {"value": 3.0}}
>>> art = Artifact(Forecaster("gru", 1, 8).eval(), card, "m" * 64, np.zeros(1, np.float32),
...                np.ones(1, np.float32))
>>> engine = Engine(art, warmup_steps=0, max_gap_s=0)
>>> msgs = [RawMessage(b'{"entity_id":"a","ts":1,"values":[0.5]}', b"a", "ev", 0, 0),
...         RawMessage(b'{"entity_id":"a","ts":2,"values":[0.7]}', b"a", "ev", 0, 1),
...         RawMessage(b'[1]', None, "ev", 0, 2)]
>>> batch = engine.prepare(msgs)
>>> batch.entity_ids, [d["reason"] for d in batch.deadletter_records]
(['a'], ['not_object'])
>>> out = engine.apply(batch, [None])
>>> len(out.predictions), sorted(out.states), out.samples
(2, ['a'], 2)
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import orjson
import torch

from stream.beatstep import BeatStep
from stream.errors import RecordError
from stream.records import TS_MAX, Event, deadletter_record, parse_event, prediction_record
from stream.scoring import score
from stream.state import FLAG_FORECAST, StateCodec

if TYPE_CHECKING:
    from collections.abc import Callable

    from stream.artifact import Artifact

__all__ = ["MAX_FORECAST_VALUES", "Batch", "Engine", "Outcome", "RawMessage"]

log = logging.getLogger(__name__)

# A chunk's prediction carries samples x H x F forecast values; capping them keeps that record far
# below Kafka's default 1 MB message limit (a larger one would be refused by the broker forever).
MAX_FORECAST_VALUES = 32_768
_STEPS_MAX = 2**32 - 1
_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


class RawMessage(NamedTuple):
    """One Kafka message as the engine needs it (any client can build these)."""

    value: bytes
    key: bytes | None
    topic: str
    partition: int
    offset: int


@dataclass
class Batch:
    """Validated events of one batch grouped by entity; ``entity_ids`` is what to load."""

    events: list[Event]
    sources: list[tuple[int, int]]  # (partition, offset) per event
    spans: list[tuple[int, int]]  # the event's samples in ``scaled``
    scaled: np.ndarray  # [samples, F] float32, every sample of every valid event
    values: np.ndarray  # [samples, F] float64, the same samples in user units (the beat path's)
    groups: dict[str, list[int]]  # entity → indexes of its events, in arrival order
    deadletter_records: list[dict[str, Any]]
    deadletter_keys: list[bytes | None]
    messages: int
    raw: list[RawMessage] = field(default_factory=list)  # the batch's input, for late dead letters
    now: float = math.inf  # the wall clock when the batch was prepared
    _by_source: dict[tuple[int, int], RawMessage] = field(default_factory=dict)

    @property
    def entity_ids(self) -> list[str]:
        return list(self.groups)

    def message(self, partition: int, offset: int) -> RawMessage:
        """The input message at (partition, offset); the index is built on first use only."""
        if not self._by_source:
            self._by_source = {(m.partition, m.offset): m for m in self.raw}
        return self._by_source[(partition, offset)]


@dataclass
class Outcome:
    """What one batch produces: records to send (key, value) and states to save."""

    predictions: list[tuple[bytes, bytes]] = field(default_factory=list)
    anomalies: list[tuple[bytes, bytes]] = field(default_factory=list)
    beats: list[tuple[bytes, bytes]] = field(default_factory=list)
    deadletters: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)
    last_ts: list[float] = field(default_factory=list)  # per prediction: its last sample's ts
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: {"duplicate": 0, "late": 0})
    replayed: int = 0  # messages skipped whole as replays of applied offsets
    late: int = 0  # messages dead-lettered as late (already in ``deadletters``)
    resets: dict[str, int] = field(default_factory=lambda: {"gap": 0, "corrupt": 0,
                                                             "version": 0,
                                                             "future_watermark": 0})
    step_seconds: float = 0.0
    abnormal_beats: dict[str, int] = field(default_factory=dict)  # flagged beats by class


class _Row:
    """One sequence of the batched network call: consecutive new samples of one entity."""

    __slots__ = ("entity", "fresh", "prev", "samples", "steps")

    def __init__(self, entity: int, fresh: bool, prev: bool, steps: int) -> None:
        self.entity = entity  # index into the batch's entity list
        self.fresh = fresh  # start from a zero state (new entity or reset), not the stored one
        self.prev = prev  # the stored 1-step forecast applies to the first sample
        self.steps = steps  # steps since start/reset before the row's first sample
        self.samples: list[int] = []  # indexes into Batch.scaled


class Engine:
    """Validation, state transitions, the batched network call and scoring for one artifact."""

    def __init__(self, artifact: Artifact, *, warmup_steps: int = 360, max_gap_s: float = 60.0,
                 max_payload_bytes: int = 1 << 20, check_key: bool = True,
                 max_future_s: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.n_features = artifact.n_features
        self.model_id = artifact.model_id
        self.threshold = artifact.flag_threshold
        self.residual_scale = artifact.residual_scale
        self.entity_scale = artifact.entity_scale
        self.period_s = artifact.period_s
        self.beats = None if artifact.beats is None else BeatStep(
            artifact.beats, n_features=self.n_features, period_s=self.period_s,
            threshold=artifact.beats.threshold, model_id=self.model_id)
        self.sensor = artifact.sensor
        self.codec = StateCodec(self.model.state_size, self.n_features,
                                None if self.beats is None else self.beats.dtype,
                                0 if self.sensor is None else self.sensor.layout(self.n_features))
        self.warmup_steps, self.max_gap_s = warmup_steps, max_gap_s
        self.max_payload_bytes, self.check_key = max_payload_bytes, check_key
        self.max_future_s = max_future_s if max_future_s > 0 else math.inf
        self.clock = clock

    # -- 1. validate and group ---------------------------------------------------------------

    def prepare(self, messages: list[RawMessage]) -> Batch:
        """Validate, scale and group ``messages``; refused ones become dead-letter records."""
        events: list[Event] = []
        sources: list[tuple[int, int]] = []
        dead: list[tuple[RecordError, RawMessage]] = []
        f, limit, check = self.n_features, self.max_payload_bytes, self.check_key
        per_sample = self.model.horizon * f
        now = self.clock()
        horizon = now + self.max_future_s
        for m in messages:
            try:
                e = parse_event(m.value, f, limit, m.key, check)
                if e.chunk and len(e.rows) * per_sample > MAX_FORECAST_VALUES:
                    raise RecordError("too_large", f"values: expected at most "
                                      f"{MAX_FORECAST_VALUES // per_sample} samples per chunk "
                                      f"(its prediction holds {per_sample} values per sample), "
                                      f"got {len(e.rows)}")
                if e.ts + e.period * (len(e.rows) - 1) > horizon:
                    raise self._future(e, now)
            except RecordError as ex:
                dead.append((ex, m))
                continue
            events.append(e)
            sources.append((m.partition, m.offset))
        spans: list[tuple[int, int]] = []
        at = 0
        for e in events:
            spans.append((at, at + len(e.rows)))
            at += len(e.rows)
        if events:
            # every row holds f numbers (validated): one flat pass, no nested-list discovery
            chain = itertools.chain.from_iterable
            values = np.fromiter(chain(chain(e.rows for e in events)), dtype=np.float64,
                                 count=at * f).reshape(at, f)
            with np.errstate(over="ignore", invalid="ignore"):
                scaled = self.artifact.scale(values)
            finite = np.isfinite(scaled).all(axis=1)
            if not finite.all():
                events, sources, spans, scaled, values = self._drop_overflow(
                    messages, events, sources, spans, scaled, values, finite, dead)
        else:
            scaled = np.zeros((0, f), dtype=np.float32)
            values = np.zeros((0, f), dtype=np.float64)
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(events):
            groups.setdefault(e.entity_id, []).append(i)
        if len(dead) > 1:
            dead.sort(key=lambda d: (d[1].topic, d[1].partition, d[1].offset))
        records = [deadletter_record(ex, m.value, m.topic, m.partition, m.offset)
                   for ex, m in dead]
        return Batch(events, sources, spans, scaled, values, groups, records,
                     [m.key for _, m in dead], len(messages), messages, now)

    def _future(self, e: Event, now: float) -> RecordError:
        last = e.ts + e.period * (len(e.rows) - 1)
        what = "its last sample's ts" if e.chunk else "ts"
        return RecordError("future_ts", f"{what}: expected at most {self.max_future_s:g} s "
                           f"after the worker's clock {_iso(now)} ({now:.3f}), got {_iso(last)} "
                           f"({last:.3f}, {last - now:.0f} s ahead)")

    def _drop_overflow(self, messages: list[RawMessage], events: list[Event],
                       sources: list[tuple[int, int]], spans: list[tuple[int, int]],
                       scaled: np.ndarray, values: np.ndarray, finite: np.ndarray,
                       dead: list[tuple[RecordError, RawMessage]]) -> tuple[Any, ...]:
        by_source = {(m.partition, m.offset): m for m in messages}
        keep_e, keep_s, keep_sp, parts, raw = [], [], [], [], []
        at = 0
        for e, src, (lo, hi) in zip(events, sources, spans, strict=True):
            if finite[lo:hi].all():
                keep_e.append(e)
                keep_s.append(src)
                keep_sp.append((at, at + hi - lo))
                parts.append(scaled[lo:hi])
                raw.append(values[lo:hi])
                at += hi - lo
            else:
                dead.append((RecordError("non_finite", "values: expected numbers that stay "
                                         "finite in float32 after the model's scaling, got one "
                                         "that overflows"), by_source[src]))
        if not parts:
            return (keep_e, keep_s, keep_sp, np.zeros((0, self.n_features), dtype=np.float32),
                    np.zeros((0, self.n_features), dtype=np.float64))
        return keep_e, keep_s, keep_sp, np.concatenate(parts), np.concatenate(raw)

    # -- 2. step, score, emit ------------------------------------------------------------------

    def apply(self, batch: Batch, blobs: list[bytes | None]) -> Outcome:
        """Advance every entity of ``batch`` from its loaded state; see the module docstring."""
        out = Outcome()
        for record, key in zip(batch.deadletter_records, batch.deadletter_keys, strict=True):
            out.deadletters.append((key, orjson.dumps(record)))
        entity_ids = batch.entity_ids
        if len(blobs) != len(entity_ids):
            raise ValueError(f"states: expected {len(entity_ids)} loaded values, got "
                             f"{len(blobs)}")
        if not entity_ids:
            return out
        rows_state, found = self.codec.decode(blobs)
        undecodable = self.codec.corrupt(blobs, found)
        if undecodable.any():
            stale = self.codec.stale(blobs)
            out.resets["version"] += int((undecodable & stale).sum())
            out.resets["corrupt"] += int((undecodable & ~stale).sum())
        if self.entity_scale is not None:
            rows_state["log_mu"][~found] = self.entity_scale.mu0
        if self.beats is not None:
            self.beats.prime(rows_state, found)
        seq_rows, emits, final = self._plan(batch, rows_state, out)
        if seq_rows:
            self._run(batch, seq_rows, emits, final, rows_state, out)
        return out

    def _plan(self, batch: Batch, st: np.ndarray, out: Outcome
              ) -> tuple[list[_Row], list[tuple[int, int, int, int]],
                         dict[int, tuple[int, float, int, int]]]:
        """Walk each entity's events against its watermark; build the network's rows.

        ``emits`` holds (event, first applied sample, its row, its position in the row) once per
        event with something applied; ``final`` maps an entity to (its last row, watermark ts,
        partition, offset) after the batch.
        """
        rows: list[_Row] = []
        emits: list[tuple[int, int, int, int]] = []
        final: dict[int, tuple[int, float, int, int]] = {}
        max_gap = self.max_gap_s if self.max_gap_s > 0 else math.inf
        wm_ts_all, wm_off_all = st["wm_ts"].tolist(), st["wm_offset"].tolist()
        wm_part_all, steps_all = st["partition"].tolist(), st["steps"].tolist()
        has_fc_all = (st["flags"] & FLAG_FORECAST).astype(bool).tolist()
        events, sources, spans = batch.events, batch.sources, batch.spans
        poisoned = set(np.flatnonzero(st["wm_ts"] > batch.now + self.max_future_s).tolist())
        if poisoned:
            self._reset_future(batch, sorted(poisoned), wm_ts_all, out)
        for ent, indexes in enumerate(batch.groups.values()):
            wm, wm_off, wm_part = wm_ts_all[ent], wm_off_all[ent], wm_part_all[ent]
            fresh = ent in poisoned
            row: _Row | None = None
            for i in indexes:
                e = events[i]
                part, off = sources[i]
                lo, hi = spans[i]
                n = hi - lo
                ts = e.ts
                if n == 1:
                    skip = 1 if ts <= wm else 0
                elif ts > wm:  # the common case: the whole chunk is new
                    skip = 0
                else:
                    skip = int(np.searchsorted(ts + e.period * np.arange(n), wm, side="right"))
                if skip:
                    reason = "duplicate" if part == wm_part and off <= wm_off else "late"
                    out.skipped[reason] += skip
                    if skip == n:
                        if reason == "duplicate":
                            out.replayed += 1
                        else:
                            self._late(batch, e, n, wm, wm_off, part, off, out)
                        continue
                # A chunk's sample k is at ts + period * k (the float numpy's arange gives too).
                # From the first applied sample on, the rest go in at once when no gap can lie
                # among them: when the last one is within max_gap of the current one.
                for k in range(skip, n):
                    t = ts if n == 1 else ts + e.period * k
                    if t - wm > max_gap and wm != -math.inf:
                        out.resets["gap"] += 1
                        row = _Row(ent, fresh=True, prev=False, steps=0)
                        rows.append(row)
                    elif row is None:
                        row = (_Row(ent, fresh=True, prev=False, steps=0) if fresh else
                               _Row(ent, fresh=False, prev=has_fc_all[ent], steps=steps_all[ent]))
                        rows.append(row)
                    if k == skip:
                        emits.append((i, k, len(rows) - 1, len(row.samples)))
                    if n > 1 and (last := ts + e.period * (n - 1)) - t <= max_gap:
                        row.samples.extend(range(lo + k, hi))
                        wm = last
                        break
                    row.samples.append(lo + k)
                    wm = t
                wm_off, wm_part = off, part
            if row is not None:
                final[ent] = (len(rows) - 1, wm, wm_part, wm_off)
        return rows, emits, final

    def _reset_future(self, batch: Batch, poisoned: list[int], wm_ts: list[float],
                      out: Outcome) -> None:
        """Watermarks stored far ahead of the clock (by an event from before the ``future_ts``
        check) would skip every correct event as late: those entities restart from zero."""
        ids = batch.entity_ids
        first = wm_ts[poisoned[0]]
        log.warning("%d entit%s had a stored watermark more than %g s ahead of the worker's "
                    "clock %s (e.g. %r at %s); %s from zero (resets_total{reason="
                    "\"future_watermark\"})", len(poisoned), "y" if len(poisoned) == 1 else "ies",
                    self.max_future_s, _iso(batch.now), ids[poisoned[0]][:80], _iso(first),
                    "it restarts" if len(poisoned) == 1 else "they restart")
        for ent in poisoned:
            wm_ts[ent] = -math.inf
        out.resets["future_watermark"] += len(poisoned)

    def _late(self, batch: Batch, e: Event, n: int, wm: float, wm_off: int, part: int, off: int,
              out: Outcome) -> None:
        """Dead-letter an event whose samples are all at or before its entity's watermark and
        that is not a replay: skipping it silently would make it vanish."""
        m = batch.message(part, off)
        last = e.ts + e.period * (n - 1)
        what = "its last sample's ts" if e.chunk else "ts"
        detail = (f"{what}: expected after the entity's watermark {_iso(wm)} ({wm:.3f}), the "
                  f"last time applied, got {_iso(last)} ({last:.3f}); offset {off} is not a "
                  f"replay (partition {part}'s last applied offset for it is {wm_off})")
        record = deadletter_record(RecordError("late", detail), m.value, m.topic, part, off)
        out.deadletters.append((m.key, orjson.dumps(record)))
        out.late += 1

    def _run(self, batch: Batch, rows: list[_Row], emits: list[tuple[int, int, int, int]],
             final: dict[int, tuple[int, float, int, int]], st: np.ndarray,
             out: Outcome) -> None:
        model, f = self.model, self.n_features
        lengths = np.fromiter((len(r.samples) for r in rows), dtype=np.int64, count=len(rows))
        n_rows, longest = len(rows), int(lengths.max())
        row_of = np.repeat(np.arange(n_rows), lengths)
        pos_of = np.arange(row_of.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        sample_of = np.fromiter(itertools.chain.from_iterable(r.samples for r in rows),
                                dtype=np.int64, count=row_of.size)
        x = batch.scaled[sample_of]  # [N, F] float32, in row order
        seq = np.zeros((n_rows, longest, f), dtype=np.float32)
        seq[row_of, pos_of] = x
        entity_of_row = np.fromiter((r.entity for r in rows), dtype=np.int64, count=n_rows)
        fresh = np.fromiter((r.fresh for r in rows), dtype=bool, count=n_rows)
        h0 = st["state"][entity_of_row].astype(np.float32)
        h0[fresh] = 0.0
        began = time.perf_counter()
        with torch.inference_mode():
            state0 = model.unpack_state(torch.from_numpy(h0))
            ragged = bool((lengths != longest).any())
            y, state = model(torch.from_numpy(seq), state0,
                             torch.from_numpy(lengths) if ragged else None)
            packed = model.pack_state(state).numpy()
            y = y.numpy()  # [R, T, H, F] scaled
        out.step_seconds = time.perf_counter() - began
        forecasts = y[row_of, pos_of]  # [N, H, F]
        prev = np.full((row_of.size, f), np.nan, dtype=np.float64)
        later = pos_of > 0
        prev[later] = y[row_of[later], pos_of[later] - 1, 0]
        starts = np.flatnonzero(~later)
        has_prev = np.fromiter((r.prev for r in rows), dtype=bool, count=n_rows)
        starts = starts[has_prev[row_of[starts]]]
        prev[starts] = st["forecast"][entity_of_row[row_of[starts]]]
        scores = score(x.astype(np.float64) - prev, self.residual_scale)
        scale_state = None
        if self.entity_scale is not None:
            scores, scale_state = self._entity_scaled(scores, row_of, pos_of, n_rows, longest,
                                                      entity_of_row, fresh, st)
        sensor_rows = None
        if self.sensor is not None:
            sensor_rows = st["sensor"][entity_of_row]  # a copy: fancy indexing
            sensor_rows[fresh] = 0.0
            runs = self.sensor.run_rows(sensor_rows, [seq[r, :n] for r, n in
                                                      enumerate(lengths.tolist())])
            scores = np.concatenate([run.scores for run in runs])
        steps0 = np.fromiter((r.steps for r in rows), dtype=np.int64, count=n_rows)
        warm = steps0[row_of] + pos_of >= self.warmup_steps
        flags = (scores > self.threshold) & warm
        user = self.artifact.unscale(forecasts)
        out.samples = int(row_of.size)
        self._emit(batch, rows, emits, lengths, user, scores, flags, out)
        beat_rows = None
        if self.beats is not None:
            beat_rows = self.beats.step(batch, entity_of_row, fresh, steps0, lengths, sample_of,
                                        scores, st["beat"], out)
        self._save(batch, rows, final, lengths, packed, y, out, scale_state, beat_rows,
                   sensor_rows)

    def _entity_scaled(self, scores: np.ndarray, row_of: np.ndarray, pos_of: np.ndarray,
                       n_rows: int, longest: int, entity_of_row: np.ndarray, fresh: np.ndarray,
                       st: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Scores divided by each entity's running typical peak, and every row's (p, μ) after
        it; a row starts from its entity's stored pair, or ``0``, ``μ_0`` after a reset."""
        es = self.entity_scale
        assert es is not None
        grid = np.full((n_rows, longest), np.nan)
        grid[row_of, pos_of] = scores
        peak = st["peak"][entity_of_row].astype(np.float64)
        log_mu = st["log_mu"][entity_of_row].astype(np.float64)
        peak[fresh], log_mu[fresh] = 0.0, es.mu0
        done = es.apply(grid, self.period_s, peak, log_mu)
        return done.scaled[row_of, pos_of], (done.peak, done.log_mu)

    def _emit(self, batch: Batch, rows: list[_Row], emits: list[tuple[int, int, int, int]],
              lengths: np.ndarray, user: np.ndarray, scores: np.ndarray, flags: np.ndarray,
              out: Outcome) -> None:
        row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]).tolist()
        score_list = scores.tolist()
        for j in np.flatnonzero(np.isnan(scores)).tolist():  # no forecast yet: null
            score_list[j] = None
        flag_list = flags.tolist()
        thr, model_id, dumps, opt = self.threshold, self.model_id, orjson.dumps, _DUMPS_OPTIONS
        spans, events = batch.spans, batch.events
        for i, k, r, p in emits:
            e = events[i]
            key = e.entity_id.encode()
            lo, hi = spans[i]
            a = row_start[r] + p  # first applied sample in the flat arrays
            if not e.chunk:
                record = prediction_record(e.entity_id, e.ts, user[a], score_list[a],
                                           flag_list[a], thr, model_id)
                out.predictions.append((key, dumps(record, option=opt)))
                out.last_ts.append(e.ts)
                if flag_list[a]:
                    out.anomalies.append((key, out.predictions[-1][1]))
                continue
            # A chunk's applied samples are contiguous in one row (slices of the flat arrays)
            # unless a gap reset split it.
            count = hi - lo - k
            if count <= len(rows[r].samples) - p:
                forecast, scores_of, flags_of = (user[a:a + count], score_list[a:a + count],
                                                 flag_list[a:a + count])
            else:
                idx = self._chunk_indexes(rows, r, p, count, row_start)
                forecast, scores_of, flags_of = (user[idx], [score_list[j] for j in idx],
                                                 [flag_list[j] for j in idx])
            record = prediction_record(e.entity_id, e.ts + e.period * k, forecast, scores_of,
                                       flags_of, thr, model_id, e.period, k)
            out.predictions.append((key, dumps(record, option=opt)))
            out.last_ts.append(e.ts + e.period * (hi - lo - 1))
            if True in flags_of:
                for n, flag in enumerate(flags_of):
                    if flag:
                        single = prediction_record(e.entity_id, e.ts + e.period * (k + n),
                                                   forecast[n], scores_of[n], True, thr, model_id)
                        out.anomalies.append((key, dumps(single, option=opt)))

    @staticmethod
    def _chunk_indexes(rows: list[_Row], r: int, p: int, count: int,
                       row_start: list[int]) -> list[int]:
        idx: list[int] = []
        while True:
            take = min(count - len(idx), len(rows[r].samples) - p)
            idx.extend(range(row_start[r] + p, row_start[r] + p + take))
            if len(idx) == count:
                return idx
            r, p = r + 1, 0  # the chunk went on in the next row after a gap reset

    def _save(self, batch: Batch, rows: list[_Row],
              final: dict[int, tuple[int, float, int, int]], lengths: np.ndarray,
              packed: np.ndarray, y: np.ndarray, out: Outcome,
              scale_state: tuple[np.ndarray, np.ndarray] | None = None,
              beat_rows: np.ndarray | None = None,
              sensor_rows: np.ndarray | None = None) -> None:
        ents = list(final)
        last = np.array(list(final.values()), dtype=np.float64).reshape(len(ents), 4)
        rs = last[:, 0].astype(np.int64)
        new = self.codec.empty(len(ents))
        new["flags"] = FLAG_FORECAST
        new["state"] = packed[rs]
        new["forecast"] = y[rs, lengths[rs] - 1, 0]
        if scale_state is not None:
            new["peak"], new["log_mu"] = scale_state[0][rs], scale_state[1][rs]
        if beat_rows is not None:
            new["beat"] = beat_rows[rs]
        if sensor_rows is not None:
            new["sensor"] = sensor_rows[rs]
        steps0 = np.fromiter((rows[r].steps for r in rs.tolist()), dtype=np.int64,
                             count=len(ents))
        new["steps"] = np.minimum(steps0 + lengths[rs], _STEPS_MAX)
        new["wm_ts"] = last[:, 1]
        new["partition"] = last[:, 2]
        new["wm_offset"] = [v[3] for v in final.values()]  # exact int64, not via float64
        ids = batch.entity_ids
        out.states = {ids[ent]: blob
                      for ent, blob in zip(ents, self.codec.encode(new), strict=True)}


def _iso(ts: float) -> str:
    """``ts`` (seconds since 1970) as ISO-8601 UTC to the millisecond, for dead-letter details."""
    if not -62135596800.0 <= ts < TS_MAX:
        return repr(ts)
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00",
                                                                                      "Z")
