"""A sample at or below an entity's watermark is never applied again (a replayed message is
counted, a late one dead-lettered, a straddling chunk answered for its new samples), a long
gap or an undecodable state restarts the entity from zero (counted), warm-up suppresses flags,
and values that overflow after scaling or chunks too big to answer are dead-lettered."""

from __future__ import annotations

import asyncio

import jsonschema
import numpy as np
import orjson
import pytest
import torch
from streamkit import ecg, make_artifact, offline_forecasts
from test_batched_steps_match_offline import TOPICS, Sink

from stream.artifact import load_artifact
from stream.engine import MAX_FORECAST_VALUES, Engine, RawMessage
from stream.metrics import CollectorRegistry, Metrics
from stream.pipeline import Pipeline
from stream.records import schema
from stream.state import MemoryStateStore, StateCodec

T0 = 1_700_000_000.0


def msg(entity: str, ts: float, values, offset: int, partition: int = 0,
        period: float | None = None) -> RawMessage:
    body = {"entity_id": entity, "ts": ts, "values": values}
    if period is not None:
        body["period"] = period
    return RawMessage(orjson.dumps(body), entity.encode(), "events", partition, offset)


def setup(tmp_path, bundled_data, **engine_kw):
    values = ecg(bundled_data, "100", 2000, 200)
    art_dir = make_artifact(tmp_path / "art", sample=values)
    metrics = Metrics(CollectorRegistry())
    engine = Engine(load_artifact(art_dir), **engine_kw)
    store, sink = MemoryStateStore(), Sink()
    return values, art_dir, engine, store, sink, Pipeline(engine, store, sink, TOPICS, metrics)


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels or None) or 0.0


def test_replayed_and_late_samples_are_skipped_and_the_state_does_not_move(tmp_path,
                                                                          bundled_data):
    torch.set_num_threads(1)
    values, art_dir, _engine, store, sink, pipe = setup(tmp_path, bundled_data, warmup_steps=0,
                                                       max_gap_s=0)
    first = [msg("a", T0 + i, values[i].tolist(), i) for i in range(20)]
    asyncio.run(pipe.process(first))
    before = asyncio.run(store.load(["a"]))[0]
    # a crash replay: the same messages again (same offsets) → duplicates, nothing emitted
    asyncio.run(pipe.process(first[10:]))
    # a new message carrying an old time → late; a chunk overlapping the watermark → its
    # already-applied prefix is late, the rest is applied
    late = msg("a", T0 + 5, values[5].tolist(), 20)
    overlap = msg("a", T0 + 18, values[18:24].tolist(), 21, period=1.0)
    asyncio.run(pipe.process([late, overlap]))
    m = pipe.metrics
    assert value(m, "seqstream_skipped_total", reason="duplicate") == 10
    assert value(m, "seqstream_replayed_total") == 10  # the replay: messages, silently
    assert value(m, "seqstream_skipped_total", reason="late") == 1 + 2
    assert value(m, "seqstream_samples_total") == 20 + 4
    assert before != asyncio.run(store.load(["a"]))[0]
    # the late message is not a replay: it is dead-lettered with both times, never lost
    (dead,) = sink.of("d")
    assert (dead["reason"], dead["offset"]) == ("late", 20)
    assert f"({T0 + 19:.3f})" in dead["detail"] and f"({T0 + 5:.3f})" in dead["detail"]
    assert value(m, "seqstream_deadletters_total", reason="late") == 1
    preds = sink.of("p")
    assert len(preds) == 20 + 1  # nothing for the replay or the late one; one for the chunk
    chunk = preds[-1]
    assert chunk["ts"] == T0 + 20 and len(chunk["forecast"]) == 4 and chunk["skipped"] == 2
    assert "skipped" not in preds[0]
    jsonschema.validate(dead, schema("deadletter"))
    jsonschema.validate(chunk, schema("prediction"))
    forecasts, _ = offline_forecasts(art_dir, values[:24])
    np.testing.assert_allclose(chunk["forecast"], forecasts[20:24], rtol=1e-5, atol=1e-5)


def test_a_gap_longer_than_the_limit_restarts_the_entity_and_its_warm_up(tmp_path, bundled_data):
    values, art_dir, engine, _store, sink, pipe = setup(tmp_path, bundled_data, warmup_steps=3,
                                                       max_gap_s=10.0)
    engine.threshold = -1.0  # every warm, scored sample is flagged: shows where warm-up ends
    before = [msg("b", T0 + i, values[i].tolist(), i) for i in range(6)]
    after = [msg("b", T0 + 100 + i, values[50 + i].tolist(), 6 + i) for i in range(6)]
    asyncio.run(pipe.process(before + after[:2]))  # the gap falls inside one batch
    asyncio.run(pipe.process(after[2:]))
    assert value(pipe.metrics, "seqstream_resets_total", reason="gap") == 1
    preds = sink.of("p")
    assert [p["score"] is None for p in preds] == [True] + [False] * 5 + [True] + [False] * 5
    assert [p["anomaly"] for p in preds] == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3
    # after the reset the entity is exactly a fresh run over the post-gap samples
    fresh, _ = offline_forecasts(art_dir, values[50:56])
    np.testing.assert_allclose([p["forecast"] for p in preds[6:]], fresh, rtol=1e-5, atol=1e-5)
    assert len(sink.of("a")) == 6


