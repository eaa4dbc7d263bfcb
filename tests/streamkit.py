"""Helpers for the stream worker's tests: a small artifact, real ECG slices, event payloads, an
offline reference, Kafka produce/consume, and a worker subprocess that can be killed.

Test artifacts are small randomly initialised networks saved with ``stream.artifact.save_artifact``
(training is separate); their scaler comes from the real ECG they will see, so the numbers flowing
through the pipeline are realistic.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from seqstream import workerproc
from stream.artifact import load_artifact, save_artifact
from stream.beatnet import BeatNet
from stream.beats import FEATURES, BeatFeatures, BeatStage, offline_beats
from stream.model import Forecaster

__all__ = [
    "REPO",
    "EndOffsets",
    "EventSet",
    "WorkerProcess",
    "assert_predictions_match",
    "assert_states_equal",
    "beat_stage",
    "consume",
    "create_topics",
    "ecg",
    "free_port",
    "live_slots",
    "make_artifact",
    "offline_forecasts",
    "produce",
    "redis_states",
    "reference_run",
    "single",
    "topic_names",
]

REPO = Path(__file__).resolve().parents[1]
PROFILE: list[str] = []  # e.g. ["-m", "cProfile", "-o", "/tmp/worker.prof"] when measuring


def ecg(data: Path, record: str, start: int, n: int) -> np.ndarray:
    """``n`` two-lead MIT-BIH samples (mV) of ``record`` in ``data/mitdb`` from ``start``."""
    import wfdb

    rec = wfdb.rdrecord(str(data / "mitdb" / record), sampfrom=start, sampto=start + n)
    return np.asarray(rec.p_signal, dtype=np.float64)


def make_artifact(directory: Path, *, cell: str = "gru", hidden: int = 16, layers: int = 1,
                  horizon: int = 3, seed: int = 0, threshold: float | None = 4.0,
                  sample: np.ndarray | None = None, n_features: int = 2,
                  residual_scale: Sequence[float] | None = None,
                  entity_scale: dict | None = None, beats: BeatStage | None = None,
                  sensor: dict | None = None, period_s: float = 1 / 360) -> Path:
    """A randomly initialised Forecaster saved as an artifact; scaler from ``sample`` if given;
    ``entity_scale`` becomes the card's ``score.entity_scale`` section, ``sensor`` its
    ``score.sensor``; ``threshold`` None leaves the card none; ``beats`` a beat stage on
    feature 0 (MLII in most MIT-BIH records)."""
    torch.manual_seed(seed)
    model = Forecaster(cell, n_features=n_features, hidden_size=hidden, num_layers=layers,
                       horizon=horizon).eval()
    if sample is not None:
        mean, std = sample.mean(axis=0).tolist(), (sample.std(axis=0) + 1e-3).tolist()
    else:
        mean, std = [0.0] * n_features, [1.0] * n_features
    card = {
        "features": [{"name": f"lead{i}", "unit": "mV"} for i in range(n_features)],
        "scaler": {"mean": mean, "std": std},
        "period_s": period_s,
        "score": {"kind": "rms_z",
                  "residual_scale": list(residual_scale or [0.5] * n_features),
                  **({"entity_scale": entity_scale} if entity_scale else {}),
                  **({"sensor": sensor} if sensor else {})},
        "threshold": {} if threshold is None else {"value": threshold},
        "data": {"source": "random initialisation for tests"},
        "metrics": {},
        "version": "test",
    }
    if beats is not None:
        card["beats"] = {"lead": "lead0"}
    save_artifact(model, card, directory, beats=beats)
    return directory


def beat_stage(leads: Sequence[np.ndarray], seed: int = 7) -> BeatStage:
    """A seeded, untrained beat stage (the real features and network) normalised on ``leads``
    (MLII, mV), its threshold at their median ``p_abnormal`` so that both flags and non-flags
    occur (training is separate)."""
    torch.manual_seed(seed)
    feats = BeatFeatures(360.0)
    rows = np.concatenate([np.stack([b.features for b in feats.extract(feats.initial(1), [x])[0]])
                           for x in leads])
    net = BeatNet(len(FEATURES), hidden_size=8, embed_size=8)
    stage = BeatStage(feats, net, rows.mean(0), np.maximum(rows.std(0), 1e-6), 0.5)
    stage.threshold = float(np.median([b.p_abnormal for x in leads
                                       for b in offline_beats(stage, x)]))
    return stage


def offline_forecasts(artifact_dir: Path, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """User-unit forecasts ``[T, H, F]`` and 1-step scores ``[T]`` (NaN first) of one
    ``model.forward`` over the whole sequence: the reference a stream must reproduce."""
    from stream.scoring import score

    art = load_artifact(artifact_dir)
    scaled = art.scale(np.asarray(values, dtype=np.float64))
    with torch.no_grad():
        y, _ = art.model(torch.from_numpy(scaled)[None])
    y = y[0].numpy()
    scores = np.full(len(values), np.nan)
    scores[1:] = score(scaled[1:].astype(np.float64) - y[:-1, 0].astype(np.float64),
                       art.residual_scale)
    return art.unscale(y), scores


def single(entity: str, ts: float, values: Iterable[float]) -> tuple[bytes, bytes]:
    """(key, value) of a one-sample event."""
    return entity.encode(), orjson.dumps({"entity_id": entity, "ts": ts,
                                          "values": [float(v) for v in values]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topic_names(unique: str) -> dict[str, str]:
    """The worker's five topic settings, named after the test."""
    return {k: f"{unique}.{k}" for k in ("events", "predictions", "anomalies", "deadletter",
                                          "beats")}


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    """The worker's own topic creation (:func:`stream.kafka_access.ensure_topics`) at
    ``bootstrap`` with ``partitions`` partitions."""
    from stream.kafka_access import ensure_topics
    from stream.settings import Settings

    await ensure_topics(Settings(kafka_bootstrap=bootstrap, partitions=partitions), names)


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]],
                  ) -> list[tuple[int, int]]:
    """Send ``(key, value)`` records and wait for every ack; their (partition, offset)s."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                max_request_size=4 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in records]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


async def consume(bootstrap: str, topics: Sequence[str], until: Any, timeout: float,
                  ) -> dict[str, list[Any]]:
    """Read ``topics`` from the beginning (no group) until ``until(records_by_topic)`` is true
    or ``timeout`` passes; values are decoded JSON, in partition order per topic."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    got: dict[str, list[Any]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    try:
        while not until(got) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, messages in batch.items():
                got[tp.topic].extend(json.loads(m.value) for m in messages)
    finally:
        await consumer.stop()
    return got


