"""The harness's Kafka side: fresh topics, preloading, paced sending, group and lag checks, and
reading a topic back with the broker's append times.

Output topics are created with ``message.timestamp.type=LogAppendTime``: the broker stamps each
record when it appends it, which is the moment the prediction is acknowledged, so catch-up time
and latency are read from the broker's clock rather than from a consumer that shares the two
CPU cores with the pipeline under test. Input topics keep ``CreateTime``: the harness's producer
stamps each event when it sends it, so ``latency = output append time - input create time``
(both milliseconds since the epoch, one clock).

Keys are placed with aiokafka's default partitioner (murmur2, like every Kafka client), so an
entity's events share a partition exactly as a real publisher would send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from seqstream.bench.events import Encoded
from seqstream.topics import started
from stream.errors import StackError
from stream.security import kafka_kwargs
from stream.settings import Settings

__all__ = ["Probe", "Readback", "create_topics", "delete_topics", "paced_send", "partition_of",
           "preload", "read_topic"]


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    return DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


async def _admin(settings: Settings) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**kafka_kwargs(settings), request_timeout_ms=30_000)
    return await started(admin, settings)


async def create_topics(settings: Settings, inputs: Sequence[str], outputs: Sequence[str],
                        partitions: int) -> None:
    """Create fresh topics: ``inputs`` keep CreateTime, ``outputs`` get LogAppendTime."""
    admin = await _admin(settings)
    try:
        new = [NewTopic(t, partitions, 1) for t in inputs]
        new += [NewTopic(t, partitions, 1,
                         topic_configs={"message.timestamp.type": "LogAppendTime"})
                for t in outputs]
        await admin.create_topics(new)
        names = [*inputs, *outputs]
        for _ in range(200):  # until every partition has a leader (else the first sends retry)
            with contextlib.suppress(Exception):
                metas = await admin.describe_topics(names)
                if len(metas) == len(names) and all(
                        m["error_code"] == 0 and m["partitions"]
                        and all(p["leader"] >= 0 for p in m["partitions"])
                        for m in metas):
                    return
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def delete_topics(settings: Settings, topics: Sequence[str]) -> None:
    """Remove the run's topics (best effort: a leftover topic only costs disk)."""
    admin = await _admin(settings)
    try:
        with contextlib.suppress(Exception):
            await admin.delete_topics(list(topics))
    finally:
        await admin.close()


def _producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(**kafka_kwargs(settings), acks=1, linger_ms=5,
                            max_batch_size=1 << 20, max_request_size=8 << 20)


