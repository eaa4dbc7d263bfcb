"""Send a batch's output records with one Kafka record batch per partition.

``AIOKafkaProducer.send`` costs a coroutine, a murmur2 hash in pure Python and an accumulator
lookup *per message*; at tens of thousands of predictions per second that is the largest single
cost left in the worker once its input is batched (``seqstream bench``'s profile). This module does
the same work once per partition per batch:

- each key's partition is computed once with the producer's own partitioner (murmur2 for the
  default one, so records land exactly where ``send`` would put them) and cached, the entity ids
  of a stream being a small repeating set (the cache is emptied past :data:`CACHE_LIMIT` keys);
- records are appended to a ``BatchBuilder`` per partition (``producer.create_batch``) and each
  builder is handed over with ``send_batch``, whose future resolves when Kafka acknowledges the
  whole batch — so awaiting the returned futures is "every output acknowledged", as before.

Per-partition order is the order of ``records``, as with ``send``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["CACHE_LIMIT", "BatchSender", "batch_send"]

CACHE_LIMIT = 500_000


class BatchSender:
    """Batched sends through one started ``aiokafka.AIOKafkaProducer``."""

    def __init__(self, producer: Any) -> None:
        self.producer = producer
        self._partition: dict[str, dict[bytes, int]] = {}

    async def _partitions(self, topic: str) -> tuple[list[int], list[int]]:
        producer = self.producer
        await producer.client._wait_on_metadata(topic)
        meta = producer.client.cluster
        return (sorted(meta.partitions_for_topic(topic)),
                list(meta.available_partitions_for_topic(topic)))

    async def send(self, topic: str, records: Iterable[tuple[bytes | None, bytes]]
                   ) -> list[asyncio.Future]:
        """Queue ``(key, value)`` records to ``topic``; futures resolve on Kafka's acks."""
        producer = self.producer
        cache = self._partition.setdefault(topic, {})
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        all_parts: list[int] | None = None
        available: list[int] = []
        partitioner = producer._partitioner
        builders: dict[int, Any] = {}
        futures: list[asyncio.Future] = []
        for key, value in records:
            p = cache.get(key) if key is not None else None
            if p is None:
                if all_parts is None:
                    all_parts, available = await self._partitions(topic)
                p = partitioner(key, all_parts, available)
                if key is not None:
                    cache[key] = p
            b = builders.get(p)
            if b is None:
                b = builders[p] = producer.create_batch()
            if b.append(key=key, value=value, timestamp=None) is None:  # full: ship it
                futures.append(await producer.send_batch(b, topic, partition=p))
                b = builders[p] = producer.create_batch()
                if b.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"record of {len(value)} bytes to {topic}: larger than "
                                     "the producer's max_batch_size")
        for p, b in builders.items():
            futures.append(await producer.send_batch(b, topic, partition=p))
        return futures


def batch_send(producer_of: Callable[[], Any]
               ) -> Callable[[list[tuple[str, bytes | None, bytes]]], Awaitable[None]]:
    """A :data:`stream.pipeline.Send` over the producer ``producer_of()`` returns at each call.

    It returns once Kafka acknowledged every record. A new producer (faust recreates its own
    after a broker restart) gets a new :class:`BatchSender`, so no stale partition cache is used.
    """
    senders: dict[int, BatchSender] = {}

    async def send(records: list[tuple[str, bytes | None, bytes]]) -> None:
        producer = producer_of()
        sender = senders.get(id(producer))
        if sender is None:
            senders.clear()
            sender = senders[id(producer)] = BatchSender(producer)
        by_topic: dict[str, list[tuple[bytes | None, bytes]]] = {}
        for topic, key, value in records:
            by_topic.setdefault(topic, []).append((key, value))
        futures = []
        for topic, items in by_topic.items():
            futures += await sender.send(topic, items)
        await asyncio.gather(*futures)

    return send
