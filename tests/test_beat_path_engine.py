"""The engine's beat path (``stream.beatstep``) for an artifact with a beat stage (seeded,
untrained: the glue is under test, not the classifier): cut into any batches and chunks, the beat
records equal the offline replay's (one beat-stage call over the whole series): R peak samples,
times and decision times exactly, p_abnormal to 1e-5, classes and flags equal; flagged beats also
go to the anomalies topic; the beat row lives in the entity's state and restarts with it after a
gap; a state without a beat part is a counted ``version`` reset. Pure logic: in-memory store,
records collected in a list (the real worker on the real stack: test_beats_worker_matches_offline).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
import torch
from streamkit import REPO, beat_stage, live_slots, make_artifact
from test_batched_steps_match_offline import TOPICS, Sink, cut, messages_for, run_batches

from stream.artifact import load_artifact
from stream.engine import Engine, RawMessage
from stream.metrics import CollectorRegistry, Metrics
from stream.offline import replay, replay_beats
from stream.pipeline import Pipeline
from stream.records import schema
from stream.state import MemoryStateStore, StateCodec

BUNDLED = REPO / "training" / "bundled" / "mitdb"
PERIOD = 1 / 360


def bundled(record: str, start: int, n: int) -> np.ndarray:
    import wfdb

    rec = wfdb.rdrecord(str(BUNDLED / record), sampfrom=start, sampto=start + n)
    return np.asarray(rec.p_signal, dtype=np.float64)


def sample_times(msgs: list[RawMessage]) -> dict[str, list[float]]:
    """Each entity's sample times as the engine computes them (``ts + period * k`` in a chunk)."""
    out: dict[str, list[float]] = {}
    for m in msgs:
        body = orjson.loads(m.value)
        times = out.setdefault(body["entity_id"], [])
        if "period" in body:
            times.extend(body["ts"] + body["period"] * k for k in range(len(body["values"])))
        else:
            times.append(body["ts"])
    return out


def assert_beats_equal(got: list[dict], want: list[dict]) -> None:
    assert [(b["sample"], b["ts"], b["decided_ts"]) for b in got] == \
        [(b["sample"], b["ts"], b["decided_ts"]) for b in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g["p_abnormal"], w["p_abnormal"], rtol=0, atol=1e-5)
        assert (g["class"], g["anomaly"], g["rr"], g["kind"], g["threshold"], g["model_id"],
                g["irregular"]) == \
            (w["class"], w["anomaly"], w["rr"], w["kind"], w["threshold"], w["model_id"],
             w["irregular"])


@pytest.fixture
def series() -> dict[str, np.ndarray]:
    return {"r106": bundled("106", 20_000, 5000), "r100": bundled("100", 3000, 4000),
            "r106b": bundled("106", 300_000, 4500)}


def beat_engine(tmp_path: Path, series: dict[str, np.ndarray], **kw) -> Engine:
    art = load_artifact(make_artifact(
        tmp_path / "art", hidden=12, threshold=2.0, sample=np.concatenate(list(series.values())),
        beats=beat_stage([v[:, 0] for v in series.values()])))
    return Engine(art, **{"warmup_steps": 0, "max_gap_s": 0, **kw})


def test_beats_in_any_batches_and_chunks_equal_the_offline_replay(tmp_path, series):
    torch.set_num_threads(1)
    rng = np.random.default_rng(16)
    engine = beat_engine(tmp_path, series)
    msgs = messages_for(series, 1_700_000_000.0, PERIOD, rng, chunk_p=0.6)
    store = MemoryStateStore()
    metrics = Metrics(CollectorRegistry())
    sink = run_batches(engine, store, msgs, cut(len(msgs), rng), metrics)
    beats = sink.of("b")
    times = sample_times(msgs)
    flagged = 0
    for name, values in series.items():
        want = replay_beats(engine.artifact, name, values, np.array(times[name]))
        got = [b for b in beats if b["entity_id"] == name]
        assert want, f"{name}: no beat detected; the comparison would be empty"
        assert_beats_equal(got, want)
        flagged += sum(b["anomaly"] for b in want)
    assert flagged > 0
    for b in beats:
        jsonschema.validate(b, schema("beat"))
    # flagged beats also on the anomalies topic, the same record; sample flags keep their form
    anomalies = sink.of("a")
    assert [a for a in anomalies if a.get("kind") == "beat"] == [b for b in beats if b["anomaly"]]
    sample_flags = [a for a in anomalies if "kind" not in a]
    assert sample_flags and all("score" in a for a in sample_flags)
    reg = metrics.registry
    assert reg.get_sample_value("seqstream_beats_total") == len(beats)
    by_class = {c: reg.get_sample_value("seqstream_abnormal_beats_total", {"class": c})
                for c in "NSVF"}
    assert sum(by_class.values()) == flagged
    assert reg.get_sample_value("seqstream_anomalies_total") == len(sample_flags)
    # the stored beat row is the offline stage's after the whole series
    stage = engine.artifact.beats
    codec = StateCodec(engine.model.state_size, 2, stage.state_dtype)
    states, found = codec.decode(asyncio.run(store.load(list(series))))
    assert found.all()
    for k, values in enumerate(series.values()):
        offline = stage.initial(1)
        stage.process(offline, [values[:, 0].copy()], [replay(engine.artifact, values).scores])
        assert live_slots(states["beat"]["feat"][k:k + 1]).tobytes() == \
            live_slots(offline["feat"]).tobytes()
        np.testing.assert_allclose(states["beat"]["hidden"][k], offline["hidden"][0], rtol=0,
                                   atol=1e-5)


