"""The Faust worker: topics, batches taken below Faust's per-event path, and the delivery order.

The events topic is claimed by :mod:`stream.fastpath`: Faust's own consumer (its group,
assignor, rebalance listener and commit loop) hands each fetch to an app task as ONE batch of raw
records instead of one Event per message, which costs about three loop turns and four tasks per
event in Faust's stream path (the README's Benchmarks). The task computes each batch
(:meth:`stream.pipeline.Pipeline.compute`, from the states of the batch before, kept in memory)
while up to ``SEQSTREAM_INFLIGHT`` earlier ones are delivered in order on a second task
(:meth:`~stream.pipeline.Pipeline.deliver`: predictions acknowledged by Kafka, then states saved
in Redis), and marks a batch's offsets acked in Faust's structures only once it is delivered
(:func:`stream.fastpath.run_batches`); Faust's consumer
commits them on its timer (``broker_commit_interval``) and before giving partitions away in a
rebalance, which waits for in-flight batches (``stream_wait_empty``). A batch interrupted anywhere
is never acked, never committed, and is consumed again after a restart, where the watermarks skip
what was already applied.

Where consumption resumes is Redis's to say, not Kafka's: on every assignment the worker reads
each partition's checkpoint, stored with the states in the same atomic save (:mod:`stream.state`),
and seeks the consumer there (:func:`position`); Kafka commits stay for lag monitoring and
tooling. A partition with a committed Kafka offset but no checkpoint lost its states (Redis
flushed, or a new Redis): ``SEQSTREAM_STATE_LOSS=rebuild`` rereads it from the earliest retained
offset (every state recomputed; the predictions of the retained events are produced again, so
the cost is reading and stepping the whole retention once: about a day of events at the default
retention), ``reset`` goes on from the committed offset with fresh states. Either is logged once
per partition and counted (``seqstream_state_lost{action}``; ``reset`` also counts one
``seqstream_resets{reason="state_lost"}`` per partition). The topic's partition count is kept in
Redis too (``<namespace>:partitions``): an entity's partition is its key's hash modulo the count,
so after a change every state would be looked up on the wrong partition; the worker refuses to
start instead (``seqstream state migrate`` rewrites the keys for the new count).

Faust's, aiokafka's and mode's loggers are set to WARNING: their debug and info records are built
for every message and cost about 40 % of the worker's time. After start-up the objects alive are
frozen out of the garbage collector and its young-generation threshold raised: a batch allocates
many short-lived objects, and collections that rescan the start-up heap cost about 20 % on
single-sample events (``seqstream bench``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from stream import fastpath, seam
from stream.batchsend import batch_send
from stream.engine import Engine
from stream.errors import StackError
from stream.fastpath import EARLIEST
from stream.kafka_access import check_access, ensure_topics, needs
from stream.metrics import Metrics
from stream.pipeline import Pipeline, Topics
from stream.security import connect_redis, faust_broker
from stream.state import RedisStateStore, StateStore, namespace

if TYPE_CHECKING:
    import faust

    from stream.artifact import Artifact
    from stream.settings import Settings

__all__ = ["QUIET_LOGGERS", "Assembly", "assemble", "build_engine", "build_pipeline", "faust_app",
           "quiet_loggers", "run_worker"]

log = logging.getLogger("stream.worker")

QUIET_LOGGERS = ("faust", "aiokafka", "mode", "kafka")
REDIS_TIMEOUT_S = 10.0
SESSION_TIMEOUT_S = 10.0  # Faust's default is 60 s: a crashed worker's partitions would idle 1 min


def quiet_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def output_topics(settings: Settings) -> Topics:
    return Topics(settings.topic_predictions, settings.topic_anomalies, settings.topic_deadletter,
                  settings.topic_beats)


@dataclass(frozen=True)
class Assembly:
    """The worker's parts: its Faust app (the fast path installed, the batch task and the
    assignment handler registered), the engine and the pipeline the task drives."""

    app: faust.App
    engine: Engine
    pipeline: Pipeline


def faust_app(settings: Settings) -> faust.App:
    """A Faust app with the worker's settings: raw bytes, no web server, a short session timeout,
    every produce acknowledged by all in-sync replicas, in-flight batches finished before a
    rebalance. The benchmark's faust pipelines use it too, so they measure the same app."""
    import faust

    datadir = settings.home / "faust" / settings.app_id
    datadir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.app_id,
        **faust_broker(settings),
        value_serializer="raw",
        key_serializer="raw",
        web_enabled=False,
        topic_disable_leader=True,
        topic_partitions=settings.partitions,
        datadir=str(datadir),
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=SESSION_TIMEOUT_S / 5,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        stream_wait_empty=True,
    )


def build_engine(settings: Settings, artifact: Artifact) -> Engine:
    """The engine for ``artifact`` with the settings' warm-up, gap, payload and clock limits."""
    return Engine(artifact, warmup_steps=settings.warmup_steps, max_gap_s=settings.max_gap_s,
                  max_payload_bytes=settings.max_payload_bytes,
                  max_future_s=settings.max_future_s)


