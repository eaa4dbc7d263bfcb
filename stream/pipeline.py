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

if TYPE_CHECKING:
    from stream.engine import Engine, Outcome, RawMessage
    from stream.metrics import Metrics
    from stream.state import StateStore

__all__ = ["Pipeline", "Send", "Topics"]

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


class Pipeline:
    """Runs batches through an :class:`~stream.engine.Engine` with a store and a producer."""

    def __init__(self, engine: Engine, store: StateStore, send: Send, topics: Topics,
                 metrics: Metrics | None = None,
                 send_errors: tuple[type[BaseException], ...] = (),
                 backoff: tuple[float, float] = (0.05, 2.0)) -> None:
        self.engine, self.store, self.send, self.topics = engine, store, send, topics
        self.metrics = metrics
        self.send_errors = send_errors
        self.backoff = backoff
        self.positions: dict[int, int | None] = {}

    async def process(self, messages: Sequence[RawMessage]) -> Outcome:
        """Process one batch; returns only once predictions are acked and states saved."""
        began = time.perf_counter()
        batch = self.engine.prepare(list(messages))
        ids = batch.entity_ids
        sources = batch.sources
        part_of = {e: sources[idx[-1]][0] for e, idx in batch.groups.items()}
        checkpoints = self._checkpoints(messages)
        expected = {p: want for p, (want, _) in checkpoints.items() if want != UNCHECKED}
        t = self._stage("prepare", began)
        try:
            blobs = await self._until_done(
                "Redis load",
                lambda i: self.store.load_checked(i, list(part_of.values()), expected), ids,
                errors=self.store.transient_errors)
        except CheckpointMoved as ex:
            self._moved(ex)
            raise
        load_s = time.perf_counter() - t
        t = self._stage("state_load", t)
        outcome = self.engine.apply(batch, blobs)
        t = self._stage("model", t)
        if self.metrics is not None:
            self.metrics.on_batch(batch, outcome)
        topics = self.topics
        records: list[tuple[str, bytes | None, bytes]] = [
            (topics.predictions, k, v) for k, v in outcome.predictions]
        records += [(topics.beats, k, v) for k, v in outcome.beats]
        records += [(topics.anomalies, k, v) for k, v in outcome.anomalies]
        records += [(topics.deadletter, k, v) for k, v in outcome.deadletters]
        if records:
            await self._until_done("Kafka produce", self.send, records, errors=self.send_errors)
            self._stage("produce_ack", t)
        acked_at = time.time()
        t = time.perf_counter()
        if outcome.states or checkpoints:
            try:
                await self._until_done(
                    "Redis save", lambda s: self.store.save(s, part_of, checkpoints),
                    outcome.states, errors=self.store.transient_errors)
            except CheckpointMoved as ex:
                for p in ex.saved:
                    self.positions[p] = checkpoints[p][1]
                self._moved(ex)
                raise
            for p, (_, write) in checkpoints.items():
                self.positions[p] = write
            self._stage("state_save", t)
        save_s = time.perf_counter() - t
        if self.metrics is not None:
            self.metrics.on_delivered(len(messages), time.perf_counter() - began, acked_at,
                                      outcome.last_ts, load_s if ids else None,
                                      save_s if outcome.states else None)
        return outcome

    def _stage(self, stage: str, since: float) -> float:
        """Record ``stage`` as having run from ``since`` until now; returns now, where the next
        stage starts (one clock read per stage boundary)."""
        now = time.perf_counter()
        if self.metrics is not None:
            self.metrics.on_stage(stage, now - since)
        return now

    def _moved(self, ex: CheckpointMoved) -> None:
        """A refused load or save: one line per partition, counted; expect what is stored."""
        for p in sorted(ex.stored):
            self.positions[p] = ex.stored[p]
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
        positions = self.positions
        return {p: (positions.get(p, UNCHECKED), o + 1)
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
