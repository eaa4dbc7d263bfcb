"""The pipelines under test, each run in its own process by :mod:`bench.proc`.

All read the same input topic (key = entity id) and write one output record per event to
their output topic, so the harness measures them the same way:

- ``bare`` (a): an aiokafka consumer feeding a producer — no parsing, no state, no model; the
  practical limit of Kafka plus Python on this machine;
- ``naive`` (b): a faust agent that handles one event at a time as a textbook loop would:
  Redis GET, a batch-of-one model step (a chunk runs as one sequence), Redis SET, ``Topic.send``;
- ``worker`` (c): ``seqstream worker`` itself, started as a user starts it;
- ``take``: a faust agent over ``stream.take_events`` driving :class:`stream.engine.Engine` —
  how the batch processor is fed "as usually written";
- ``fast``: the same engine fed by :mod:`stream.fastpath` (batches taken below faust's per-event
  path, faust's group, offsets and commits kept);
- ``plain`` (d): a plain aiokafka loop (no faust) driving the same engine.

``take``, ``fast`` and ``plain`` share :func:`process_batch`: validate and group (``prepare``),
load the batch's states in one round trip, one network call (``apply``), send every record, wait
for Kafka's acknowledgements, save the states in one round trip — and only then let the offsets
be committed, the order the worker's crash contract needs.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PIPELINES", "Config", "process_batch", "run"]

QUIET_LOGGERS = ("faust", "aiokafka", "mode", "kafka")


@dataclass
class Config:
    """Everything a pipeline process needs (passed as JSON on its command line)."""

    pipeline: str
    bootstrap: str
    topic_in: str
    topic_out: str
    group: str
    redis_url: str = "redis://127.0.0.1:6379/0"
    model: str | None = None
    topic_anomalies: str | None = None
    topic_deadletter: str | None = None
    batch_max: int = 1000
    within_ms: int = 20
    partitions: int = 4
    env: dict[str, str] = field(default_factory=dict)


# (topic, [(key, value), ...]) -> futures that resolve when Kafka acknowledges
SendMany = Callable[[str, Sequence[tuple[bytes | None, bytes]]], Awaitable[list[Any]]]


async def process_batch(engine: Any, store: Any, send: SendMany, cfg: Config,
                        records: Sequence[Any]) -> int:
    """One batch through the engine; returns predictions sent. See the module docstring."""
    batch = engine.prepare(records)
    blobs = await store.load(batch.entity_ids) if batch.entity_ids else []
    out = engine.apply(batch, blobs)
    futures = await send(cfg.topic_out, out.predictions)
    if cfg.topic_anomalies and out.anomalies:
        futures += await send(cfg.topic_anomalies, out.anomalies)
    if cfg.topic_deadletter and out.deadletters:
        futures += await send(cfg.topic_deadletter, out.deadletters)
    if futures:
        await asyncio.gather(*futures)
    if out.states:
        await store.save(out.states)
    return len(out.predictions)


def _engine_and_store(cfg: Config) -> tuple[Any, Any]:
    import redis.asyncio

    from stream.artifact import load_artifact
    from stream.engine import Engine
    from stream.state import RedisStateStore, namespace

    if cfg.model is None:
        raise ValueError(f"pipeline {cfg.pipeline}: expected a model artifact, got none")
    artifact = load_artifact(cfg.model)
    engine = Engine(artifact, warmup_steps=0, max_gap_s=0, check_key=True)
    client = redis.asyncio.Redis.from_url(cfg.redis_url)
    store = RedisStateStore(client, namespace(cfg.group, artifact.model_id))
    return engine, store


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _aiokafka_loop(cfg: Config, handle: Callable[[Any, Sequence[Any]], Awaitable[None]],
                         producer_kwargs: dict[str, Any] | None = None) -> None:
    """Consume → ``handle(producer, records)`` → commit, until SIGTERM."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    stop = _stop_event()
    consumer = AIOKafkaConsumer(cfg.topic_in, bootstrap_servers=cfg.bootstrap, group_id=cfg.group,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20)
    producer = AIOKafkaProducer(bootstrap_servers=cfg.bootstrap, acks=1, linger_ms=1,
                                max_batch_size=1 << 20, **(producer_kwargs or {}))
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=cfg.batch_max)
            records = [r for recs in fetched.values() for r in recs]
            if not records:
                continue
            await handle(producer, records)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


async def run_bare(cfg: Config) -> None:
    """(a) Forward every record's key and value; no parsing, state or model."""
    from stream.batchsend import BatchSender

    senders: dict[int, BatchSender] = {}

    async def handle(producer: Any, records: Sequence[Any]) -> None:
        sender = senders.setdefault(id(producer), BatchSender(producer))
        await asyncio.gather(*await sender.send(cfg.topic_out, [(r.key, r.value)
                                                                for r in records]))

    await _aiokafka_loop(cfg, handle)


async def run_plain(cfg: Config) -> None:
    """(d) The engine in a plain aiokafka loop."""
    from stream.batchsend import BatchSender

    engine, store = _engine_and_store(cfg)
    senders: dict[int, BatchSender] = {}

    async def handle(producer: Any, records: Sequence[Any]) -> None:
        sender = senders.setdefault(id(producer), BatchSender(producer))
        await process_batch(engine, store, sender.send, cfg, records)

    try:
        await _aiokafka_loop(cfg, handle)
    finally:
        await store.close()