def build_pipeline(settings: Settings, engine: Engine, redis_client: Any,
                   producer: Callable[[], Any], metrics: Metrics | None = None,
                   send_errors: tuple[type[BaseException], ...] = ()) -> Pipeline:
    """The pipeline over ``engine``: states in Redis under the model's namespace, the batch's
    records appended by :mod:`stream.batchsend` to the aiokafka producer ``producer()`` returns,
    to the settings' output topics. ``send_errors`` are retried (a broker that is away)."""
    from aiokafka.errors import KafkaError

    store = RedisStateStore(redis_client, namespace(settings.app_id, engine.model_id),
                            settings.state_ttl_s)
    return Pipeline(engine, store, batch_send(producer), output_topics(settings), metrics,
                    send_errors=(KafkaError, asyncio.TimeoutError, *send_errors),
                    state_cache=settings.state_cache)


def assemble(settings: Settings, artifact: Artifact, redis_client: Any,
             metrics: Metrics | None = None) -> Assembly:
    """The worker's Faust app, engine and pipeline; ``redis_client`` is an asyncio Redis client.

    The events topic is taken by :mod:`stream.fastpath`, one task runs its batches through the
    pipeline, and each assignment seeks the partitions to their Redis checkpoints
    (:func:`position`)."""
    from faust.exceptions import ProducerSendError

    app = faust_app(settings)
    engine = build_engine(settings, artifact)
    events = app.topic(settings.topic_events, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw")
    source = fastpath.install(app, events, max_batch=settings.batch_max)
    # Faust's producer wraps an aiokafka producer; stream.batchsend appends a batch's records
    # to one record batch per partition instead of one send() coroutine per record.
    pipeline = build_pipeline(settings, engine, redis_client,
                              lambda: app.producer._ensure_producer(),  # type: ignore[attr-defined]
                              metrics, send_errors=(ProducerSendError,))
    reported: set[int] = set()

    async def positioner(committed: dict[Any, int | None]) -> dict[Any, int | None]:
        return await position(pipeline, settings.state_loss, committed, reported)

    source.positioner = positioner

    @app.task
    async def batches() -> None:
        quiet_loggers()
        try:
            await fastpath.run_batches(
                source, pipeline, after=lambda batch: _record_lag(app, batch, metrics),
                waited=None if metrics is None else partial(metrics.on_stage, "queue_wait"),
                inflight=settings.inflight)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: stop like a crash, with nothing of this batch acked
            log.critical("seqstream worker: batch processing failed; exiting so the batch "
                         "is consumed again after a restart", exc_info=True)
            logging.shutdown()
            os._exit(70)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        # sent after faust drained the in-flight batches: nothing pinned is lost, and the
        # states of partitions this worker may no longer own go now, not at the next assignment
        pipeline.clear_cache()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        mine = sorted(tp.partition for tp in assigned if tp.topic == settings.topic_events)
        if metrics is not None:
            metrics.on_assigned(mine)
        log.info("seqstream worker ready: group %s, %s partitions %s, model %s", settings.app_id,
                 settings.topic_events, mine, artifact.model_id[:16])

    return Assembly(app, engine, pipeline)


async def position(pipeline: Pipeline, state_loss: str, committed: dict[Any, int | None],
                   reported: set[int]) -> dict[Any, int | None]:
    """Where each partition starts: its Redis checkpoint; else (no checkpoint) Kafka's committed
    offset for a partition never consumed, or the ``state_loss`` action for one whose states are
    gone. Sets the pipeline's expected checkpoints; ``reported`` keeps loss lines to one.

    A checkpoint behind the one this pipeline last wrote is a rewind like a refused save, logged
    and counted the same: a seek after one partition's refusal re-reads every partition, and
    another partition rolled back by the same Redis loss is found here first, before a batch of
    its own is refused.

    The pipeline's state cache is cleared first: after the seek, Redis is the source of every
    state. A batch may still be in flight here (a seek can run while a revocation waits for
    in-flight batches): it keeps its states in its own :class:`~stream.pipeline.Computed`, a
    compute that straddles the clear is dropped (the cache's generation), and batches fetched
    before the seek are stale."""
    pipeline.clear_cache()
    store: StateStore = pipeline.store
    by_partition = {tp.partition: tp for tp in committed}
    stored = await pipeline._until_done("Redis checkpoint read", store.checkpoints,
                                        sorted(by_partition), errors=store.transient_errors)
    metrics = pipeline.metrics
    starts: dict[Any, int | None] = {}
    for p, tp in by_partition.items():
        checkpoint, kafka = stored[p], committed[tp]
        wrote = pipeline.positions.get(p)
        pipeline.positions[p] = checkpoint
        if checkpoint is not None:
            reported.discard(p)
            starts[tp] = checkpoint
            if wrote is not None and checkpoint < wrote:  # rolled back with no refusal of its own
                log.warning("partition %d of %s: stored checkpoint %d, behind the %d this worker "
                            "last wrote (Redis lost acknowledged writes): the partition sought "
                            "back there", p, tp.topic, checkpoint, wrote)
                if metrics is not None:
                    metrics.state_rewinds.inc()
            continue
        starts[tp] = EARLIEST if state_loss == "rebuild" else None
        if kafka is None or kafka <= 0 or p in reported:
            continue  # never consumed (Kafka's reset policy applies), or already said
        reported.add(p)
        if state_loss == "rebuild":
            log.warning("partition %d of %s: committed offset %d but no Redis checkpoint (Redis "
                        "lost its states): SEQSTREAM_STATE_LOSS=rebuild, rereading from the "
                        "earliest retained offset; predictions of those events are produced "
                        "again", p, tp.topic, kafka)
        else:
            log.warning("partition %d of %s: committed offset %d but no Redis checkpoint (Redis "
                        "lost its states): SEQSTREAM_STATE_LOSS=reset, going on from the "
                        "committed offset with fresh states", p, tp.topic, kafka)
        if metrics is not None:
            metrics.on_state_lost(state_loss)
    return starts


async def check_partition_count(client: Any, prefix: str, topic: str, count: int) -> None:
    """Record the events topic's partition count with the states, or refuse a changed one."""
    key = f"{prefix}:partitions"
    stored = await client.get(key)
    if stored is None:
        await client.set(key, count)
    elif int(stored) != count:
        raise StackError(
            f"topic {topic} has {count} partitions but the Redis states under {prefix} were "
            f"written for {int(stored)}: an entity's partition is its key's hash modulo the count,"
            f" so its state would be looked up on the wrong partition; expected {int(stored)} "
            f"partitions, or run `seqstream state migrate --partitions {count}` first")


def _record_lag(app: faust.App, batch: fastpath.RecordBatch, metrics: Metrics | None) -> None:
    if metrics is None:
        return
    consumer = app.consumer
    for tp, offset in batch.last_offsets().items():
        with contextlib.suppress(Exception):  # no highwater yet right after an assignment
            end = consumer.highwater(tp)
            if end is not None:
                metrics.on_lag(tp.partition, end - offset - 1)


def run_worker(settings: Settings, artifact: Artifact) -> int:
    """Check Redis and the topics, then run the Faust worker until stopped (SIGTERM/SIGINT)."""
    import faust
    from prometheus_client import start_http_server

    quiet_loggers()
    seam.check()  # the private faust/aiokafka names the fast path uses: one line if one is gone
    # a card the engine cannot flag with fails in one line now, not after Redis and Kafka answered
    threshold = artifact.flag_threshold
    metrics = Metrics()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    began = time.perf_counter()
    redis_client = loop.run_until_complete(connect_redis(settings))
    # A hung (not dead) Redis must fail a command, so the batch is retried, rather than block it
    # forever: later connections get socket timeouts.
    pool = getattr(redis_client, "connection_pool", None)  # a cluster client: one pool per node
    if pool is not None:
        pool.connection_kwargs.update(socket_timeout=REDIS_TIMEOUT_S,
                                      socket_connect_timeout=REDIS_TIMEOUT_S)
        loop.run_until_complete(pool.disconnect())
    # a wrong password, an untrusted certificate or a missing ACL: one line now, not a retry loop
    loop.run_until_complete(check_access(settings, needs(settings)))
    counts = loop.run_until_complete(ensure_topics(settings))
    loop.run_until_complete(check_partition_count(
        redis_client, namespace(settings.app_id, artifact.model_id), settings.topic_events,
        counts[settings.topic_events]))
    cell = artifact.model.cell
    metrics.set_model(artifact.model_id, cell, artifact.version)
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port, settings.metrics_host,
                              registry=metrics.registry)
        except OSError as ex:
            raise StackError(f"metrics endpoint {settings.metrics_host}:{settings.metrics_port}:"
                             f" expected a free port (SEQSTREAM_METRICS_PORT, 0 = off), got "
                             f"{ex.strerror or ex}") from ex
    app = assemble(settings, artifact, redis_client, metrics).app
    seam.check_instance(app.consumer)
    log.info("seqstream worker: model %s (%s, %d features, horizon %d, flags at score >= %g), "
             "topics %s, Redis state %s:*, checks took %.1f s", artifact.model_id[:16], cell,
             artifact.n_features, artifact.model.horizon, threshold, counts,
             namespace(settings.app_id, artifact.model_id), time.perf_counter() - began)
    worker = faust.Worker(app, loop=loop, loglevel=settings.log_level, quiet=True,
                          redirect_stdouts=False)
    quiet_loggers()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        worker.execute_from_commandline()
    except SystemExit as ex:
        return int(ex.code or 0)
    return 0
