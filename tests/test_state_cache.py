"""The worker's in-memory state cache and the overlap of batches it allows, as pure logic (no
Kafka, no Redis): the cache never evicts a state whose save is in flight and keeps its bound
otherwise; a seek clears it; batches computed ahead of their delivery through
:func:`stream.fastpath.run_batches` give exactly the serial run's records and states, with the
offsets acked only once delivered; a refused save drops the batches computed after it unacked
(nothing of theirs produced) and the replay from the store gives the serial run's final states."""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from streamkit import ecg, make_artifact
from test_batched_steps_match_offline import TOPICS, Sink, cut, messages_for

from stream.artifact import load_artifact
from stream.engine import Engine, RawMessage
from stream.fastpath import BatchSource, RecordBatch, run_batches
from stream.metrics import CollectorRegistry, Metrics
from stream.pipeline import Pipeline
from stream.state import MemoryStateStore
from stream.state_cache import StateCache
from stream.worker import position

# -- the cache alone ---------------------------------------------------------------------------

OPS = st.lists(st.one_of(
    st.tuples(st.just("put"), st.lists(st.integers(0, 11), min_size=1, max_size=5)),
    st.tuples(st.just("saved"), st.just(0)),
    st.tuples(st.just("get"), st.lists(st.integers(0, 11), max_size=5))), max_size=60)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(0, 6), ops=OPS)
def test_eviction_never_drops_a_pinned_state_and_otherwise_keeps_the_bound(capacity, ops):
    cache = StateCache(capacity)
    latest: dict[tuple[int, str], tuple[bytes, int]] = {}  # what was last written, by batch
    batch = saved = 0
    for op, arg in ops:
        if op == "put":
            batch += 1
            states = {(e % 2, f"e{e}"): f"{e}@{batch}".encode() for e in arg}
            cache.put(states, batch)
            latest.update({k: (v, batch) for k, v in states.items()})
        elif op == "saved":
            if saved < batch:
                saved += 1  # deliveries complete in order
                cache.saved(saved)
        else:
            keys = [(e % 2, f"e{e}") for e in arg]
            for key, got in zip(keys, cache.get(keys), strict=True):
                assert got is None or got == latest[key][0]  # never an older state
        pinned = {k: v for k, (v, b) in latest.items() if b > saved}
        assert cache.get(list(pinned)) == list(pinned.values())  # every unsaved state is there
        assert len(cache) <= max(capacity, len(pinned))
        assert cache.full == (len(cache) > capacity)


def test_the_least_recently_used_saved_state_goes_first():
    cache = StateCache(2)
    cache.put({(0, "a"): b"a", (0, "b"): b"b"})
    assert cache.get([(0, "a")]) == [b"a"]  # b is now the least recently used
    assert cache.put({(1, "c"): b"c"}) == 1
    assert cache.get([(0, "a"), (0, "b"), (1, "c")]) == [b"a", None, b"c"]


def test_a_seek_clears_the_cache_so_the_store_is_the_source_again(tmp_path):
    pipeline = Pipeline(Engine(load_artifact(make_artifact(tmp_path / "art", hidden=4))),
                        MemoryStateStore("seek"), Sink(), TOPICS, state_cache=10)
    pipeline.cache.put({(0, "a"): b"a", (1, "b"): b"b"}, 1)
    generation = pipeline.cache.generation
    asyncio.run(position(pipeline, "rebuild", {TP("events", 0): None}, set()))
    assert len(pipeline.cache) == 0 and pipeline.cache.generation == generation + 1


# -- overlapped batches ------------------------------------------------------------------------

def _fake_app() -> SimpleNamespace:
    """faust's consumer structures that :class:`BatchSource` acks into (no Kafka)."""
    consumer = SimpleNamespace(
        _committed_offset=defaultdict(lambda: None), _acked=defaultdict(list),
        _acked_index=defaultdict(set), _n_acked=0, _unacked_messages=weakref.WeakSet(),
        _waiting_for_ack=None, flow_active=True)
    return SimpleNamespace(consumer=consumer, consumer_generation_id=1)


def _two_partitions(msgs: list[RawMessage]) -> list[RawMessage]:
    """The same messages, each entity on partition ``len(key) % 2``, offsets per partition."""
    next_offset = [0, 0]
    out = []
    for m in msgs:
        p = len(m.key or b"") % 2
        out.append(RawMessage(m.value, m.key, "events", p, next_offset[p]))
        next_offset[p] += 1
    return out


