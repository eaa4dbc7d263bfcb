"""The view's Kafka follower: reads the events, predictions and beats topics into the buffers.

Like ``seqstream tail`` it is a consumer without a group (it commits nothing and takes no
partitions from the workers), starting at the topics' ends, built from the same settings
(bootstrap servers, topics, SASL/TLS through ``stream.security.kafka_kwargs``). It never stops on
Kafka trouble: a broker that cannot be reached at start, or that stops answering the periodic
metadata request later, becomes the ``unreachable`` state with the client's error, which the
page shows, and the follower tries again every :data:`RETRY_S` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from seqstream.topics import started
from seqstream.view.buffers import Buffers
from stream.errors import StackError
from stream.security import kafka_kwargs
from stream.settings import Settings

__all__ = ["RETRY_S", "Follower"]

RETRY_S = 5.0  # between connection attempts, and between liveness checks of a connected broker
log = logging.getLogger(__name__)


class Follower:
    """Consumes into ``buffers`` until cancelled; ``status()`` says how the connection is."""

    def __init__(self, settings: Settings, buffers: Buffers) -> None:
        self.settings, self.buffers = settings, buffers
        self.kinds = {settings.topic_events: "events", settings.topic_predictions: "predictions",
                      settings.topic_beats: "beats"}
        self.state, self.error = "connecting", ""
        self.last_record: float | None = None

    def status(self) -> dict[str, Any]:
        return {"kafka": self.state, "error": self.error,
                "bootstrap": self.settings.kafka_bootstrap,
                "topics": {kind: topic for topic, kind in self.kinds.items()},
                "records": self.buffers.records, "ignored": self.buffers.ignored,
                "last_record_s_ago": None if self.last_record is None
                else round(time.monotonic() - self.last_record, 1)}

    def _down(self, error: str) -> None:
        if self.state != "unreachable" or self.error != error:
            log.warning("seqstream view: %s", error)
        self.state, self.error = "unreachable", error

    async def run(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                *self.kinds, **kafka_kwargs(self.settings), group_id=None,
                enable_auto_commit=False, auto_offset_reset="latest",
                metadata_max_age_ms=int(RETRY_S * 1000))  # a topic created later joins soon
            try:
                await started(consumer, self.settings)
            except StackError as ex:
                self._down(str(ex))
                await asyncio.sleep(RETRY_S)
                continue
            self.state, self.error = "connected", ""
            try:
                await self._consume(consumer)
            except (KafkaError, TimeoutError) as ex:
                self._down(f"Kafka at {self.settings.kafka_bootstrap}: expected a broker that "
                           f"answers, got {type(ex).__name__}: {ex}")
            finally:
                with contextlib.suppress(KafkaError, OSError):
                    await consumer.stop()
            await asyncio.sleep(RETRY_S)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        checked = time.monotonic()
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for tp, records in batch.items():
                kind = self.kinds[tp.topic]
                for record in records:
                    try:
                        body = orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        self.buffers.ignored += 1
                        continue
                    self.buffers.add(kind, body)
                self.last_record = time.monotonic()
            if time.monotonic() - checked > RETRY_S:
                # a lost broker does not fail getmany (it returns nothing): ask for metadata
                await asyncio.wait_for(consumer.topics(), RETRY_S * 2)
                checked = time.monotonic()
