"""Batches that adapt to the lag (stream.fastpath.coalesces): the rule as pure logic, the waiting
batch growing in faust's own structures (one in-flight marker, every offset acked once), and the
real worker, fed in small paced pieces so that fetches arrive while it is busy, still matching
one offline forward over each entity's sequence, each batch timed through every stage."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import weakref
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
from faust.types import TP
from streamkit import (
    EventSet,
    WorkerProcess,
    consume,
    create_topics,
    free_port,
    make_artifact,
    offline_forecasts,
    produce,
    topic_names,
)

from stream.fastpath import BatchSource, RecordBatch, _coalesce, coalesces
from stream.metrics import STAGES

T0, T1 = TP("events", 0), TP("events", 1)


@pytest.mark.parametrize(("waiting", "fetched", "ceiling", "joins"), [
    (0, 1, 1000, False),  # caught up: nothing waits, the fetch goes alone at once
    (0, 1000, 1000, False),
    (1, 1, 1000, True),  # behind: the fetch joins the waiting batch
    (400, 600, 1000, True),  # up to the ceiling exactly
    (400, 601, 1000, False),  # never past it
    (1000, 1, 1000, False),
])
def test_a_fetch_joins_the_waiting_batch_only_when_behind_and_within_the_ceiling(
        waiting, fetched, ceiling, joins):
    assert coalesces(waiting, fetched, ceiling) is joins


def _app(generation: int = 3) -> SimpleNamespace:
    consumer = SimpleNamespace(
        _committed_offset=defaultdict(lambda: None), _acked=defaultdict(list),
        _acked_index=defaultdict(set), _n_acked=0, _unacked_messages=weakref.WeakSet(),
        _waiting_for_ack=None, flow_active=True)
    return SimpleNamespace(consumer=consumer, consumer_generation_id=generation)


def _batch(offsets: dict, generation: int = 3, epoch: int = 0) -> RecordBatch:
    records = [(tp, o) for tp, os in offsets.items() for o in os]
    return RecordBatch(records, {tp: list(os) for tp, os in offsets.items()}, generation, epoch)


def test_the_waiting_batch_grows_in_order_and_acks_every_offset_once():
    app = _app()
    source = BatchSource(app, "events", max_batch=6)

    async def scenario() -> RecordBatch:
        waiting = _batch({T0: [1, 2], T1: [7]})
        app.consumer._unacked_messages.add(waiting.marker)  # as _deliver does
        source.queue.put_nowait(waiting)
        assert _coalesce(source, _batch({T0: [3], T1: [8, 9]}))
        assert not _coalesce(source, _batch({T0: [4]}, epoch=1))  # a seek came between
        assert not _coalesce(source, _batch({T0: [4]}, generation=4))  # a rebalance did
        assert not _coalesce(source, _batch({T0: [4, 5]}))  # 6 + 2 > max_batch
        assert source.queue.qsize() == 1
        return source.queue.get_nowait()

    got = asyncio.run(scenario())
    assert got.records == [(T0, 1), (T0, 2), (T1, 7), (T0, 3), (T1, 8), (T1, 9)]
    assert got.offsets == {T0: [1, 2, 3], T1: [7, 8, 9]}
    assert got.marker.size == got.size == 6
    assert list(app.consumer._unacked_messages) == [got.marker]  # one marker stands for both
    source.done(got)
    assert app.consumer._acked[T0] == [1, 2, 3] and app.consumer._acked[T1] == [7, 8, 9]
    assert app.consumer._n_acked == 6 and not app.consumer._unacked_messages


def test_nothing_waiting_means_the_fetch_is_queued_alone():
    source = BatchSource(_app(), "events", max_batch=100)

    async def scenario() -> bool:
        return _coalesce(source, _batch({T0: [1]}))

    assert not asyncio.run(scenario())
    assert source.queue.empty()


@pytest.mark.integration
@pytest.mark.slow
def test_worker_fed_in_paced_pieces_matches_offline(tmp_path, bundled_data, settings, unique):
    events = EventSet(bundled_data, entities=6, per_entity=120, t0=time.time() - 5.0,
                      chunk_every=4, chunk_len=3)
    sample = np.concatenate(list(events.values.values()))
    art = make_artifact(tmp_path / "art", cell="gru", layers=1, hidden=16, sample=sample)
    offline = {name: offline_forecasts(art, values) for name, values in events.values.items()}
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=2, batch_max=1000,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(port)})
    worker.start()
    records = events.interleaved(seed=3)
    pieces = [records[i:i + 12] for i in range(0, len(records), 12)]

    async def paced() -> None:
        for piece in pieces:  # each piece its own fetch, most of them while a batch runs
            await produce(settings.kafka_bootstrap, names["events"], piece)

    try:
        worker.wait_ready()
        asyncio.run(paced())
        got = asyncio.run(consume(settings.kafka_bootstrap, [names["predictions"]],
                                  lambda g: len(g[names["predictions"]]) >= len(records),
                                  timeout=120))
        deadline = time.monotonic() + 30
        while True:  # the batch histograms are observed just after the predictions are acked
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=10).read().decode()
            if f"seqstream_batch_size_sum {float(len(records))}" in text \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]

    assert f"seqstream_batch_size_sum {float(len(records))}" in text  # each event in one batch
    [count] = [ln for ln in text.splitlines() if ln.startswith("seqstream_batch_size_count ")]
    print(f"{len(records)} events sent in {len(pieces)} pieces: {count}")
    batches = count.split()[1]
    for stage in STAGES:  # each batch taken from the queue went through every stage once
        assert f'seqstream_stage_seconds_count{{stage="{stage}"}} {batches}' in text, stage
    predictions = got[names["predictions"]]
    assert len(predictions) == len(records)
    per_entity: dict[str, list[tuple[float, list]]] = defaultdict(list)
    for rec in predictions:
        if "period" in rec:
            per_entity[rec["entity_id"]] += [(rec["ts"] + i * rec["period"], rec["forecast"][i])
                                             for i in range(len(rec["forecast"]))]
        else:
            per_entity[rec["entity_id"]].append((rec["ts"], rec["forecast"]))
    for name, values in events.values.items():
        rows = sorted(per_entity[name], key=lambda r: r[0])
        assert len(rows) == len(values)
        np.testing.assert_allclose(np.array([r[1] for r in rows]), offline[name][0],
                                   rtol=1e-5, atol=1e-5)