def _record_batch(source: BatchSource, records: list[RawMessage]) -> RecordBatch:
    offsets: dict[TP, list[int]] = {}
    for r in records:
        offsets.setdefault(TP("events", r.partition), []).append(r.offset)
    batch = RecordBatch(list(records), offsets, 1, source.epoch)
    source.app.consumer._unacked_messages.add(batch.marker)
    return batch


class SlowSink(Sink):
    """A producer whose acks take a moment, and at least until ``ahead`` batches are in flight
    (counted in loop turns, not time: a loaded machine computes more slowly), noting how many
    batches were in flight by then."""

    def __init__(self, ahead: int = 1) -> None:
        super().__init__()
        self.pipeline: Pipeline | None = None
        self.most_in_flight = 0
        self.ahead = ahead

    async def __call__(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        assert self.pipeline is not None
        await asyncio.sleep(0.001)  # meanwhile the next batches may be computed
        in_flight = self.pipeline._in_flight
        for _ in range(100_000):  # bounded: the last batches have none behind them
            if max(in_flight.values(), default=0) >= self.ahead:
                break
            await asyncio.sleep(0)
        self.most_in_flight = max(self.most_in_flight, *in_flight.values(), 0)
        await super().__call__(records)


class CountingStore(MemoryStateStore):
    """Counts load round trips; ``lose_at``: before that save, forget every write made after
    the first save (Redis restarted from an older copy)."""

    def __init__(self, lose_at: int = 0) -> None:
        super().__init__("overlap")
        self.loads = self.saves = 0
        self.lose_at = lose_at
        self.copy: dict = {}

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        if any(not k.endswith("}") for k in keys):
            self.loads += 1
        return await super()._get_many(keys)

    async def save(self, states, partitions=None, checkpoints=None) -> int:  # type: ignore[override]
        self.saves += 1
        if self.saves == self.lose_at:
            self._data = dict(self.copy)
        written = await super().save(states, partitions, checkpoints)
        if self.saves == 1:
            self.copy = dict(self._data)
        return written


def _setup(tmp_path, bundled_data):
    rng = np.random.default_rng(11)
    series = {f"rec{r}@{start}": ecg(bundled_data, r, start, int(rng.integers(60, 120)))
              for r, start in (("100", 5000), ("106", 5000), ("215", 5000), ("100", 60000),
                               ("215", 60000), ("106", 60000))}
    art = make_artifact(tmp_path / "art", hidden=8, horizon=3,
                        sample=np.concatenate(list(series.values())))
    msgs = _two_partitions(messages_for(series, 1_700_000_000.0, 1 / 360, rng, chunk_p=0.4))
    sizes = cut(len(msgs), rng)
    return load_artifact(art), msgs, sizes


def _serial(artifact, msgs, sizes) -> tuple[Sink, CountingStore]:
    sink, store = Sink(), CountingStore()
    pipeline = Pipeline(Engine(artifact, warmup_steps=0), store, sink, TOPICS)
    pipeline.positions.update({0: None, 1: None})

    async def go() -> None:
        at = 0
        for size in sizes:
            await pipeline.process(msgs[at:at + size])
            at += size

    asyncio.run(go())
    return sink, store


def _overlapped(artifact, msgs, sizes, inflight: int, cache: int, store: CountingStore,
                ahead: int = 1) -> tuple[SlowSink, Pipeline, BatchSource, int]:
    """Run the batches through ``run_batches`` until every offset is acked, each produce waiting
    for ``ahead`` batches in flight; a rewind seeks back to the store's checkpoints as the
    worker's positioner does. Returns the rewinds made."""
    sink = SlowSink(ahead)
    pipeline = Pipeline(Engine(artifact, warmup_steps=0), store, sink, TOPICS,
                        Metrics(CollectorRegistry()), state_cache=cache)
    pipeline.positions.update({0: None, 1: None})
    sink.pipeline = pipeline
    app = _fake_app()
    source = BatchSource(app, "events", depth=len(sizes) + 1)
    rewinds = 0
    ends = {p: sum(1 for m in msgs if m.partition == p) for p in (0, 1)}

    def enqueue(start: dict[int, int]) -> None:
        at = 0
        for size in sizes:
            part = [m for m in msgs[at:at + size] if m.offset >= start[m.partition]]
            at += size
            if part:
                source.queue.put_nowait(_record_batch(source, part))

    async def rewind() -> None:
        nonlocal rewinds
        rewinds += 1
        starts = await position(pipeline, "rebuild", {TP("events", p): None for p in (0, 1)},
                                set())
        source.epoch += 1
        source.clear()
        enqueue({tp.partition: at for tp, at in starts.items()})

    source.rewind = rewind  # type: ignore[method-assign]

    async def go() -> None:
        enqueue({0: 0, 1: 0})
        task = asyncio.ensure_future(run_batches(source, pipeline, inflight=inflight))
        acked = app.consumer._acked_index
        while any(len(acked[TP("events", p)]) < ends[p] for p in (0, 1)):
            assert not task.done(), task.exception()
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    return sink, pipeline, source, rewinds


@pytest.mark.parametrize(("inflight", "cache"), [(1, 1000), (2, 1000), (3, 1000), (3, 4),
                                                 (2, 0)])
def test_overlapped_batches_give_exactly_the_serial_records_and_states(
        tmp_path, bundled_data, inflight, cache):
    artifact, msgs, sizes = _setup(tmp_path, bundled_data)
    want, want_store = _serial(artifact, msgs, sizes)
    store = CountingStore()
    sink, pipeline, source, rewinds = _overlapped(artifact, msgs, sizes, inflight, cache, store,
                                                  ahead=inflight if cache == 1000 else 1)
    assert sink.records == want.records  # delivered strictly in order: the same records
    assert store._data.keys() == want_store._data.keys()
    assert all(store._data[k][0] == want_store._data[k][0] for k in store._data)
    assert rewinds == 0 and len(source.app.consumer._unacked_messages) == 0
    m = pipeline.metrics
    assert m is not None
    hits = m.registry.get_sample_value("seqstream_state_cache_hits_total")
    misses = m.registry.get_sample_value("seqstream_state_cache_misses_total")
    evictions = m.registry.get_sample_value("seqstream_state_cache_evictions_total")
    # every save done: nothing pinned, the cache holds its bound at most
    assert len(pipeline.cache) == min(cache, 6)
    if cache == 1000:  # every entity loaded once; after that, no load round trip
        assert misses == 6 and store.loads <= 6 < want_store.loads
        assert hits > 0 and evictions == 0
        assert sink.most_in_flight == inflight  # batches were computed ahead of delivery
    else:
        assert evictions > 0
    if cache == 0:  # nothing kept: each batch waited for the previous one's save
        assert sink.most_in_flight == 1 and hits == 0


def test_a_refused_save_drops_the_batches_computed_after_it_and_replays_from_the_store(
        tmp_path, bundled_data):
    artifact, msgs, _ = _setup(tmp_path, bundled_data)
    sizes = [15] * -(-len(msgs) // 15)
    want, want_store = _serial(artifact, msgs, sizes)
    store = CountingStore(lose_at=3)  # the third save finds the store back after the first
    sink, pipeline, source, rewinds = _overlapped(artifact, msgs, sizes, 3, 1000, store)
    assert rewinds == 1 and len(source.app.consumer._unacked_messages) == 0
    m = pipeline.metrics
    assert m is not None and m.registry.get_sample_value("seqstream_state_rewinds_total") == 2
    # batches 1-3 produced once, the replay from the first save's checkpoint produced 2 and 3
    # again and everything after once: the batches computed after the refused one produced
    # nothing before the seek
    events = [p for t, _, p in want.records if t == "p"]
    got = [p for t, _, p in sink.records if t == "p"]
    first, third = sum(sizes[:1]), sum(sizes[:3])
    # (every one of batches 1-3 has both partitions: both are refused and sought back)
    assert all({m.partition for m in msgs[sum(sizes[:i]):sum(sizes[:i + 1])]} == {0, 1}
               for i in range(3))
    assert len(got) == len(events) + (third - first)
    assert got[:third] == events[:third] and got[third:] == events[first:]
    assert store._data.keys() == want_store._data.keys()
    assert all(store._data[k][0] == want_store._data[k][0] for k in store._data)


def test_a_failed_delivery_stops_the_loop_with_its_error_and_acks_nothing(tmp_path, bundled_data):
    """A bug in a delivery surfaces even while the computing side waits for the next fetch."""
    artifact, msgs, _ = _setup(tmp_path, bundled_data)

    async def broken(records: list) -> None:
        raise ValueError("broken producer")

    pipeline = Pipeline(Engine(artifact, warmup_steps=0), MemoryStateStore(), broken, TOPICS)
    app = _fake_app()
    source = BatchSource(app, "events", depth=2)

    async def go() -> None:
        source.queue.put_nowait(_record_batch(source, msgs[:10]))  # then nothing more comes
        await asyncio.wait_for(run_batches(source, pipeline, inflight=2), 30)

    with pytest.raises(ValueError, match="broken producer"):
        asyncio.run(go())
    assert not app.consumer._acked and len(app.consumer._unacked_messages) == 1