async def preload(settings: Settings, topic: str, events: Sequence[Encoded],
                  partitions: int) -> float:
    """Write ``events`` to ``topic`` in order, batch by batch per partition; return seconds."""
    producer = _producer(settings)
    await producer.start()
    began = time.perf_counter()
    try:
        builders: dict[int, object] = {}
        pending = []
        for e in events:
            p = partition_of(e.key, partitions)
            b = builders.get(p)
            if b is None:
                b = builders[p] = producer.create_batch()
            if b.append(key=e.key, value=e.value, timestamp=None) is None:  # type: ignore[attr-defined]
                pending.append(await producer.send_batch(b, topic, partition=p))
                b = builders[p] = producer.create_batch()
                b.append(key=e.key, value=e.value, timestamp=None)  # type: ignore[attr-defined]
        for p, b in builders.items():
            if b.record_count():  # type: ignore[attr-defined]
                pending.append(await producer.send_batch(b, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - began


async def paced_send(settings: Settings, topic: str, events: Sequence[Encoded], rate: float,
                     tick_s: float = 0.002) -> float:
    """Send ``events`` at ``rate`` per second (what is due every ``tick_s``, one record batch per
    partition, so the harness spends little of the shared CPU), each record stamped with the
    wall clock as it is appended; return the rate achieved."""
    from stream.batchsend import BatchSender

    producer = AIOKafkaProducer(**kafka_kwargs(settings), acks=1, linger_ms=0,
                                max_batch_size=1 << 20)
    await producer.start()
    sender = BatchSender(producer)
    try:
        began = time.monotonic()
        sent, futures = 0, []
        while sent < len(events):
            due = min(len(events), int((time.monotonic() - began) * rate) + 1)
            if due > sent:
                futures += await sender.send(topic, [(e.key, e.value)
                                                     for e in events[sent:due]])
                sent = due
            await asyncio.sleep(tick_s)
        await asyncio.gather(*futures)
        return len(events) / max(time.monotonic() - began, 1e-9)
    finally:
        await producer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    parts = consumer.partitions_for_topic(topic)
    if not parts:  # a topic created a moment ago may be missing from cached metadata
        await consumer._client.force_metadata_update()
        parts = consumer.partitions_for_topic(topic)
    if not parts:
        raise StackError(f"topic {topic}: expected it to exist, the broker does not list it")
    return parts


class Probe:
    """Long-lived clients for the harness's frequent checks (end offsets, group state), so
    polling costs one request each time instead of a fresh connection."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.consumer = AIOKafkaConsumer(**kafka_kwargs(settings))
        self.admin: AIOKafkaAdminClient | None = None

    async def __aenter__(self) -> Probe:
        await self.consumer.start()
        self.admin = await _admin(self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        if self.admin is not None:
            await self.admin.close()

    async def end_offsets(self, topic: str) -> int:
        """Records in ``topic`` (the sum of its partitions' end offsets)."""
        parts = await _partitions(self.consumer, topic)
        ends = await self.consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return int(sum(ends.values()))

    async def group_state(self, group: str, topic: str) -> tuple[str, int, int]:
        """(state, members, lag) of consumer group ``group`` on ``topic``; lag counts records
        not yet committed (a partition without a commit counts in full)."""
        assert self.admin is not None
        [resp] = await self.admin.describe_consumer_groups([group])
        g = resp.groups[0]
        state, members = g[2], len(g[5])
        parts = await _partitions(self.consumer, topic)
        tps = [TopicPartition(topic, p) for p in parts]
        ends = await self.consumer.end_offsets(tps)
        committed = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        lag = sum(max(0, ends[tp] - max(0, committed[tp].offset if tp in committed else 0))
                  for tp in tps)
        return state, members, lag

    async def wait_group(self, group: str, topic: str, members: int,
                         timeout_s: float = 90.0) -> float:
        """Wait until ``group`` is Stable with ``members`` members; return the wall time."""
        deadline = time.monotonic() + timeout_s
        seen = ("?", 0, 0)
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                seen = await self.group_state(group, topic)
                if seen[0] == "Stable" and seen[1] == members:
                    return time.time()
            await asyncio.sleep(0.2)
        raise StackError(f"consumer group {group}: expected {members} stable members within "
                         f"{timeout_s:.0f} s, last saw state {seen[0]} with {seen[1]}")


@dataclass
class Readback:
    """A whole topic: keys, broker timestamps (ms), values, partitions and offsets."""

    keys: list[bytes]
    values: list[bytes]
    ts_ms: np.ndarray
    partitions: np.ndarray
    offsets: np.ndarray


async def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> Readback:
    """Every record of ``topic`` up to its current end, ordered by partition then offset."""
    consumer = AIOKafkaConsumer(**kafka_kwargs(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        tps = sorted((TopicPartition(topic, p) for p in parts), key=lambda tp: tp.partition)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        by_tp: dict[int, list] = {tp.partition: [] for tp in tps}
        left = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=100_000)
            for tp, records in batch.items():
                by_tp[tp.partition].extend(records)
                if records and records[-1].offset >= ends[tp] - 1:
                    left.discard(tp)
        if left:
            raise StackError(f"topic {topic}: could not read to its end within {timeout_s} s")
        records = [r for p in sorted(by_tp) for r in by_tp[p]]
        return Readback([r.key for r in records], [r.value for r in records],
                        np.array([r.timestamp for r in records], dtype=np.int64),
                        np.array([r.partition for r in records], dtype=np.int64),
                        np.array([r.offset for r in records], dtype=np.int64))
    finally:
        await consumer.stop()
