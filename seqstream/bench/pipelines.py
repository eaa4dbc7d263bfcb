"""The pipelines under test, each run in its own process by :mod:`seqstream.bench.proc`.

All read the same input topic (key = entity id) and write one output record per event to their
output topic, so the harness measures them the same way:

- ``bare`` (a): an aiokafka consumer feeding a producer — no parsing, no state, no model; the
  practical limit of Kafka plus Python here (batched sends, commits behind the sends, no
  producer linger, short fetch waits);
- ``naive`` (b): a faust agent that handles one event at a time as a textbook loop would:
  Redis GET, a batch-of-one model step (a chunk runs as one sequence), Redis SET, ``Topic.send``;
- ``worker`` (c): ``seqstream worker`` itself, started as a user starts it (its faust app fed by
  :mod:`stream.fastpath` driving :class:`stream.pipeline.Pipeline`);
- ``plain`` (d): a plain aiokafka loop (no faust) driving the very same
  :class:`stream.pipeline.Pipeline` — engine, Redis store, metrics and batched sends — with the
  worker's settings, committing after every batch.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FETCH_WAIT_MS", "LETTERS", "PIPELINES", "Config", "run"]

log = logging.getLogger("seqstream.bench.pipelines")
LETTERS = {"bare": "a", "naive": "b", "worker": "c", "plain": "d"}


@dataclass
class Config:
    """Everything a pipeline process needs (passed as JSON on its command line); ``env`` holds
    the ``SEQSTREAM_*`` settings, which every pipeline reads like the worker does."""

    pipeline: str
    model: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.env.get("SEQSTREAM_APP_ID", "seqstream")

    @property
    def topic_in(self) -> str:
        return self.env.get("SEQSTREAM_TOPIC_EVENTS", "seqstream.events")

    @property
    def topic_out(self) -> str:
        return self.env.get("SEQSTREAM_TOPIC_PREDICTIONS", "seqstream.predictions")


def _settings(cfg: Config) -> Any:
    from stream.settings import Settings

    return Settings.from_env(cfg.env, overrides={"model": cfg.model})


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


FETCH_WAIT_MS = 5
"""How long the broker may hold a fetch that finds nothing new (aiokafka's default is 500 ms):
a record appended meanwhile answers the fetch at once either way, but a short wait keeps the
next fetch close behind each batch, so the bare pipe shows Kafka's own latency floor here."""


async def _aiokafka_loop(settings: Any,
                         handle: Callable[[Any, Sequence[Any]], Awaitable[None]],
                         commit_behind: bool = False) -> None:
    """Consume → ``handle(producer, records)`` → commit, batch after batch, until SIGTERM;
    configured for latency (no producer linger, :data:`FETCH_WAIT_MS`). ``commit_behind``: the
    next fetch does not wait for the commit (one in flight, each covering every batch handled
    before it; the last one awaited at the end), as a worker committing on a timer does not."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from stream.security import kafka_kwargs

    stop = _stop_event()
    consumer = AIOKafkaConsumer(settings.topic_events, **kafka_kwargs(settings),
                                group_id=settings.app_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
                                fetch_max_wait_ms=FETCH_WAIT_MS)
    producer = AIOKafkaProducer(**kafka_kwargs(settings), acks="all", linger_ms=0,
                                max_batch_size=1 << 20)
    await producer.start()
    await consumer.start()
    handled: dict[Any, int] = {}  # partition → next offset to read, every batch handled
    commit: asyncio.Task | None = None
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=200, max_records=settings.batch_max)
            records = [r for recs in fetched.values() for r in recs]
            if not records:
                continue
            await handle(producer, records)
            if not commit_behind:
                await consumer.commit()
                continue
            handled.update({tp: recs[-1].offset + 1 for tp, recs in fetched.items() if recs})
            if commit is None or commit.done():
                if commit is not None:
                    commit.result()  # a failed commit stops the pipe, as an awaited one would
                commit = asyncio.ensure_future(consumer.commit(dict(handled)))
        if commit is not None:
            await commit
        if handled:
            await consumer.commit(dict(handled))
    finally:
        await consumer.stop()
        await producer.stop()


async def run_bare(cfg: Config) -> None:
    """(a) Forward every record's key and value; no parsing, state or model."""
    from stream.batchsend import BatchSender

    settings = _settings(cfg)
    senders: dict[int, BatchSender] = {}

    async def handle(producer: Any, records: Sequence[Any]) -> None:
        sender = senders.setdefault(id(producer), BatchSender(producer))
        futures = await sender.send(settings.topic_predictions, [(r.key, r.value)
                                                                 for r in records])
        await asyncio.gather(*futures)

    await _aiokafka_loop(settings, handle, commit_behind=True)


async def run_plain(cfg: Config) -> None:
    """(d) The worker's Pipeline in a plain aiokafka loop."""
    from stream.artifact import load_artifact
    from stream.metrics import Metrics
    from stream.security import connect_redis
    from stream.worker import build_engine, build_pipeline

    settings = _settings(cfg)
    engine = build_engine(settings, load_artifact(settings.model))
    redis_client = await connect_redis(settings)
    current: list[Any] = []
    pipeline = build_pipeline(settings, engine, redis_client, lambda: current[0], Metrics())

    async def handle(producer: Any, records: Sequence[Any]) -> None:
        current[:] = [producer]
        await pipeline.process(records)

    try:
        await _aiokafka_loop(settings, handle)
    finally:
        await redis_client.aclose()


def _run_faust(app: Any, loop: asyncio.AbstractEventLoop) -> None:
    import faust

    from stream.worker import quiet_loggers

    quiet_loggers()
    worker = faust.Worker(app, loop=loop, loglevel="WARNING", quiet=True,
                          redirect_stdouts=False)
    quiet_loggers()
    worker.execute_from_commandline()


def run_naive(cfg: Config) -> None:
    """(b) One event at a time: GET, step, SET, send (a textbook faust agent)."""
    import numpy as np
    import orjson
    import torch

    from stream.artifact import load_artifact
    from stream.errors import RecordError
    from stream.records import parse_event
    from stream.scoring import score
    from stream.security import connect_redis
    from stream.worker import faust_app

    settings = _settings(cfg)
    artifact = load_artifact(settings.model)
    net, f = artifact.model, artifact.n_features
    size = net.state_size
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    client = loop.run_until_complete(connect_redis(settings))
    prefix = f"{settings.app_id}:naive:"
    app = faust_app(settings)
    topic = app.topic(settings.topic_events, key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")
    out_topic = app.topic(settings.topic_predictions, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")

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
            s = None if prev is None else float(score(x[0].numpy() - prev,
                                                      artifact.residual_scale))
            await client.set(key, h.numpy().tobytes() + y[0, -1, 0].numpy().tobytes())
            record = {"entity_id": e.entity_id, "ts": e.ts, "score": s,
                      "forecast": artifact.unscale(y[0, -1].numpy()).tolist()}
            await out_topic.send(key=event.key, value=orjson.dumps(record))

    _run_faust(app, loop)


def run_worker(cfg: Config) -> None:
    """(c) ``seqstream worker --model ...`` as a user runs it (settings from ``cfg.env``)."""
    os.environ.update(cfg.env)
    from seqstream.cli import main

    sys.exit(main(["worker", "--model", cfg.model]))


PIPELINES: dict[str, Callable[[Config], Any]] = {
    "bare": run_bare, "naive": run_naive, "worker": run_worker, "plain": run_plain,
}


def run(cfg: Config) -> None:
    """Run ``cfg.pipeline`` in this process until SIGTERM."""
    result = PIPELINES[cfg.pipeline](cfg)
    if asyncio.iscoroutine(result):
        asyncio.run(result)