def _faust_app(cfg: Config) -> Any:
    import faust

    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return faust.App(cfg.group, broker=f"kafka://{cfg.bootstrap}", value_serializer="raw",
                     key_serializer="raw", web_enabled=False, topic_allow_declare=False,
                     topic_partitions=cfg.partitions, consumer_auto_offset_reset="earliest",
                     store="memory://", producer_linger=0.001,
                     producer_max_batch_size=1 << 20, loghandlers=[])


def _faust_sender(app: Any) -> SendMany:
    """``app.producer.send`` per record (cheaper than ``Topic.send``, which wraps each record in
    a ``FutureMessage``); how a faust agent usually sends."""
    producer = app.producer

    async def send(topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
        return [await producer.send(topic, k, v, None, None, None) for k, v in records]

    return send


def _batch_sender(app: Any) -> SendMany:
    """:class:`stream.batchsend.BatchSender` over the app's own aiokafka producer."""
    from stream.batchsend import BatchSender

    holder: list[BatchSender] = []

    async def send(topic: str, records: Sequence[tuple[bytes | None, bytes]]) -> list[Any]:
        if not holder:
            holder.append(BatchSender(app.producer._ensure_producer()))
        return await holder[0].send(topic, records)

    return send


def _run_faust(app: Any) -> None:
    import faust

    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


def run_take(cfg: Config) -> None:
    """A faust agent over ``stream.take_events`` driving the engine."""
    app = _faust_app(cfg)
    topic = app.topic(cfg.topic_in, key_type=bytes, value_type=bytes)
    engine, store = _engine_and_store(cfg)
    send = _faust_sender(app)

    @app.agent(topic)
    async def agent(stream: Any) -> None:
        async for events in stream.take_events(cfg.batch_max, within=cfg.within_ms / 1000):
            await process_batch(engine, store, send, cfg, [e.message for e in events])

    _run_faust(app)


def run_fast(cfg: Config) -> None:
    """The engine fed by :mod:`stream.fastpath` batches inside a faust app."""
    from stream import fastpath

    app = _faust_app(cfg)
    topic = app.topic(cfg.topic_in, key_type=bytes, value_type=bytes)
    engine, store = _engine_and_store(cfg)
    source = fastpath.install(app, topic, max_batch=cfg.batch_max)
    send = _batch_sender(app)

    async def handle(records: Sequence[Any]) -> None:
        await process_batch(engine, store, send, cfg, records)

    @app.task
    async def consume() -> None:
        await fastpath.run_batches(source, handle)

    _run_faust(app)


def run_naive(cfg: Config) -> None:
    """(b) One event at a time: GET, step, SET, send (a textbook faust agent)."""
    import numpy as np
    import redis.asyncio
    import torch

    from stream.artifact import load_artifact
    from stream.errors import RecordError
    from stream.records import parse_event
    from stream.scoring import score

    app = _faust_app(cfg)
    topic = app.topic(cfg.topic_in, key_type=bytes, value_type=bytes)
    out_topic = app.topic(cfg.topic_out, key_type=bytes, value_type=bytes)
    artifact = load_artifact(cfg.model)  # type: ignore[arg-type]
    net, f = artifact.model, artifact.n_features
    residual_scale = np.asarray(artifact.card["score"]["residual_scale"], dtype=np.float64)
    client = redis.asyncio.Redis.from_url(cfg.redis_url)
    prefix = f"{cfg.group}:naive:"
    size = net.state_size
    import orjson

    @app.agent(topic)
    async def agent(stream: Any) -> None:
        async for event in stream.events():
            try:
                e = parse_event(event.value, f, key=event.key, check_key=True)
            except RecordError:
                continue
            key = prefix + e.entity_id
            blob = await client.get(key)
            if blob is None:
                h, prev = torch.zeros(1, size), None
            else:
                row = np.frombuffer(blob, dtype=np.float32)
                h, prev = torch.from_numpy(row[:size].copy())[None], row[size:]
            x = torch.from_numpy(artifact.scale(np.asarray(e.rows, dtype=np.float64)))
            with torch.inference_mode():
                y, state = net(x[None], net.unpack_state(h))
                h = net.pack_state(state)
            y0 = y[0, :, 0].numpy()  # [T, F] 1-step forecasts
            s = None if prev is None else float(score(x[0].numpy() - prev, residual_scale))
            await client.set(key, h.numpy().tobytes() + y0[-1].astype(np.float32).tobytes())
            record = {"entity_id": e.entity_id, "ts": e.ts, "score": s,
                      "forecast": artifact.unscale(y[0, -1].numpy()).tolist()}
            await out_topic.send(key=event.key, value=orjson.dumps(record))

    _run_faust(app)


def run_worker(cfg: Config) -> None:
    """(c) ``seqstream worker`` as a user runs it (settings from ``cfg.env``)."""
    import os
    import sys

    os.environ.update(cfg.env)
    from seqstream.cli import main

    sys.exit(main(["worker", "--model", str(Path(cfg.model or ""))]))


PIPELINES: dict[str, Callable[[Config], Any]] = {
    "bare": run_bare, "naive": run_naive, "worker": run_worker, "take": run_take,
    "fast": run_fast, "plain": run_plain,
}


def run(cfg: Config) -> None:
    """Run ``cfg.pipeline`` in this process until SIGTERM."""
    target = PIPELINES[cfg.pipeline]
    result = target(cfg)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
