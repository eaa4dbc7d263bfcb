"""Batches of raw Kafka records for a faust app, taken below faust's per-event path.

Why: in faust every message goes, one at a time, through ``Consumer.getmany`` (a
``ConsumerMessage`` per record), ``_drain_messages`` (``wait_first`` = two tasks per message),
the conductor (flow-control and producer-buffer waits, ``Event`` decoding, a queue put), and the
stream iterator (``sleep(0)``, sensors, processors, a per-event ack). ``stream.take(N, within)``
only regroups events *after* all of that, so a batched model and one Redis round trip per batch
cannot make a faust agent faster than that per-event path: in ``seqstream bench``'s profile of
the worker, faust and the event loop take about three quarters of its busy time (the README's
Benchmarks section).

How: :class:`BatchConsumer` is faust's own aiokafka consumer with one method replaced,
``_drain_messages``. It still gets its records from faust's consumer thread (the same
``AIOKafkaConsumer``, consumer group, rebalance listener, partition assignor and pause/resume
flow control), but for a topic claimed by a :class:`BatchSource` it hands each fetched
``{partition: [ConsumerRecord, ...]}`` map to the source as ONE :class:`RecordBatch` of
aiokafka ``ConsumerRecord`` objects (which have the ``value, key, topic, partition, offset``
that :class:`stream.engine.RawMessage` has, so the engine takes them as they are). Records of
any other topic go through faust's normal per-message path unchanged.

Batch sizes adapt to the lag (:func:`coalesces`): a fetch that arrives while an earlier batch
still waits for the busy worker is appended to that waiting batch, up to ``max_batch`` records,
so a worker that is behind takes everything fetched meanwhile in one batch (one load, one model
call, one produce and one save for all of it), and a caught-up worker gets each fetch alone as
soon as it arrives. Nothing waits for a batch to fill.

Offsets and acks keep faust's semantics, in faust's own structures:

- a batch registers one in-flight marker in ``consumer._unacked_messages`` when it is fetched,
  so a rebalance (``on_partitions_revoked`` → ``wait_empty``) and a shutdown wait until it is
  done or dropped, exactly as they wait for an agent's unacked events;
- :meth:`BatchSource.done` — to be called only after the batch's outputs are acknowledged by
  Kafka and its states saved — adds every offset of the batch to ``consumer._acked`` (the list
  faust's commit loop turns into the next committable offset, gaps and all) and releases the
  marker; faust's ``_commit_handler`` then commits every ``broker_commit_interval`` (and every
  ``broker_commit_every`` acks), and commits are still discarded for revoked partitions;
- a batch fetched in an older consumer generation, or while flow is stopped for a rebalance, is
  dropped without acking (its records are fetched again from the committed offset), as faust's
  stream iterator skips such events; holes in the offsets (compaction, transaction markers) are
  recorded as faust's gaps.

So a crash replays at most the batches not yet acked: the at-least-once contract the worker's
watermark already makes idempotent.

Where a claimed partition starts is the source's ``positioner``'s to say when it has one: after
faust seeks every partition to its committed offset (``perform_seek``, on each assignment),
:class:`BatchConsumer` asks the positioner for each claimed partition's start offset (the worker
reads the checkpoints stored with the states in Redis) and seeks there (:data:`EARLIEST`: the
earliest retained offset). :meth:`BatchSource.rewind` does the same mid-stream after a refused
state save. A seek drops the batches queued before it (an ``epoch`` stamped on each batch), and
until a fetch of a sought partition starts exactly at the target, its fetched records are dropped
(they come from the old position, which the seek reset), so records are never applied out of
order; from faust's own seek to the positioner's the claimed partitions are held (``HOLD``).

Adoption: call :func:`install` with the app and the events topic before the app starts, then
consume the source in an ``app.task``; see :func:`run_batches`.

>>> batch = RecordBatch(["r1", "r2"], {("events", 0): [7, 8]}, 0)
>>> batch.size, batch.marker.acked, batch.last_offsets()
(2, False, {('events', 0): 8})
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import tuples as faust_tuples
from mode.utils.futures import notify

from stream.errors import ConfigError
from stream.state import CheckpointMoved

if TYPE_CHECKING:
    import faust
    from faust.types import TP

__all__ = ["EARLIEST", "BatchConsumer", "BatchSource", "BatchTransport", "InFlight", "RecordBatch",
           "Stages", "coalesces", "install", "run_batches"]


W = TypeVar("W")

EARLIEST = -2
"""A positioner's answer for "the earliest offset the topic still retains"."""