class WorkerProcess(workerproc.WorkerProcess):
    """``python -m seqstream worker`` on the test's private topics and group, in a subprocess
    (so a test can ``kill -9`` it); a worker that ignores SIGTERM fails the test."""

    def __init__(self, artifact: Path, unique: str, log_dir: Path, *, bootstrap: str,
                 redis_url: str, partitions: int = 4, batch_max: int = 500,
                 warmup_steps: int = 0, max_gap_s: float = 60.0,
                 app_id: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTREAM_")}
        env.update(workerproc.settings_env(
            kafka_bootstrap=bootstrap, redis_url=redis_url,
            **{f"topic_{k}": v for k, v in topic_names(unique).items()},
            partitions=partitions, app_id=app_id or unique, batch_max=batch_max,
            warmup_steps=warmup_steps, max_gap_s=max_gap_s, metrics_port=0,
            home=log_dir / "home",
            state_ttl_s=3600))  # test states clean themselves up
        env.update({"OMP_NUM_THREADS": "1", "BROKER_SESSION_TIMEOUT": "6",
                    "BROKER_HEARTBEAT_INTERVAL": "1", **(extra_env or {})})
        super().__init__(workerproc.worker_argv(artifact, PROFILE), env, log_dir,
                         name=f"worker-{id(self)}", cwd=REPO)
        self.artifact = artifact

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code (0 if never started)."""
        code = super().stop(timeout)
        if self.killed:
            raise AssertionError(f"worker ignored SIGTERM for {timeout} s:\n"
                                 f"{self.log()[-3000:]}")
        return 0 if code is None else code


# -- event sets and the uninterrupted reference run ------------------------------------------

class EventSet:
    """Real ECG events for many entities, each a time-ordered mix of singles and chunks; entity
    ``k`` reads the records listed in ``data/mitdb/RECORDS`` in turn, each from its own offset."""

    def __init__(self, data: Path, entities: int, per_entity: int, t0: float,
                 chunk_every: int = 0, chunk_len: int = 4, period: float = 1 / 360,
                 prefix: str = "ecg") -> None:
        self.period = period
        self.values: dict[str, np.ndarray] = {}
        self.payloads: dict[str, list[bytes]] = {}
        self.samples: dict[str, list[float]] = {}  # ts of every sample, per entity
        records = (data / "mitdb" / "RECORDS").read_text().split()
        for k in range(entities):
            name = f"{prefix}-{k:04d}"
            record = records[k % len(records)]
            n_events = per_entity
            n_samples = n_events + (n_events // chunk_every) * (chunk_len - 1) if chunk_every \
                else n_events
            values = ecg(data, record, 1000 + 997 * k, n_samples)
            self.values[name] = values
            out, i, j = [], 0, 0
            while i < n_samples:
                ts = t0 + i * period
                if chunk_every and j % chunk_every == chunk_every - 1:
                    body = {"entity_id": name, "ts": ts, "period": period,
                            "values": values[i:i + chunk_len].tolist()}
                    i += chunk_len
                else:
                    body = {"entity_id": name, "ts": ts, "values": values[i].tolist()}
                    i += 1
                out.append(orjson.dumps(body))
                j += 1
            self.payloads[name] = out
            self.samples[name] = [t0 + i * period for i in range(n_samples)]

    def interleaved(self, seed: int = 0) -> list[tuple[bytes, bytes]]:
        """(key, value) of every event, entities interleaved at random, each in its order."""
        rng = np.random.default_rng(seed)
        order = [n for n, p in self.payloads.items() for _ in p]
        rng.shuffle(order)
        cursor = dict.fromkeys(self.payloads, 0)
        out = []
        for name in order:
            out.append((name.encode(), self.payloads[name][cursor[name]]))
            cursor[name] += 1
        return out

    @property
    def n_events(self) -> int:
        return sum(len(p) for p in self.payloads.values())


def reference_run(artifact_dir: Path, records: Sequence[tuple[bytes, bytes]],
                  sources: Sequence[tuple[int, int]], topic: str, warmup_steps: int = 0,
                  max_gap_s: float = 60.0, batch: int = 500) -> tuple[dict, dict[str, bytes]]:
    """The uninterrupted run: the same engine over the same messages in order, in memory.
    Returns (predictions by (entity, first ts), final state bytes by entity)."""
    from stream.engine import RawMessage
    from stream.settings import Settings
    from stream.state import MemoryStateStore
    from stream.worker import build_engine

    engine = build_engine(Settings(warmup_steps=warmup_steps, max_gap_s=max_gap_s),
                          load_artifact(artifact_dir))
    store = MemoryStateStore()
    msgs = [RawMessage(v, k, topic, p, o) for (k, v), (p, o) in zip(records, sources,
                                                                    strict=True)]
    predictions: dict = {}

    async def go() -> dict[str, bytes]:
        for lo in range(0, len(msgs), batch):
            b = engine.prepare(msgs[lo:lo + batch])
            out = engine.apply(b, await store.load(b.entity_ids))
            for _, value in out.predictions:
                rec = orjson.loads(value)
                predictions[(rec["entity_id"], rec["ts"])] = rec
            await store.save(out.states)
        names = sorted({k.decode() for k, _ in records})
        return dict(zip(names, await store.load(names), strict=True))

    states = asyncio.run(go())
    return predictions, states


def redis_states(redis_url: str, app_id: str, model_id: str, names: Sequence[str]
                 ) -> dict[str, bytes | None]:
    """The stored state of each of ``names``, on whichever partition it is kept."""
    import redis

    from stream.state import namespace, parse_key

    cluster = "+cluster://" in redis_url
    client: Any = (redis.RedisCluster.from_url(redis_url.replace("+cluster://", "://", 1))
                   if cluster else redis.Redis.from_url(redis_url))
    prefix = namespace(app_id, model_id)
    keys = {}
    for key in client.scan_iter(match="{" + prefix + ":*", count=1000):
        parsed = parse_key(key.decode())
        if parsed is not None and parsed[0] == prefix and parsed[2] in names:
            keys[parsed[2]] = key
    values = ([client.get(k) for k in keys.values()] if cluster  # MGET: one slot at a time
              else client.mget(list(keys.values())) if keys else [])
    found = dict(zip(keys, values, strict=True))
    client.close()
    return {n: found.get(n) for n in names}


def assert_states_equal(codec: Any, got: dict[str, bytes | None], want: dict[str, bytes],
                        atol: float = 1e-5) -> None:
    """Same steps, watermark and source offset exactly; float parts to ``atol`` (a batch of
    another composition rounds the last float32 bit differently); a beat stage's part too: its
    feature state exactly, its network's hidden state to ``atol``."""
    names = sorted(want)
    g, g_found = codec.decode([got[n] for n in names])
    w, w_found = codec.decode([want[n] for n in names])
    assert g_found.all() and w_found.all(), [n for n, f in zip(names, g_found, strict=True)
                                             if not f][:5]
    for field in ("version", "flags", "partition", "steps", "wm_ts", "wm_offset"):
        np.testing.assert_array_equal(g[field], w[field], err_msg=field)
    np.testing.assert_allclose(g["state"], w["state"], rtol=0, atol=atol)
    np.testing.assert_allclose(g["forecast"], w["forecast"], rtol=0, atol=atol)
    if "beat" in (g.dtype.names or ()):
        assert live_slots(g["beat"]["feat"]).tobytes() == live_slots(w["beat"]["feat"]).tobytes()
        np.testing.assert_allclose(g["beat"]["hidden"], w["beat"]["hidden"], rtol=0, atol=atol)


def live_slots(feat: np.ndarray) -> np.ndarray:
    """The beat features' state with the R peak queue's unused slots zeroed: the stage leaves
    popped entries there (never read again), so two equal states may differ in those bytes."""
    out = feat.copy()
    unused = np.arange(out["pending"].shape[1]) >= out["n_pending"][:, None]
    out["pending"][unused] = 0
    return out


def assert_predictions_match(got: Sequence[dict], want: dict, threshold: float,
                             atol: float = 1e-5) -> int:
    """Every wanted prediction arrived at least once and every copy equals it (forecasts and
    scores to ``atol``; flags exactly unless the score sits within ``atol`` of the threshold).
    Returns how many records were repeats."""
    seen: dict = {}
    for rec in got:
        key = (rec["entity_id"], rec["ts"])
        assert key in want, f"unexpected prediction {key}"
        ref = want[key]
        np.testing.assert_allclose(rec["forecast"], ref["forecast"], rtol=0, atol=atol,
                                   err_msg=str(key))
        s_got = np.array(rec["score"] if isinstance(rec["score"], list) else [rec["score"]],
                         dtype=float)
        s_ref = np.array(ref["score"] if isinstance(ref["score"], list) else [ref["score"]],
                         dtype=float)
        np.testing.assert_allclose(s_got, s_ref, rtol=0, atol=atol, err_msg=str(key))
        f_got = np.array(rec["anomaly"]).ravel()
        f_ref = np.array(ref["anomaly"]).ravel()
        near = np.abs(np.nan_to_num(s_ref, nan=-1) - threshold) < atol
        assert np.array_equal(f_got[~near], f_ref[~near]), key
        seen[key] = seen.get(key, 0) + 1
    missing = [k for k in want if k not in seen]
    assert not missing, f"{len(missing)} events without a prediction, e.g. {missing[:3]}"
    return sum(seen.values()) - len(seen)


class EndOffsets:
    """Sum of a topic's end offsets (records ever written), polled from a sync test."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from aiokafka import AIOKafkaConsumer

        self.topic = topic
        self.loop = asyncio.new_event_loop()

        async def start() -> Any:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
            await consumer.start()
            return consumer

        self.consumer = self.loop.run_until_complete(start())

    def total(self) -> int:
        from aiokafka import TopicPartition

        async def go() -> int:
            parts = self.consumer.partitions_for_topic(self.topic)
            if not parts:
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(self.topic) or set()
            ends = await self.consumer.end_offsets([TopicPartition(self.topic, p)
                                                    for p in parts])
            return sum(ends.values())

        return self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()
