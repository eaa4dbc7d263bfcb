"""Make sure a topic exists with the configured partition count before a tool writes to it.

A broker with ``auto.create.topics.enable`` (Kafka's default) creates a topic on the first write
with ``num.partitions`` (default 1), and a topic with one partition caps a consumer group at one
busy worker however many replicas run. So the publisher creates a missing topic itself, with
``SEQSTREAM_PARTITIONS`` partitions and a replication factor of up to 3 (as many as there are
brokers), the same way the worker does; an existing topic is left as it is.
"""

from __future__ import annotations

import contextlib
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from stream.errors import StackError
from stream.kafka_access import connect
from stream.security import kafka_kwargs
from stream.settings import Settings

__all__ = ["ensure_topic", "started"]

C = TypeVar("C")


async def started(client: C, settings: Settings) -> C:
    """``await client.start()`` for an aiokafka producer, consumer or admin client; a broker that
    cannot be reached becomes one :class:`StackError` line naming the bootstrap servers."""
    try:
        await client.start()  # type: ignore[attr-defined]
    except (KafkaConnectionError, OSError) as ex:
        closer: Any = getattr(client, "stop", None) or client.close  # type: ignore[attr-defined]
        await closer()
        (await connect(settings)).close()  # a TLS or SASL refusal: the line naming its setting
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: expected a reachable broker, got "
                         f"{ex}") from ex
    return client


async def ensure_topic(settings: Settings, topic: str) -> int:
    """Create ``topic`` if missing; return its partition count."""
    admin = AIOKafkaAdminClient(**kafka_kwargs(settings), request_timeout_ms=15_000)
    try:
        await admin.start()
        if topic not in await admin.list_topics():
            brokers = len((await admin.describe_cluster())["brokers"])
            # another publisher or the worker may win the race: then the topic is there
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(topic, num_partitions=settings.partitions,
                                                    replication_factor=min(3, brokers))])
        [meta] = await admin.describe_topics([topic])
        return len(meta["partitions"])
    except KafkaConnectionError as ex:
        (await connect(settings)).close()  # a TLS or SASL refusal: the line naming its setting
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: expected a reachable broker, got "
                         f"{ex}") from ex
    except KafkaError as ex:
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: cannot create or describe topic "
                         f"{topic!r} ({type(ex).__name__}: {ex})") from ex
    finally:
        await admin.close()