HOLD = -1  # ``BatchSource.expect`` while the positioner decides: every fetched record dropped

Positioner = Callable[[dict["TP", "int | None"]], Awaitable[dict["TP", "int | None"]]]
"""``{tp: Kafka committed offset or None}`` → ``{tp: offset to start at, or None to stay}``."""


# faust's lock around its ack bookkeeping (``_acked``, ``_acked_index``, ``_n_acked``), where the
# installed faust has one: the batch acks below take it as faust's own ``Consumer.ack`` does
ACK_LOCK: Any = getattr(faust_tuples, "ack_lock", None) or contextlib.nullcontext()


class InFlight:
    """Stands in ``consumer._unacked_messages`` for one batch (faust waits on that set)."""

    __slots__ = ("__weakref__", "acked", "refcount", "size")

    def __init__(self, size: int) -> None:
        self.acked = False
        self.refcount = 1
        self.size = size

    def __repr__(self) -> str:
        return f"<batch of {self.size} records, {'done' if self.acked else 'in flight'}>"


class RecordBatch:
    """Records of one fetch, in partition order; ``offsets`` per partition for the acks;
    ``fetched`` when it was made (``time.perf_counter``), for the queue wait it then has."""

    __slots__ = ("epoch", "fetched", "generation", "marker", "offsets", "records")

    def __init__(self, records: list[Any], offsets: dict[TP, list[int]], generation: int,
                 epoch: int = 0) -> None:
        self.records = records
        self.offsets = offsets
        self.generation = generation
        self.epoch = epoch
        self.marker = InFlight(len(records))
        self.fetched = time.perf_counter()

    @property
    def size(self) -> int:
        return len(self.records)

    def absorb(self, other: RecordBatch) -> None:
        """Append ``other``'s records after this batch's (per-partition order kept); only for a
        batch still waiting in the queue, whose marker then stands for both."""
        self.records.extend(other.records)
        for tp, offsets in other.offsets.items():
            self.offsets.setdefault(tp, []).extend(offsets)
        self.marker.size += other.size

    def last_offsets(self) -> dict[TP, int]:
        """The highest offset of each partition in the batch (for lag gauges)."""
        return {tp: offsets[-1] for tp, offsets in self.offsets.items()}


def coalesces(waiting: int, fetched: int, ceiling: int) -> bool:
    """Whether ``fetched`` records join the batch of ``waiting`` records that the worker has not
    taken yet (where the fast path decides batch sizes, with the split of a fetch at ``ceiling``).

    A batch waits only while the worker is busy with the one before, so what waits is the lag
    the consumer already knows: behind, every fetch joins it, up to ``ceiling`` records (large
    batches, few per-batch round trips: throughput); caught up, nothing waits, and a fetch goes
    to the worker alone, at once (small batches: latency). No timer is involved.

    >>> coalesces(0, 5, 1000), coalesces(40, 5, 1000), coalesces(998, 5, 1000)
    (False, True, False)
    """
    return waiting > 0 and waiting + fetched <= ceiling