@pytest.mark.parametrize(("period", "late_start"), [(20.0, 0.0), (1.0, 100.0)])
def test_a_chunk_across_gaps_is_answered_as_its_samples_sent_one_by_one(
        tmp_path, bundled_data, period, late_start):
    """Gaps inside a chunk (its period over max_gap_s: a reset at every sample) or before its
    first sample split it over several network rows; each sample's forecast, score and flag
    are still exactly those of the same samples sent singly (the engine adds a chunk's samples
    in bulk only where no gap can lie among them)."""
    values, art_dir, engine, _store, sink, pipe = setup(tmp_path, bundled_data, warmup_steps=0,
                                                       max_gap_s=10.0)
    engine2 = Engine(load_artifact(art_dir), warmup_steps=0, max_gap_s=10.0)
    sink2 = Sink()
    pipe2 = Pipeline(engine2, MemoryStateStore(), sink2, TOPICS, Metrics(CollectorRegistry()))
    engine.threshold = engine2.threshold = -1.0  # every scored sample flagged
    head = [msg("c", T0 + i, values[i].tolist(), i) for i in range(3)]
    start = T0 + 3 + late_start
    chunk = msg("c", start, values[3:8].tolist(), 3, period=period)
    singles = [msg("c", start + period * k, values[3 + k].tolist(), 3 + k) for k in range(5)]
    asyncio.run(pipe.process([*head, chunk]))
    asyncio.run(pipe2.process(head + singles))
    resets = 4 if period > 10.0 else 1
    for p in (pipe, pipe2):
        assert value(p.metrics, "seqstream_resets_total", reason="gap") == resets
    answer, one_by_one = sink.of("p")[-1], sink2.of("p")[3:]
    assert answer["forecast"] == [p["forecast"] for p in one_by_one]
    assert answer["score"] == [p["score"] for p in one_by_one]
    assert answer["anomaly"] == [p["anomaly"] for p in one_by_one]
    assert [v for t, _, v in sink.records if t == "a"] == [v for t, _, v in sink2.records
                                                           if t == "a"]


def test_an_undecodable_state_is_a_counted_reset_not_a_crash(tmp_path, bundled_data):
    values, art_dir, engine, store, sink, pipe = setup(tmp_path, bundled_data, warmup_steps=0,
                                                       max_gap_s=0)
    asyncio.run(store.save({"c": b"\x01garbage"}))
    asyncio.run(pipe.process([msg("c", T0 + i, values[i].tolist(), i) for i in range(4)]))
    assert value(pipe.metrics, "seqstream_resets_total", reason="corrupt") == 1
    fresh, _ = offline_forecasts(art_dir, values[:4])
    np.testing.assert_allclose([p["forecast"] for p in sink.of("p")], fresh, rtol=1e-5,
                               atol=1e-5)
    codec = StateCodec(engine.model.state_size, 2)
    rows, found = codec.decode(asyncio.run(store.load(["c"])))
    assert found[0] and rows["steps"][0] == 4 and rows["wm_ts"][0] == T0 + 3


def test_values_that_overflow_after_scaling_and_oversized_chunks_are_dead_lettered(
        tmp_path, bundled_data):
    values, _art_dir, engine, _store, sink, pipe = setup(tmp_path, bundled_data, warmup_steps=0,
                                                       max_gap_s=0)
    per_sample = engine.model.horizon * 2
    too_many = MAX_FORECAST_VALUES // per_sample + 1
    batch = [
        msg("d", T0, [3.0e38, 0.0], 0),  # fits float32, but (v - mean) / std does not
        msg("d", T0 + 1, values[1].tolist(), 1),
        msg("d", T0 + 2, [[0.0, 0.0]] * too_many, 2, period=0.001),
    ]
    asyncio.run(pipe.process(batch))
    dead = sink.of("d")
    assert [(d["reason"], d["offset"]) for d in dead] == [("non_finite", 0), ("too_large", 2)]
    assert len(sink.of("p")) == 1
    assert value(pipe.metrics, "seqstream_deadletters_total", reason="non_finite") == 1
    assert value(pipe.metrics, "seqstream_deadletters_total", reason="too_large") == 1


def test_the_wall_clock_bound_applies_to_a_chunks_last_sample_and_can_be_turned_off(
        tmp_path, bundled_data):
    values = ecg(bundled_data, "100", 0, 8)
    art = load_artifact(make_artifact(tmp_path / "art", sample=values))
    now = 1_800_000_000.0
    batch = [msg("e", now - 1, values[:4].tolist(), 0, period=100.0),  # last sample 299 s ahead
             msg("e", now + 300, values[4:8].tolist(), 1, period=1.0),  # last sample 303 s ahead
             msg("f", T0, values[0].tolist(), 2)]  # a replay from 2023: event time, not refused
    bounded = Engine(art, max_gap_s=0, max_future_s=300.0, clock=lambda: now)
    prepared = bounded.prepare(batch)
    assert [(d["reason"], d["offset"]) for d in prepared.deadletter_records] == [("future_ts", 1)]
    assert "(1800000303.000, 303 s ahead)" in prepared.deadletter_records[0]["detail"]
    assert [e.ts for e in prepared.events] == [now - 1, T0]
    unbounded = Engine(art, max_gap_s=0, max_future_s=0, clock=lambda: now)
    assert unbounded.prepare(batch).deadletter_records == []
