"""The engine's one ragged network call per batch gives every entity exactly what one offline
``model.forward`` over its whole sequence gives, however the events are cut into batches and
chunks (pure logic: in-memory state store, records collected in a list)."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest
import torch
from streamkit import ecg, make_artifact, offline_forecasts

from stream.artifact import load_artifact
from stream.engine import Engine, RawMessage
from stream.metrics import CollectorRegistry, Metrics
from stream.pipeline import Pipeline, Topics
from stream.records import schema
from stream.state import MemoryStateStore, StateCodec

TOPICS = Topics("p", "a", "d", "b")


class Sink:
    """Collects what the pipeline sends (unit tests only; integration tests use Kafka)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    async def __call__(self, records: list[tuple[str, bytes | None, bytes]]) -> None:
        self.records.extend(records)

    def of(self, topic: str) -> list[dict]:
        return [orjson.loads(v) for t, _, v in self.records if t == topic]


def messages_for(series: dict[str, np.ndarray], t0: float, period: float,
                 rng: np.random.Generator, chunk_p: float) -> list[RawMessage]:
    """Each entity's samples as singles and chunks, entities interleaved at random, each
    entity's own order kept (as Kafka keeps it within a partition)."""
    per_entity: dict[str, list[bytes]] = {}
    for name, values in series.items():
        out, i = [], 0
        while i < len(values):
            n = int(rng.integers(2, 9)) if rng.random() < chunk_p else 1
            n = min(n, len(values) - i)
            ts = t0 + i * period
            if n == 1 and rng.random() < 0.7:
                body = {"entity_id": name, "ts": ts, "values": values[i].tolist()}
            else:
                body = {"entity_id": name, "ts": ts, "period": period,
                        "values": values[i:i + n].tolist()}
            out.append(orjson.dumps(body))
            i += n
        per_entity[name] = out
    order = [name for name, payloads in per_entity.items() for _ in payloads]
    rng.shuffle(order)
    cursor = dict.fromkeys(per_entity, 0)
    msgs = []
    for offset, name in enumerate(order):
        value = per_entity[name][cursor[name]]
        cursor[name] += 1
        msgs.append(RawMessage(value, name.encode(), "events", 0, offset))
    return msgs


def run_batches(engine: Engine, store: MemoryStateStore, msgs: list[RawMessage],
                sizes: list[int], metrics: Metrics | None = None) -> Sink:
    sink = Sink()
    pipeline = Pipeline(engine, store, sink, TOPICS, metrics)

    async def go() -> None:
        at = 0
        for size in sizes:
            await pipeline.process(msgs[at:at + size])
            at += size
        assert at >= len(msgs)

    asyncio.run(go())
    return sink


def cut(n: int, rng: np.random.Generator) -> list[int]:
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 40)))
    return sizes


@pytest.mark.parametrize(("cell", "layers"), [("gru", 1), ("lstm", 2), ("rnn", 1)])
def test_streamed_forecasts_equal_one_offline_forward_per_entity(tmp_path, bundled_data, cell,
                                                                 layers):
    torch.set_num_threads(1)
    rng = np.random.default_rng(7)
    series = {f"rec{r}@{start}": ecg(bundled_data, r, start, int(rng.integers(40, 120)))
              for r, start in (("100", 5000), ("106", 5000), ("215", 5000), ("100", 60000),
                               ("215", 60000))}
    art_dir = make_artifact(tmp_path / "art", cell=cell, layers=layers, hidden=12, horizon=4,
                            sample=np.concatenate(list(series.values())))
    engine = Engine(load_artifact(art_dir), warmup_steps=0, max_gap_s=0,
)
    metrics = Metrics(CollectorRegistry())
    msgs = messages_for(series, 1_700_000_000.0, 1 / 360, rng, chunk_p=0.4)
    store = MemoryStateStore()
    sink = run_batches(engine, store, msgs, cut(len(msgs), rng), metrics)

    streamed: dict[str, list[tuple[float, list, float | None]]] = {n: [] for n in series}
    for rec in sink.of("p"):
        if "period" in rec:
            for i, (fc, sc) in enumerate(zip(rec["forecast"], rec["score"], strict=True)):
                streamed[rec["entity_id"]].append((rec["ts"] + i * rec["period"], fc, sc))
        else:
            streamed[rec["entity_id"]].append((rec["ts"], rec["forecast"], rec["score"]))
    codec = StateCodec(engine.model.state_size, 2)
    blobs = asyncio.run(store.load(list(series)))
    states, found = codec.decode(blobs)
    assert found.all()
    for k, (name, values) in enumerate(series.items()):
        forecasts, scores = offline_forecasts(art_dir, values)
        got = streamed[name]
        assert len(got) == len(values), name
        ts = np.array([g[0] for g in got])
        assert np.all(np.diff(ts) > 0)
        np.testing.assert_allclose(np.array([g[1] for g in got]), forecasts, rtol=1e-5,
                                   atol=1e-5)
        got_scores = np.array([np.nan if g[2] is None else g[2] for g in got])
        assert got[0][2] is None and all(g[2] is not None for g in got[1:])
        np.testing.assert_allclose(got_scores[1:], scores[1:], rtol=1e-4, atol=1e-5)
        # the saved state is the state after the last sample of the offline run
        art = load_artifact(art_dir)
        with torch.no_grad():
            _, final = art.model(torch.from_numpy(art.scale(values))[None])
        np.testing.assert_allclose(states["state"][k], art.model.pack_state(final)[0].numpy(),
                                   rtol=1e-5, atol=1e-6)
        assert int(states["steps"][k]) == len(values)
    m = metrics
    assert m.registry.get_sample_value("seqstream_events_total") == len(msgs)
    assert m.registry.get_sample_value("seqstream_samples_total") == sum(
        len(v) for v in series.values())
    assert m.registry.get_sample_value("seqstream_predictions_total") == len(msgs)


def test_every_record_the_engine_writes_matches_its_json_schema(tmp_path, bundled_data):
    import jsonschema

    rng = np.random.default_rng(3)
    series = {"a": ecg(bundled_data, "100", 0, 30), "b": ecg(bundled_data, "106", 0, 30)}
    art_dir = make_artifact(tmp_path / "art", sample=np.concatenate(list(series.values())),
                            threshold=0.0)  # everything after warm-up is flagged
    engine = Engine(load_artifact(art_dir), warmup_steps=5, max_gap_s=0)
    msgs = messages_for(series, 1_700_000_000.0, 0.01, rng, chunk_p=0.5)
    msgs.append(RawMessage(b'{"entity_id": "a", "ts": 1, "values": [1, 2], "x": 1}', b"a",
                           "events", 3, 99))
    sink = run_batches(engine, MemoryStateStore(), msgs, [len(msgs)])
    predictions, anomalies, dead = sink.of("p"), sink.of("a"), sink.of("d")
    assert len(predictions) == len(msgs) - 1 and len(dead) == 1
    assert dead[0]["reason"] == "extra_field" and dead[0]["offset"] == 99
    # warm-up: the first 5 samples of each entity are never flagged, all later ones are
    assert len(anomalies) == sum(len(v) - 5 for v in series.values())
    for rec in predictions + anomalies:
        jsonschema.validate(rec, schema("prediction"))
    jsonschema.validate(dead[0], schema("deadletter"))