class BatchSource:
    """Batches of one topic's records, bounded to ``depth`` waiting batches (back-pressure)."""

    def __init__(self, app: faust.App, topic: str, max_batch: int = 1000, depth: int = 1) -> None:
        if max_batch < 1 or depth < 1:
            raise ConfigError(f"batch source: expected max_batch >= 1 and depth >= 1, got "
                              f"{max_batch} and {depth}")
        self.app, self.topic, self.max_batch = app, topic, max_batch
        self._queue: asyncio.Queue[RecordBatch] | None = None
        self.depth = depth
        self.positioner: Positioner | None = None
        self.epoch = 0  # bumped by every seek this source asks for: older batches are stale
        self.expect: dict[TP, int] = {}  # sought partitions: where their next fetch must start

    @property
    def queue(self) -> asyncio.Queue[RecordBatch]:
        if self._queue is None:  # created on the app's loop, at first use
            self._queue = asyncio.Queue(self.depth)
        return self._queue

    def _stale(self, batch: RecordBatch) -> bool:
        consumer = self.app.consumer
        return (not consumer.flow_active or batch.epoch != self.epoch
                or batch.generation != self.app.consumer_generation_id)

    async def __aiter__(self) -> AsyncIterator[RecordBatch]:
        queue = self.queue
        while True:
            batch = await queue.get()
            if self._stale(batch):
                self.drop(batch)
                continue
            yield batch

    def done(self, batch: RecordBatch, partitions: frozenset[int] | None = None) -> None:
        """Mark every offset of ``batch`` acked (call after outputs are acknowledged and states
        saved), or only those of ``partitions``; faust's commit loop commits them."""
        with ACK_LOCK:
            consumer = self.app.consumer
            committed_of, acked_of, index_of = (consumer._committed_offset, consumer._acked,
                                                consumer._acked_index)
            n = 0
            for tp, offsets in batch.offsets.items():
                if partitions is not None and tp.partition not in partitions:
                    continue
                committed = committed_of[tp]
                if committed is not None and offsets[0] < committed:
                    offsets = [o for o in offsets if o >= committed]
                index = index_of[tp]
                if not index.isdisjoint(offsets):
                    offsets = [o for o in offsets if o not in index]
                if offsets:
                    index.update(offsets)
                    acked_of[tp].extend(offsets)
                    n += len(offsets)
            consumer._n_acked += n
            self._release(batch)

    def drop(self, batch: RecordBatch) -> None:
        """Give ``batch`` up unacked: its records are read again from the committed offset."""
        self._release(batch)

    def _release(self, batch: RecordBatch) -> None:
        consumer = self.app.consumer
        with ACK_LOCK:
            batch.marker.acked = True
            consumer._unacked_messages.discard(batch.marker)
        notify(consumer._waiting_for_ack)

    async def rewind(self) -> None:
        """Seek every assigned partition of the topic to where the positioner says, dropping
        every batch fetched before (after a refused state save)."""
        await self.app.consumer.seek_claimed(self)  # type: ignore[attr-defined]

    def clear(self) -> None:
        """Drop every waiting batch (flow stopped for a rebalance, or a seek)."""
        if self._queue is None:
            return
        while not self._queue.empty():
            self.drop(self._queue.get_nowait())


class BatchConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer; claimed topics bypass the per-message path (see module)."""

    def stop_flow(self) -> None:
        super().stop_flow()
        for source in self.transport.batch_sources.values():  # type: ignore[attr-defined]
            source.clear()

    async def perform_seek(self) -> None:
        """faust's seek to the committed offsets, then each source's positioner decides."""
        sources = [s for s in self.transport.batch_sources.values()  # type: ignore[attr-defined]
                   if s.positioner is not None]
        for source in sources:  # hold the claimed partitions until the positioner's seek
            source.epoch += 1
            source.clear()
            source.expect.update({tp: HOLD for tp in self.assignment()
                                  if tp.topic == source.topic})
        await super().perform_seek()
        for source in sources:
            await self.seek_claimed(source)

    async def seek_claimed(self, source: BatchSource) -> None:
        """Seek the assigned partitions of ``source``'s topic where its positioner says.

        Batches queued or being queued are dropped (their ``epoch`` is older), and until a fetch
        starts exactly at the target, fetched records of a partition are dropped (they come
        from the old position; the seek reset it, so nothing is skipped): otherwise records
        from beyond the checkpoint could be applied ahead of those between it and them. A
        partition whose log has a hole exactly at the target (compaction, a transaction
        marker) would wait there: the events topic is neither."""
        if source.positioner is None:
            return
        tps = [tp for tp in self.assignment() if tp.topic == source.topic]
        if not tps:
            return
        committed = self._committed_offset
        starts = await source.positioner({tp: committed.get(tp) for tp in tps})
        earliest = [tp for tp, at in starts.items() if at == EARLIEST]
        first = await self.earliest_offsets(*earliest) if earliest else {}
        targets = {tp: first.get(tp, 0) if at == EARLIEST else at
                   for tp, at in starts.items() if at is not None}
        rest = [tp for tp in tps if tp not in targets]  # Kafka's position: its committed offset
        if rest:
            unknown = [tp for tp in rest if committed.get(tp) is None]
            start = await self.earliest_offsets(*unknown) if unknown else {}
            targets.update({tp: committed[tp] if committed.get(tp) is not None
                            else start.get(tp, 0) for tp in rest})
        # from here on, batches taken before are stale and fetched records must start at the
        # target (a fetch from the old position can still come back while the seek runs)
        source.epoch += 1
        source.clear()
        source.expect.update(targets)
        for tp, at in targets.items():
            await self.seek(tp, at)
            # the next commit counts from here: faust commits nothing past a hole at the head
            committed[tp] = at

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs Kafka
        sources: dict[str, BatchSource] = self.transport.batch_sources  # type: ignore[attr-defined]
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                records, active = await self._wait_next_records(1.0)
                await self.sleep(0)
                if records is None or self.should_stop:
                    continue
                if not self.flow_active:
                    try:
                        await self.perform_seek()
                    except Exception as ex:  # faust logs and goes on here too
                        self.log.warning(f"exception performing seek when flow not active {ex}")
                    continue
                generation = self.app.consumer_generation_id
                claimed: dict[str, list[tuple[TP, list[Any]]]] = {}
                for tp, recs in records.items():
                    if not recs or (active is not None and tp not in active
                                    and tp not in self._buffered_partitions):
                        continue
                    if tp.topic in sources:
                        recs = await self._take(tp, recs)
                        if recs:
                            claimed.setdefault(tp.topic, []).append((tp, recs))
                    else:
                        await self._per_message(tp, recs, generation)
                for topic, parts in claimed.items():
                    if not await self._deliver(sources[topic], parts, generation):
                        break
                commit_every = self._commit_every
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    async def _take(self, tp: TP, recs: list[Any]) -> list[Any]:
        """The records of ``tp`` not read before, with faust's read-offset and gap bookkeeping;
        after a seek of a claimed partition, none fetched from the old position."""
        source = self.transport.batch_sources[tp.topic]  # type: ignore[attr-defined]
        at = source.expect.get(tp)
        if at is not None:  # HOLD (-1) drops everything
            recs = [r for r in recs if r.offset >= at] if at >= 0 else []
            if not recs or recs[0].offset != at:
                return []
        r_offset = self._read_offset[tp]
        if r_offset is not None and recs[0].offset < r_offset:
            recs = [r for r in recs if r.offset >= r_offset]
            if not recs:
                return recs
        acks = self.app.topics.acks_enabled_for(tp.topic)
        first, last = recs[0].offset, recs[-1].offset
        if acks:
            if r_offset and first - r_offset > 1:
                await self._add_gap(tp, r_offset + 1, first)
            if last - first + 1 != len(recs):  # holes inside the fetch
                prev = first
                for r in recs[1:]:
                    if r.offset - prev > 1:
                        await self._add_gap(tp, prev + 1, r.offset)
                    prev = r.offset
        monitor = self.app.monitor
        monitor.track_tp_end_offset(tp, self.highwater(tp))
        monitor.stream_inbound_time[tp] = time.monotonic()
        self._read_offset[tp] = last
        return recs

    async def _deliver(self, source: BatchSource, parts: list[tuple[TP, list[Any]]],
                       generation: int) -> bool:
        """Queue ``parts`` as batches of at most ``source.max_batch``; False if flow stopped."""
        limit, epoch, expect = source.max_batch, source.epoch, source.expect
        if expect:  # after a seek: only records that start exactly where it went
            parts = [(tp, recs) for tp, recs in parts
                     if tp not in expect or recs[0].offset == expect[tp]]
            for tp, _ in parts:
                expect.pop(tp, None)
        records: list[Any] = []
        offsets: dict[TP, list[int]] = {}
        pending = []
        for tp, recs in parts:
            at = 0
            while at < len(recs):
                room = limit - len(records)
                piece = recs[at:at + room]
                records.extend(piece)
                offsets.setdefault(tp, []).extend(r.offset for r in piece)
                at += len(piece)
                if len(records) >= limit:
                    pending.append(RecordBatch(records, offsets, generation, epoch))
                    records, offsets = [], {}
        if records:
            pending.append(RecordBatch(records, offsets, generation, epoch))
        unacked = self._unacked_messages
        for i, batch in enumerate(pending):
            if _coalesce(source, batch):
                continue
            unacked.add(batch.marker)
            queue = source.queue
            if queue.full():
                await self.wait_first(queue.put(batch), self.suspend_flow.wait())
            else:
                queue.put_nowait(batch)
            if not self.flow_active:  # a rebalance began while we waited: give the rest up
                for rest in pending[i:]:
                    source.drop(rest)
                source.clear()
                return False
        return True

    async def _per_message(self, tp: TP, recs: list[Any], generation: int) -> None:
        """faust's own path for a topic no source claims (tables, other agents)."""
        to_message, callback = self._to_message, self.callback
        get_read, set_read = self._read_offset.__getitem__, self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        for record in recs:
            if not self.flow_active or self.app.consumer_generation_id != generation:
                return
            message = to_message(tp, record)
            offset, r_offset = message.offset, get_read(tp)
            if r_offset is None or offset >= r_offset:
                if offset - (r_offset or 0) > 1 and r_offset and acks_enabled_for(
                        message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                await self.wait_first(callback(message), self.suspend_flow.wait())
                set_read(tp, offset)


def _coalesce(source: BatchSource, batch: RecordBatch) -> bool:
    """Append ``batch`` to the newest batch waiting in ``source``'s queue if
    :func:`coalesces` says so and both come from the same seek and generation; True if done.
    Nothing is awaited in between, so the worker cannot take the batch while it grows."""
    queue = source.queue
    if queue.empty():
        return False
    waiting = [queue.get_nowait() for _ in range(queue.qsize())]
    last = waiting[-1]
    joined = (last.epoch == batch.epoch and last.generation == batch.generation
              and coalesces(last.size, batch.size, source.max_batch))
    if joined:
        last.absorb(batch)
    for b in waiting:
        queue.put_nowait(b)
    return joined


class BatchTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with :class:`BatchConsumer`; holds the sources by topic."""

    Consumer = BatchConsumer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batch_sources: dict[str, BatchSource] = {}


def install(app: faust.App, topic: faust.TopicT, max_batch: int = 1000,
            depth: int = 1) -> BatchSource:
    """Claim ``topic`` (a single-topic ``app.topic``) for batches; call before the app starts.

    The app's consumer becomes a :class:`BatchConsumer` and the topic is subscribed through
    faust's conductor, so the group, assignment and commits stay faust's.
    """
    if app._consumer is not None:
        raise ConfigError("fastpath.install: expected an app whose consumer is not created yet "
                          "(install before the app starts)")
    names = list(topic.topics)
    if len(names) != 1:
        raise ConfigError(f"fastpath.install: expected a topic with one name, got {names}")
    transport = app.transport
    if not isinstance(transport, BatchTransport):
        transport = BatchTransport(app.conf.broker_consumer, app)
        app.transport = transport
    source = BatchSource(app, names[0], max_batch, depth)
    transport.batch_sources[names[0]] = source
    app.topics.add(topic)
    return source


class Stages(Protocol[W]):
    """A batch handler split in two (:class:`stream.pipeline.Pipeline` is one): ``compute`` may
    run for a batch while earlier ones are in ``deliver``."""

    async def compute(self, records: Sequence[Any]) -> W | None:
        """The batch's work (``None``: stale, drop the batch); may raise ``CheckpointMoved``."""

    async def deliver(self, work: W) -> Any:
        """Return only once ``work``'s outputs are acknowledged and its states saved."""

    def abandon(self, work: W) -> None:
        """``work`` will not be delivered (a refusal came before it)."""

    def backlogged(self) -> bool:
        """True while the next batch must wait for a delivery (its memory bound is reached)."""


class _Deliveries(Generic[W]):
    """The batches computed and not yet delivered, oldest first, and the task delivering them
    strictly in order; a refused save drops the rest unacked and asks for a rewind."""

    def __init__(self, source: BatchSource, stages: Stages[W],
                 after: Callable[[RecordBatch], None] | None,
                 on_failure: Callable[[], Any]) -> None:
        self.source, self.stages, self.after = source, stages, after
        self.on_failure = on_failure  # wakes the computing side wherever it waits
        self.pending: deque[tuple[RecordBatch, W]] = deque()
        self.rewind = False  # a save was refused: seek back before computing anything more
        self.failure: BaseException | None = None
        self._queued = asyncio.Event()
        self._changed = asyncio.Event()
        self._refused = asyncio.Event()

    def add(self, batch: RecordBatch, work: W) -> None:
        self.pending.append((batch, work))
        self._queued.set()

    def drop_all(self) -> None:
        while self.pending:
            batch, work = self.pending.popleft()
            self.source.drop(batch)
            self.stages.abandon(work)

    async def fetched(self, fetch: asyncio.Future[Any]) -> bool:
        """Wait for ``fetch`` or a refused delivery, whichever comes first; True once fetched.
        A refusal must seek back now, not when the topic next has records (an idle topic would
        put the replay of the refused partitions off indefinitely)."""
        if not self.rewind and not fetch.done():
            self._refused.clear()
            refused = asyncio.ensure_future(self._refused.wait())
            try:
                await asyncio.wait((fetch, refused), return_when=asyncio.FIRST_COMPLETED)
            finally:
                refused.cancel()
        return fetch.done()

    async def until(self, ready: Callable[[], bool]) -> None:
        """Wait for deliveries until ``ready()``; a delivery that failed raises here."""
        while True:
            if self.failure is not None:
                raise self.failure
            if ready():
                return
            self._changed.clear()
            await self._changed.wait()

    async def run(self) -> None:
        pending, source = self.pending, self.source
        try:
            while True:
                if not pending:
                    self._queued.clear()
                    await self._queued.wait()
                    continue
                batch, work = pending[0]
                try:
                    await self.stages.deliver(work)
                except CheckpointMoved as ex:
                    pending.popleft()
                    source.done(batch, partitions=ex.saved)
                    self.drop_all()
                    self.rewind = True
                    self._refused.set()
                else:
                    pending.popleft()
                    source.done(batch)
                    if self.after is not None:
                        self.after(batch)
                self._changed.set()
        except Exception as ex:  # a bug: the computing side raises it
            self.failure = ex
            self._changed.set()
            self.on_failure()


async def run_batches(source: BatchSource, stages: Stages[Any],
                      after: Callable[[RecordBatch], None] | None = None,
                      waited: Callable[[float], None] | None = None,
                      inflight: int = 1) -> None:
    """Compute each batch, deliver it on a second task, ack it once delivered, then ``after``;
    ``waited`` gets the seconds each batch spent between its fetch and its compute (for a batch
    that absorbed later fetches, since the first: its oldest record's wait).

    At most ``inflight`` batches are computed and not yet delivered (1: each batch waits for the
    one before), and fewer while ``stages.backlogged()``; deliveries run strictly in order. A
    batch whose delivery raises stays unacked (replayed after a restart) and the error propagates
    here. A refused load or save (:class:`~stream.state.CheckpointMoved`) acks only the
    partitions that were saved, drops every later batch unacked, and seeks the source back
    (:meth:`BatchSource.rewind`) once no delivery is in flight, before anything else is computed.
    """
    if inflight < 1:
        raise ConfigError(f"run_batches: expected inflight >= 1, got {inflight}")
    main = asyncio.current_task()
    assert main is not None
    deliveries: _Deliveries[Any] = _Deliveries(source, stages, after, main.cancel)
    pending = deliveries.pending
    delivering = asyncio.ensure_future(deliveries.run())
    batches = source.__aiter__()
    fetch: asyncio.Future[RecordBatch] | None = None  # kept across a rewind, never cancelled
    try:
        while True:
            await deliveries.until(lambda: len(pending) < inflight
                                   and not (pending and stages.backlogged()))
            if deliveries.rewind:
                deliveries.rewind = False
                await source.rewind()
                continue
            if fetch is None:
                fetch = asyncio.ensure_future(batches.__anext__())
            if not await deliveries.fetched(fetch):
                continue  # a delivery was refused while no records came: seek back first
            batch, fetch = fetch.result(), None
            if deliveries.rewind or source._stale(batch):  # from before a seek
                source.drop(batch)
                continue
            if waited is not None:
                waited(time.perf_counter() - batch.fetched)
            try:
                work = await stages.compute(batch.records)
            except CheckpointMoved:
                source.drop(batch)
                await deliveries.until(lambda: not pending)
                deliveries.rewind = False  # the same seek covers a refusal meanwhile
                await source.rewind()
                continue
            if work is None or deliveries.rewind:
                source.drop(batch)
                if work is not None:
                    stages.abandon(work)
                continue
            deliveries.add(batch, work)
            # let the delivery hand its records to the producer and the producer's sender put
            # them on the wire before the next compute holds the loop (two loop turns)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
    except asyncio.CancelledError:
        if deliveries.failure is not None:  # cancelled by the failed delivery, not a shutdown
            raise deliveries.failure from None
        raise
    finally:
        if fetch is not None and fetch.done() and not fetch.cancelled() \
                and fetch.exception() is None:
            source.drop(fetch.result())  # fetched during a last seek, never computed
        for task in (delivering, fetch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await task
