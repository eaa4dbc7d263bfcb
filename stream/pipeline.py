"""One micro-batch end to end, in the order that makes a crash harmless, independent of Faust.

    prepare → load states (1 round trip) → apply (1 network call, and the beat stage's)
            → produce predictions, beats, anomalies, dead letters and AWAIT acks
            → save states (1 round trip, with watermarks) → return (the caller then acks offsets)

Why this order: if the process dies before the save, the states still hold the previous
watermark, the offsets were not committed, and the replayed messages are recomputed from the same
states into the same predictions. If it dies after the save but before the offsets are committed,
the replayed samples are at or below the saved watermark and are skipped (counted as duplicates),
so no sample is applied twice and none is lost; their predictions were acknowledged before the
save, so none is missing either. Beat records go the same way: a beat decided by a sample whose
state was never saved is decided again, identically, when that sample is replayed.

A store or broker that is unreachable is waited for with capped exponential backoff, inside the
batch: nothing is returned — hence nothing acknowledged or committed — until every step succeeds.
Any other error propagates (a bug must stop the worker, not be skipped over).

Where consumption resumes: the save also writes, for each partition of the batch, the next offset
to read, in the same atomic call as the states (:mod:`stream.state`), as a compare-and-set on the
checkpoint this pipeline last read or wrote (:attr:`Pipeline.positions`, set by the worker when it
seeks an assigned partition). A refused save (Redis lost acknowledged writes, or the partition
now belongs to another worker) raises :class:`~stream.state.CheckpointMoved` after the other
partitions are saved: the caller acks none of the refused partitions' offsets and seeks them
back to the stored checkpoints (:func:`stream.fastpath.run_batches`), so those events are read
and applied again from the restored states. The load reads the same checkpoints in its round trip
and refuses the same way before anything is computed or produced, so a rollback that happened
between two batches costs no wrong prediction; one between a batch's load and its save produces
that batch's predictions from the rolled-back states, and the replay after the seek produces them
again, right (the later record wins). Partitions missing from ``positions`` (a pipeline
driven without a consumer, as in the benchmark) write their checkpoint without comparing.

Overlap: a caller may compute batch N+1 (:meth:`Pipeline.compute`: prepare, states, apply) while
batch N is still being delivered (:meth:`Pipeline.deliver`: produce and await acks, then save),
as long as deliveries run strictly in order (:func:`stream.fastpath.run_batches`, at most
``SEQSTREAM_INFLIGHT`` batches computed and not delivered). N+1 takes the states N computed from
the :class:`~stream.state_cache.StateCache`, where they stay pinned until N's save is done;
states not there are loaded from Redis. N+1's save expects the checkpoint N writes
(:attr:`Pipeline.planned`), so the compare-and-set chain is the serial one. Offsets are acked only
after a batch's own delivery, so everything above holds per batch. After a refusal the cache is
cleared and the batches computed after the refused one are dropped unacked before they produce
anything; the seek replays them from Redis's states. The checkpoint check at the
load is made for partitions with no batch in flight: for the others the states come from the
cache or from saves this pipeline already made, and the save's compare-and-set checks. A batch
whose states all come from the cache makes no load round trip: those states continue exactly
the records the consumer reads next (the cache is cleared at every seek), so its predictions are
right even if Redis rolled back meanwhile; its save is then refused and the partition replayed.

The caller supplies ``send``: an async callable taking ``[(topic, key, value), ...]`` that returns
once Kafka acknowledged every record (the Faust worker passes its producer; a benchmark may pass
a plain aiokafka producer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from stream.state import UNCHECKED, CheckpointMoved
from stream.state_cache import StateCache

if TYPE_CHECKING:
    from stream.engine import Batch, Engine, Outcome, RawMessage
    from stream.metrics import Metrics
    from stream.state import StateStore

__all__ = ["Computed", "Pipeline", "Send", "Topics"]

log = logging.getLogger(__name__)

Send = Callable[[list[tuple[str, bytes | None, bytes]]], Awaitable[None]]
T = TypeVar("T")


@dataclass(frozen=True)
class Topics:
    """Where the four kinds of output records go."""

    predictions: str
    anomalies: str
    deadletter: str
    beats: str


@dataclass
class Computed:
    """A batch computed and not yet delivered: what :meth:`Pipeline.deliver` sends and saves."""

    messages: int
    batch: Batch  # counted by the metrics once its records are produced, not when computed
    outcome: Outcome
    part_of: dict[str, int]  # entity → its partition
    checkpoints: dict[int, tuple[int | None, int]]
    seq: int  # the pipeline's batch number: the cache pins this batch's states until it is saved
    began: float
    load_s: float | None  # None: every state came from the cache, no round trip


class Pipeline:
    """Runs batches through an :class:`~stream.engine.Engine` with a store and a producer.

    :meth:`process` is one batch end to end; a caller that overlaps batches (the worker's
    :func:`stream.fastpath.run_batches`) calls :meth:`compute` for the next batch while earlier
    ones are still in :meth:`deliver`, delivering them strictly in order. ``state_cache`` bounds
    the :class:`~stream.state_cache.StateCache` that carries states from one batch to the next
    (0: only those whose save is in flight, so each batch waits for the previous one's save)."""

    def __init__(self, engine: Engine, store: StateStore, send: Send, topics: Topics,
                 metrics: Metrics | None = None,
                 send_errors: tuple[type[BaseException], ...] = (),
                 backoff: tuple[float, float] = (0.05, 2.0), state_cache: int = 0) -> None:
        self.engine, self.store, self.send, self.topics = engine, store, send, topics
        self.metrics = metrics
        self.send_errors = send_errors
        self.backoff = backoff
        self.positions: dict[int, int | None] = {}  # the checkpoint this pipeline last saved
        self.planned: dict[int, int] = {}  # the checkpoint the last computed batch will write
        self.cache = StateCache(state_cache)
        self._in_flight: dict[int, int] = {}  # partition → batches computed, not delivered
        self._seq = 0

    async def process(self, messages: Sequence[RawMessage]) -> Outcome:
        """Process one batch; returns only once predictions are acked and states saved."""
        work = await self.compute(messages)
        if work is None:  # only a seek clears the cache, and none runs inside this call
            raise RuntimeError("pipeline: the state cache was cleared while a batch loaded")
        return await self.deliver(work)

    async def compute(self, messages: Sequence[RawMessage]) -> Computed | None:
        """Prepare, take the states (cache, then one Redis round trip for the misses) and apply;
        the new states go into the cache at once, pinned until :meth:`deliver` saves them.

        ``None``: the cache was cleared (a seek) while the states loaded, so the batch must be
        dropped unacked. A refused checkpoint check raises :class:`CheckpointMoved`; it is made
        only for partitions with no batch in flight (for the others the cache holds every state
        written since the last save, and the save's compare-and-set checks)."""
        began = time.perf_counter()
        batch = self.engine.prepare(list(messages))
        ids = batch.entity_ids
        sources = batch.sources
        part_of = {e: sources[idx[-1]][0] for e, idx in batch.groups.items()}
        checkpoints = self._checkpoints(messages)
        t = self._stage("prepare", began)
        cache = self.cache
        generation = cache.generation
        keys = [(part_of[e], e) for e in ids]
        blobs = cache.get(keys)
        misses = [i for i, b in enumerate(blobs) if b is None]
        load_s = None
        loaded: dict[tuple[int, str], bytes] = {}
        if misses:
            expected = {p: want for p, (want, _) in checkpoints.items()
                        if want != UNCHECKED and not self._in_flight.get(p)}
            t_load = time.perf_counter()
            try:
                got = await self._until_done(
                    "Redis load", lambda i: self.store.load_checked(
                        i, [keys[m][0] for m in misses], expected), [ids[m] for m in misses],
                    errors=self.store.transient_errors)
            except CheckpointMoved as ex:
                self._moved(ex)
                raise
            load_s = time.perf_counter() - t_load
            if cache.generation != generation:
                return None
            for m, blob in zip(misses, got, strict=True):
                blobs[m] = blob
                if blob is not None:
                    loaded[keys[m]] = blob
        t = self._stage("state_load", t)
        outcome = self.engine.apply(batch, blobs)
        self._stage("model", t)
        self._seq += 1
        evicted = cache.put(loaded)
        evicted += cache.put({(part_of[e], e): s for e, s in outcome.states.items()}, self._seq)
        for p, (_, write) in checkpoints.items():
            # the next batch's save expects this write, checked or not (a partition without a
            # position writes unchecked, and the one after it must chain as it would serially)
            self._in_flight[p] = self._in_flight.get(p, 0) + 1
            self.planned[p] = write
        if self.metrics is not None:
            self.metrics.on_state_cache(len(ids) - len(misses), len(misses), evicted,
                                        len(cache))
        return Computed(len(messages), batch, outcome, part_of, checkpoints, self._seq, began,
                        load_s)

    async def deliver(self, work: Computed) -> Outcome:
        """Produce ``work``'s records and await their acks, then save its states and
        checkpoints; returns only once both are done (the caller then acks the offsets)."""
        t = time.perf_counter()
        outcome, checkpoints = work.outcome, work.checkpoints
        topics = self.topics
        records: list[tuple[str, bytes | None, bytes]] = [
            (topics.predictions, k, v) for k, v in outcome.predictions]
        records += [(topics.beats, k, v) for k, v in outcome.beats]
        records += [(topics.anomalies, k, v) for k, v in outcome.anomalies]
        records += [(topics.deadletter, k, v) for k, v in outcome.deadletters]
        if records:
            await self._until_done("Kafka produce", self.send, records, errors=self.send_errors)
            self._stage("produce_ack", t)
        if self.metrics is not None:  # produced: a batch dropped before this is not counted
            self.metrics.on_batch(work.batch, outcome)
        acked_at = time.time()
        t = time.perf_counter()
        if outcome.states or checkpoints:
            try:
                await self._until_done(
                    "Redis save", lambda s: self.store.save(s, work.part_of, checkpoints),
                    outcome.states, errors=self.store.transient_errors)
            except CheckpointMoved as ex:
                for p in ex.saved:
                    self.positions[p] = checkpoints[p][1]
                self._moved(ex)
                self._settle(work)
                raise
            for p, (_, write) in checkpoints.items():
                self.positions[p] = write
            self._stage("state_save", t)
        save_s = time.perf_counter() - t
        self._settle(work)
        evicted = self.cache.saved(work.seq)
        if self.metrics is not None:
            self.metrics.on_delivered(work.messages, time.perf_counter() - work.began, acked_at,
                                      outcome.last_ts, work.load_s,
                                      save_s if outcome.states else None)
            self.metrics.on_state_cache(0, 0, evicted, len(self.cache))
        return outcome

    def abandon(self, work: Computed) -> None:
        """``work`` will not be delivered (a refusal before it): its partitions stop counting it
        in flight; its states left the cache with the refusal."""
        self._settle(work)

    def backlogged(self) -> bool:
        """Whether the next batch must wait for a delivery: the cache is over its bound with
        states whose saves are in flight (every one pinned)."""
        return self.cache.full

    def _settle(self, work: Computed) -> None:
        in_flight = self._in_flight
        for p in work.checkpoints:
            left = in_flight.get(p, 0) - 1
            if left > 0:
                in_flight[p] = left
            else:
                in_flight.pop(p, None)
                self.planned.pop(p, None)

    def _stage(self, stage: str, since: float) -> float:
        """Record ``stage`` as having run from ``since`` until now; returns now, where the next
        stage starts (one clock read per stage boundary)."""
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.on_stage(stage, now - since)
        return now

    def clear_cache(self) -> None:
        """Forget every cached state (a seek, a revocation, a refusal): Redis is the source."""
        self.cache.clear()
        if self.metrics is not None:
            self.metrics.on_state_cache(0, 0, 0, 0)

    def _moved(self, ex: CheckpointMoved) -> None:
        """A refused load or save: one line per partition, counted; expect what is stored. The
        cache is cleared: its states continue the refused ones, and the caller seeks back."""
        self.clear_cache()
        for p in sorted(ex.stored):
            self.positions[p] = ex.stored[p]
            self.planned.pop(p, None)
            log.warning("partition %d: stored checkpoint %s, this worker last wrote %s (Redis "
                        "lost acknowledged writes, or another worker owns the partition): its "
                        "part of the batch is dropped unacked and the partition sought back", p,
                        ex.stored[p], ex.expected[p])
        if self.metrics is not None:
            self.metrics.on_rewind(len(ex.stored))

    def _checkpoints(self, messages: Sequence[RawMessage]) -> dict[int, tuple[int | None, int]]:
        """Each partition's (expected stored checkpoint, next offset to read after the batch)."""
        last: dict[int, int] = {}
        for m in messages:
            if m.offset >= last.get(m.partition, -1):
                last[m.partition] = m.offset
        positions, planned = self.positions, self.planned
        return {p: (planned[p] if p in planned else positions.get(p, UNCHECKED), o + 1)
                for p, o in last.items()}

    async def _until_done(self, what: str, step: Callable[[Any], Awaitable[T]], arg: Any,
                          errors: tuple[type[BaseException], ...]) -> T:
        delay, cap = self.backoff
        failures = 0
        while True:
            try:
                result = await step(arg)
            except errors as ex:
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.warning("%s failed (%s: %s); retrying every <= %.1f s without "
                                "committing (attempt %d)", what, type(ex).__name__, ex, cap,
                                failures)
                await asyncio.sleep(delay)
                delay = min(delay * 2, cap)
                continue
            if failures:
                log.warning("%s succeeded after %d failed attempts", what, failures)
            return result
