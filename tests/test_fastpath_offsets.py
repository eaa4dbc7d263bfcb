"""stream.fastpath's bookkeeping in faust's own structures, without Kafka: a batch acks exactly its
offsets (none below the committed offset, none twice), releases its in-flight marker so faust's
``wait_empty`` can return, and a dropped or cleared batch acks nothing."""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP

from stream.fastpath import BatchSource, RecordBatch

T0, T1 = TP("events", 0), TP("events", 1)


def _app(committed: dict | None = None, generation: int = 3) -> SimpleNamespace:
    consumer = SimpleNamespace(
        _committed_offset=defaultdict(lambda: None, committed or {}),
        _acked=defaultdict(list), _acked_index=defaultdict(set), _n_acked=0,
        _unacked_messages=weakref.WeakSet(), _waiting_for_ack=None, flow_active=True)
    return SimpleNamespace(consumer=consumer, consumer_generation_id=generation)


def _batch(app: SimpleNamespace, offsets: dict, generation: int = 3) -> RecordBatch:
    batch = RecordBatch([object() for o in offsets.values() for _ in o], offsets, generation)
    app.consumer._unacked_messages.add(batch.marker)  # as BatchConsumer._deliver does
    return batch


def test_done_acks_every_offset_of_the_batch_once_and_releases_it():
    app = _app()
    source = BatchSource(app, "events")
    batch = _batch(app, {T0: [5, 6, 7], T1: [40, 41]})
    assert len(app.consumer._unacked_messages) == 1
    source.done(batch)
    assert app.consumer._acked[T0] == [5, 6, 7] and app.consumer._acked[T1] == [40, 41]
    assert app.consumer._acked_index[T0] == {5, 6, 7}
    assert app.consumer._n_acked == 5
    assert batch.marker.acked and len(app.consumer._unacked_messages) == 0
    again = _batch(app, {T0: [7, 8]})  # a replayed record is not acked twice
    source.done(again)
    assert app.consumer._acked[T0] == [5, 6, 7, 8] and app.consumer._n_acked == 6


def test_offsets_below_the_committed_one_are_not_acked():
    app = _app(committed={T0: 10})
    source = BatchSource(app, "events")
    source.done(_batch(app, {T0: [8, 9, 10, 11]}))
    assert app.consumer._acked[T0] == [10, 11]


def test_dropped_stale_and_cleared_batches_ack_nothing():
    app = _app(generation=4)
    source = BatchSource(app, "events", depth=4)

    async def scenario() -> list[RecordBatch]:
        old = _batch(app, {T0: [1, 2]}, generation=3)  # fetched before a rebalance
        fresh = _batch(app, {T0: [3]}, generation=4)
        queued = _batch(app, {T1: [9]}, generation=4)
        for b in (old, fresh, queued):
            source.queue.put_nowait(b)
        got = []
        async for b in source:  # the stale one is dropped on the way
            got.append(b)
            break
        source.clear()  # flow stopped: what still waits is given up
        return [old, fresh, queued, *got]

    old, fresh, queued, first = asyncio.run(scenario())
    assert first is fresh
    assert old.marker.acked and queued.marker.acked  # released, so wait_empty can return
    assert not fresh.marker.acked  # handed out, in flight
    assert not app.consumer._acked[T0] and not app.consumer._acked[T1]
    assert list(app.consumer._unacked_messages) == [fresh.marker]


def test_done_against_fausts_real_consumer_gives_the_commit_faust_computes(tmp_path):
    """faust's own Consumer (the BatchConsumer the worker runs, never started: no broker is
    contacted): the acks land where faust's ``_new_offset`` turns them into the next commit,
    a refused partition is left unacked, and the seam check finds every private name."""
    import faust

    from stream import fastpath, seam

    async def go() -> None:
        app = faust.App(f"seam-{tmp_path.name}", broker="kafka://127.0.0.1:1",
                        web_enabled=False, datadir=str(tmp_path), value_serializer="raw")
        source = fastpath.install(app, app.topic("events", value_type=bytes))
        consumer = app.consumer
        assert isinstance(consumer, fastpath.BatchConsumer)
        seam.check()
        seam.check_instance(consumer)
        consumer._committed_offset[T0] = 5
        batch = RecordBatch([object()] * 5, {T0: [5, 6, 7], T1: [0, 1]}, 0)
        consumer._unacked_messages.add(batch.marker)
        source.done(batch, partitions=frozenset({0}))
        assert consumer._new_offset(T0) == 8  # faust commits the next offset to read
        assert consumer._acked[T1] == [] and consumer._n_acked == 3
        assert batch.marker not in consumer._unacked_messages

    asyncio.run(go())