def test_a_gap_restarts_the_beat_stage_within_a_batch_and_across_batches(tmp_path, series):
    values = series["r106"]
    engine = beat_engine(tmp_path, series, max_gap_s=5.0)
    split = 2600
    t0, t1 = 1_700_000_000.0, 1_700_000_100.0  # 100 s apart: a gap reset
    ts = np.concatenate([t0 + PERIOD * np.arange(split),
                         t1 + PERIOD * np.arange(len(values) - split)])
    starts = [*range(0, split, 7), *range(split, len(values), 7)]  # 7-sample chunks, cut at it
    payloads = []
    for lo, hi in zip(starts, [*starts[1:], len(values)], strict=True):
        body = {"entity_id": "g", "ts": float(ts[lo]), "period": PERIOD,
                "values": values[lo:hi].tolist()}
        payloads.append(RawMessage(orjson.dumps(body), b"g", "events", 0, len(payloads)))
    times = sample_times(payloads)["g"]
    want = (replay_beats(engine.artifact, "g", values[:split], times[:split])
            + replay_beats(engine.artifact, "g", values[split:], times[split:]))
    after = [b for b in want if b["ts"] >= t1]
    # beats on both sides; after the gap, samples count from the reset
    assert after and len(after) < len(want) and after[0]["sample"] < len(values) - split
    metrics = Metrics(CollectorRegistry())
    for sizes in ([len(payloads)], [120, 250, len(payloads)]):  # the gap inside one batch, or not
        sink = run_batches(engine, MemoryStateStore(), payloads, sizes, metrics)
        assert_beats_equal(sink.of("b"), want)
    assert metrics.registry.get_sample_value("seqstream_resets_total", {"reason": "gap"}) == 2


def test_a_state_without_the_beat_part_is_a_counted_version_reset(tmp_path, series):
    values = series["r100"]
    engine = beat_engine(tmp_path, series)
    older = StateCodec(engine.model.state_size, 2)  # the version-2 layout: no beat part
    rows = older.empty(1)
    rows["version"], rows["wm_ts"], rows["steps"] = 2, 1e12, 999
    store = MemoryStateStore()
    asyncio.run(store.save({"e": older.encode(rows)[0]}))
    body = {"entity_id": "e", "ts": 100.0, "period": PERIOD, "values": values.tolist()}
    metrics = Metrics(CollectorRegistry())
    sink = run_batches(engine, store, [RawMessage(orjson.dumps(body), b"e", "ev", 0, 0)], [1],
                       metrics)
    reg = metrics.registry
    assert reg.get_sample_value("seqstream_resets_total", {"reason": "version"}) == 1
    assert reg.get_sample_value("seqstream_resets_total", {"reason": "corrupt"}) == 0
    # every sample applied from the stage's initial row: the offline replay's beats
    want = replay_beats(engine.artifact, "e", values, 100.0 + PERIOD * np.arange(len(values)))
    assert want
    assert_beats_equal(sink.of("b"), want)


class CrashingSave(MemoryStateStore):
    """A store whose saves fail like a process killed between the sends and the save."""

    async def save(self, states, partitions=None, checkpoints=None):
        raise RuntimeError("killed before the save")


def test_beats_sent_but_not_saved_are_decided_again_identically(tmp_path, series):
    """At-least-once: a batch whose records were acknowledged but whose states were not saved is
    consumed again after a restart and yields the same beat records, then continues as if
    nothing happened."""
    rng = np.random.default_rng(3)
    engine = beat_engine(tmp_path, series)
    msgs = messages_for(series, 1_700_000_000.0, PERIOD, rng, chunk_p=0.8)
    store = MemoryStateStore()
    half = len(msgs) // 2
    before = run_batches(engine, store, msgs[:half], [half])
    crashing = CrashingSave()
    crashing._data = dict(store._data)  # the states saved before the crash
    sent = Sink()
    with pytest.raises(RuntimeError, match="killed"):
        asyncio.run(Pipeline(engine, crashing, sent, TOPICS).process(msgs[half:half + 400]))
    first = sent.of("b")
    assert first, "the interrupted batch decided no beat; nothing would be compared"
    # the restart: the same messages from the states saved before the crash
    replayed = run_batches(engine, store, msgs[half:], [400, len(msgs) - half - 400])
    assert replayed.of("b")[:len(first)] == first
    times = sample_times(msgs)
    for name, values in series.items():
        want = replay_beats(engine.artifact, name, values, np.array(times[name]))
        got = [b for b in before.of("b") + replayed.of("b") if b["entity_id"] == name]
        assert_beats_equal(got, want)
