"""Start an aiokafka client with one line, not a traceback, when no broker answers.

Topics are created by :func:`stream.kafka_access.ensure_topics`, the one function the worker, the
publisher and the tools share.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiokafka.errors import KafkaConnectionError

from stream.errors import StackError
from stream.kafka_access import connect
from stream.settings import Settings

__all__ = ["started"]

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
