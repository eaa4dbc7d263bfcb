"""The private faust and aiokafka names :mod:`stream.fastpath` and :mod:`stream.batchsend` rely on.

Both modules reach below the libraries' public API (faust's consumer bookkeeping, aiokafka's
partitioner and metadata wait), so a release that renames one would otherwise fail deep inside a
batch, or worse, silently skip an ack. pyproject.toml pins both libraries to the range the tests
ran against; :func:`check` runs at worker start-up and fails with ONE line naming the installed
version and every name missing or of the wrong kind.

Kinds: ``function`` (a plain method on the class), ``coroutine`` (an ``async def`` method),
``attribute`` (declared on the class: a class annotation, as faust declares its consumer state,
or a class attribute); attributes set only in ``__init__`` are checked on a live object with
:func:`check_instance`.

>>> check()  # the installed faust-streaming and aiokafka have every name
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from typing import Any

from stream.errors import ConfigError

__all__ = ["CONSUMER_STATE", "REQUIRED", "check", "check_instance"]

# (distribution, module, class or "" for a module-level name, name, kind)
REQUIRED: tuple[tuple[str, str, str, str, str], ...] = (
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_acked", "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_acked_index", "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_committed_offset",
     "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_read_offset", "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_unacked_messages",
     "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_waiting_for_ack", "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_n_acked", "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_gap", "attribute"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_add_gap", "coroutine"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_drain_messages", "coroutine"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_wait_next_records",
     "coroutine"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "_to_message", "function"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "perform_seek", "coroutine"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "seek", "coroutine"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "stop_flow", "function"),
    ("faust-streaming", "faust.transport.consumer", "Consumer", "earliest_offsets", "coroutine"),
    ("faust-streaming", "faust.transport.consumer", "", "CONSUMER_FETCHING", "attribute"),
    ("faust-streaming", "faust.transport.drivers.aiokafka", "Consumer", "_new_offset",
     "function"),
    ("aiokafka", "aiokafka.producer.producer", "AIOKafkaProducer", "create_batch", "function"),
    ("aiokafka", "aiokafka.producer.producer", "AIOKafkaProducer", "send_batch", "coroutine"),
    ("aiokafka", "aiokafka.client", "AIOKafkaClient", "_wait_on_metadata", "coroutine"),
)

# set in Consumer.__init__: checked on the live consumer
CONSUMER_STATE = ("_acked", "_acked_index", "_committed_offset", "_read_offset",
                  "_unacked_messages", "_n_acked", "_commit_every", "_buffered_partitions",
                  "_stopped")


def _has(owner: Any, name: str, kind: str) -> bool:
    if kind == "attribute":
        if hasattr(owner, name):
            return True
        return inspect.isclass(owner) and any(
            name in getattr(k, "__annotations__", {}) for k in owner.__mro__)
    value = inspect.getattr_static(owner, name, None)
    if kind == "coroutine":
        return inspect.iscoroutinefunction(value)
    return inspect.isfunction(value)


def check() -> None:
    """Raise :class:`ConfigError` (one line) unless every name in :data:`REQUIRED` exists with its
    kind in the installed libraries."""
    missing: dict[str, list[str]] = {}
    for dist, module, cls, name, kind in REQUIRED:
        owner: Any = importlib.import_module(module)
        if cls:
            owner = getattr(owner, cls, None)
        if owner is None or not _has(owner, name, kind):
            missing.setdefault(dist, []).append(f"{module}.{cls + '.' if cls else ''}{name} "
                                                f"({kind})")
    if missing:
        raise ConfigError("; ".join(f"{dist} {version(dist)}: expected {', '.join(names)}, "
                                    "missing (stream.fastpath / stream.batchsend rely on them; "
                                    "install the version range pyproject.toml pins)"
                                    for dist, names in missing.items()))


def check_instance(consumer: Any) -> None:
    """The same for the consumer state faust sets in ``__init__``, on the live consumer."""
    absent = [n for n in CONSUMER_STATE if not hasattr(consumer, n)]
    if absent:
        raise ConfigError(f"faust-streaming {version('faust-streaming')}: expected consumer "
                          f"attributes {', '.join(absent)}, missing (stream.fastpath relies on "
                          "them; install the version range pyproject.toml pins)")
