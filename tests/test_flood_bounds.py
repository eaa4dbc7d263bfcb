"""A hostile producer cannot grow the worker without bound (issue #15).

100,000 new entity ids sent at full speed: the engine's only per-entity memory, the
active-entities bookkeeping, stops at its cap, and the memory the process holds (``tracemalloc``,
Python and numpy allocations) after the 100,000th id is no more than after the cap was reached
plus less than what filling the cap cost. A flood of bad or late messages gives one dead letter
per message, each carrying at most ``RAW_LIMIT`` bytes of the payload.
"""

from __future__ import annotations

import tracemalloc

import orjson
import pytest
from streamkit import ecg, make_artifact

from stream.artifact import load_artifact
from stream.engine import Engine, RawMessage
from stream.metrics import CollectorRegistry, Metrics
from stream.records import RAW_LIMIT

T0 = 1_700_000_000.0
FLOOD = 100_000
CAP = 5_000  # large enough that filling it dwarfs unrelated allocations
BATCH = 1_000


@pytest.mark.slow
def test_a_flood_of_new_entity_ids_keeps_the_engine_memory_bounded(tmp_path, bundled_data):
    values = ecg(bundled_data, "100", 0, BATCH).tolist()
    metrics = Metrics(CollectorRegistry(), active_max=CAP)
    engine = Engine(load_artifact(make_artifact(tmp_path / "art")), warmup_steps=0, max_gap_s=0)

    def flood(lo: int, hi: int) -> None:
        for start in range(lo, hi, BATCH):
            msgs = []
            for i in range(start, min(start + BATCH, hi)):
                name = f"flood-{i:06d}"
                body = orjson.dumps({"entity_id": name, "ts": T0, "values": values[i % BATCH]})
                msgs.append(RawMessage(body, name.encode(), "events", 0, i))
            batch = engine.prepare(msgs)
            out = engine.apply(batch, [None] * len(batch.entity_ids))
            metrics.on_batch(batch, out)  # as the pipeline records every outcome
            assert len(out.predictions) == len(msgs)  # the states are dropped: no store here

    tracemalloc.start()
    try:
        flood(0, BATCH)  # first-call allocations (torch, numpy, metrics children)
        before = tracemalloc.get_traced_memory()[0]
        flood(BATCH, CAP + BATCH)  # the bookkeeping fills up to its cap
        at_cap = tracemalloc.get_traced_memory()[0]
        flood(CAP + BATCH, FLOOD)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    print(f"traced memory: {before:,} B after {BATCH:,} ids, {at_cap:,} B at the cap "
          f"({CAP:,}), {after:,} B after {FLOOD:,} ids")
    assert len(metrics._seen) == CAP
    assert metrics.registry.get_sample_value("seqstream_active_entities") == CAP
    assert after - at_cap < at_cap - before
    assert list(metrics._seen)[-1] == f"flood-{FLOOD - 1:06d}"  # the most recent are kept


def test_a_flood_of_bad_messages_gives_one_capped_dead_letter_each(tmp_path, bundled_data):
    values = ecg(bundled_data, "100", 0, 2)
    engine = Engine(load_artifact(make_artifact(tmp_path / "art", sample=values)),
                    warmup_steps=0, max_gap_s=0, max_payload_bytes=64 << 10)
    good = RawMessage(orjson.dumps({"entity_id": "p", "ts": T0 + 10, "values": [0.1, 0.2]}),
                      b"p", "events", 0, 0)
    hostile = [
        b"\xff" * (64 << 10),  # largest accepted size, undecodable: every byte a U+FFFD
        b"\xff" * ((64 << 10) + 1),  # one byte over
        b"[" * 50_000,  # deep nesting
        orjson.dumps({"entity_id": "p", "ts": T0, "values": [0.1, 0.2]}),  # late
        orjson.dumps({"entity_id": "p", "ts": T0 + 1e9, "values": [0.1, 0.2]}),  # future
        orjson.dumps({"entity_id": "p", "ts": T0 + 11, "values": [[0.1, 0.2]] * 3000,
                      "period": 1e-9, "x": "y" * 20_000}),
    ]
    msgs = [good] + [RawMessage(v, b"p", "events", 0, 1 + i) for i, v in enumerate(hostile)
                     for _ in range(100)]
    batch = engine.prepare(msgs)
    out = engine.apply(batch, [None])
    assert len(out.predictions) == 1 and len(out.deadletters) == len(msgs) - 1
    for _, value in out.deadletters:
        record = orjson.loads(value)
        assert len(record["raw"]) <= RAW_LIMIT and record["raw_bytes"] >= len(record["raw"])
    assert {orjson.loads(v)["reason"] for _, v in out.deadletters} == {
        "too_large", "malformed_json", "late", "future_ts", "extra_field"}
