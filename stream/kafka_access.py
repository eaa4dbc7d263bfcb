"""Before consuming anything: can this client reach, trust, log in to and use the Kafka cluster?

aiokafka reports a refused password, an untrusted broker certificate and an unreachable broker
alike as "Unable to bootstrap", and a missing ACL only when the first fetch, join or produce
fails, deep inside Faust's loops (where a produce is retried forever). So the worker checks once
at start, with one direct connection as its own user, and stops with one line that names the
setting to fix, never a secret:

- the TLS handshake (``SEQSTREAM_KAFKA_SSL_CAFILE`` when the broker's certificate does not
  verify), then SASL (``SEQSTREAM_KAFKA_SASL_USERNAME`` and the password's variable, when the
  broker refuses the credentials; ``SEQSTREAM_KAFKA_SASL_MECHANISM`` when it does not offer it);
- the ACLs, read from the broker itself: a Metadata request (v8) asking for the operations this
  user may perform on each topic, and a DescribeGroups request (v3) for the consumer group. A
  cluster without an authorizer answers "not requested" and nothing is checked.

:data:`WORKER_ACLS` is the documented list (docs/deployment.md, "Kafka ACLs"): read the events
topic, write the output topics, read the group (Read includes Describe for Kafka).

>>> from stream.settings import Settings
>>> [(n.variable, n.name, n.operations) for n in needs(Settings())][:2]
[('SEQSTREAM_TOPIC_EVENTS', 'seqstream.events', ('READ', 'DESCRIBE')), \
('SEQSTREAM_TOPIC_PREDICTIONS', 'seqstream.predictions', ('WRITE', 'DESCRIBE'))]
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
    for_code,
)
from aiokafka.protocol.admin import DescribeGroupsResponse_v3
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.coordination import FindCoordinatorRequest
from aiokafka.protocol.types import Array, Boolean, Int16, Int32, Schema, String

from stream.errors import ConfigError, StackError
from stream.security import kafka_kwargs
from stream.settings import Settings, env_name

__all__ = ["OPERATIONS", "WORKER_ACLS", "Need", "check_access", "connect", "ensure_topics",
           "needs", "worker_topics"]

# Kafka's AclOperation codes; an "authorized operations" field sets bit (1 << code).
OPERATIONS = {"READ": 3, "WRITE": 4, "CREATE": 5, "DESCRIBE": 8}
_NOT_REQUESTED = -(2**31)  # what a broker without an authorizer answers
_TOPIC_AUTHORIZATION_FAILED, _GROUP_AUTHORIZATION_FAILED = 29, 30
_NOT_YET = (14, 15)  # coordinator loading or not available yet: retried
_COORDINATOR_TRIES = 60

# (settings field, resource kind, operations): what the worker needs, in docs/deployment.md.
WORKER_ACLS = (
    ("topic_events", "topic", ("READ", "DESCRIBE")),
    ("topic_predictions", "topic", ("WRITE", "DESCRIBE")),
    ("topic_anomalies", "topic", ("WRITE", "DESCRIBE")),
    ("topic_beats", "topic", ("WRITE", "DESCRIBE")),
    ("topic_deadletter", "topic", ("WRITE", "DESCRIBE")),
    ("app_id", "group", ("READ",)),
)


@dataclass(frozen=True)
class Need:
    """Operations a client needs on one topic or group, and the setting that names it."""

    variable: str
    kind: str  # "topic" | "group"
    name: str
    operations: tuple[str, ...]


def needs(settings: Settings, acls: tuple[tuple[str, str, tuple[str, ...]], ...] = WORKER_ACLS
          ) -> list[Need]:
    """``acls`` resolved against ``settings``."""
    return [Need(env_name(field), kind, getattr(settings, field), ops)
            for field, kind, ops in acls]


class _MetadataResponseV8(Response):
    API_KEY = 3
    API_VERSION = 8
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", Array(("node_id", Int32), ("host", String("utf-8")), ("port", Int32),
                          ("rack", String("utf-8")))),
        ("cluster_id", String("utf-8")),
        ("controller_id", Int32),
        ("topics", Array(
            ("error_code", Int16), ("topic", String("utf-8")), ("is_internal", Boolean),
            ("partitions", Array(("error_code", Int16), ("partition", Int32), ("leader", Int32),
                                 ("leader_epoch", Int32), ("replicas", Array(Int32)),
                                 ("isr", Array(Int32)), ("offline_replicas", Array(Int32)))),
            ("authorized_operations", Int32))),
        ("cluster_authorized_operations", Int32),
    )


class _MetadataRequestV8(RequestStruct):
    API_KEY = 3
    API_VERSION = 8
    RESPONSE_TYPE = _MetadataResponseV8
    SCHEMA = Schema(("topics", Array(String("utf-8"))), ("allow_auto_topic_creation", Boolean),
                    ("include_cluster_authorized_operations", Boolean),
                    ("include_topic_authorized_operations", Boolean))


class _TopicOperations(Request[_MetadataRequestV8]):
    """Metadata of ``topics`` with the operations the caller may perform on each."""

    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV8]) -> _MetadataRequestV8:
        return request_struct_class(self.topics, False, False, True)


class _DescribeGroupsRequestV3(RequestStruct):
    # aiokafka 0.14's own v3 request decodes the answer as v2, dropping authorized_operations
    API_KEY = 15
    API_VERSION = 3
    RESPONSE_TYPE = DescribeGroupsResponse_v3
    SCHEMA = Schema(("groups", Array(String("utf-8"))),
                    ("include_authorized_operations", Boolean))


class _GroupOperations(Request[_DescribeGroupsRequestV3]):
    API_KEY = 15

    def __init__(self, group: str) -> None:
        self.group = group

    def build(self, request_struct_class: type[_DescribeGroupsRequestV3]
              ) -> _DescribeGroupsRequestV3:
        return request_struct_class([self.group], True)


def _password_variable(settings: Settings) -> str:
    return env_name("kafka_sasl_password_file" if settings.kafka_sasl_password_file
                    else "kafka_sasl_password")


async def connect(settings: Settings, host: str | None = None, port: int | None = None) -> Any:
    """One authenticated connection to a broker (the first reachable bootstrap server unless
    given); a refusal is one ConfigError naming the setting at fault, and no reachable broker a
    StackError."""
    servers = [(host, port)] if host is not None and port is not None else [
        (s.strip().rpartition(":")[0], int(s.strip().rpartition(":")[2]))
        for s in settings.kafka_bootstrap.split(",")]
    last: Exception | None = None
    for name, number in servers:
        try:
            return await _connect(settings, name, number)
        except (KafkaError, OSError) as ex:  # unreachable: the next server may answer
            last = ex
    raise StackError(f"Kafka at {', '.join(f'{h}:{p}' for h, p in servers)}: expected a "
                     f"reachable broker, got {type(last).__name__}: {last}")


async def _connect(settings: Settings, host: str, port: int) -> Any:
    kwargs = kafka_kwargs(settings)
    kwargs.pop("bootstrap_servers")
    where = f"Kafka at {host}:{port}"
    try:
        return await create_conn(host, port, request_timeout_ms=15_000, **kwargs)
    except ssl.SSLCertVerificationError as ex:
        cafile = settings.kafka_ssl_cafile
        raise ConfigError(f"{env_name('kafka_ssl_cafile')}: expected the CA bundle that signed "
                          f"the certificate of {where}, got "
                          f"{str(cafile) if cafile else 'the system CAs (unset)'}, which does not "
                          f"verify it ({ex.verify_message})") from None
    except ssl.SSLError as ex:
        raise ConfigError(f"{env_name('kafka_security_protocol')}="
                          f"{settings.kafka_security_protocol}: the TLS handshake with {where} "
                          f"failed ({ex.reason or ex}); expected a TLS listener there") from None
    except SaslAuthenticationFailed:
        raise ConfigError(f"{env_name('kafka_sasl_username')}/{_password_variable(settings)}: "
                          f"{where} refused user {settings.kafka_sasl_username!r} with "
                          f"{settings.kafka_sasl_mechanism}; expected that user's password "
                          f"(and a SCRAM credential for it on the cluster)") from None
    except UnsupportedSaslMechanismError as ex:
        raise ConfigError(f"{env_name('kafka_sasl_mechanism')}: {where} does not offer "
                          f"{settings.kafka_sasl_mechanism} ({ex})") from None


def worker_topics(settings: Settings) -> list[str]:
    """The five topics a worker reads or writes: events, predictions, anomalies, dead letters,
    beats."""
    return [settings.topic_events, settings.topic_predictions, settings.topic_anomalies,
            settings.topic_deadletter, settings.topic_beats]


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None
                        ) -> dict[str, int]:
    """Create the topics ``names`` (default :func:`worker_topics`) where missing; return each
    one's partition count. Existing topics are left as they are.

    Why the worker, the publisher and the tools create topics themselves: a broker with
    ``auto.create.topics.enable`` (Kafka's default) creates a topic on the first write with
    ``num.partitions`` (default 1), and one partition caps a consumer group at one busy worker
    however many replicas run. A missing topic gets ``SEQSTREAM_PARTITIONS`` partitions and a
    replication factor of up to 3 (as many as there are brokers).
    """
    names = worker_topics(settings) if names is None else list(dict.fromkeys(names))
    admin = AIOKafkaAdminClient(**kafka_kwargs(settings), request_timeout_ms=15_000)
    try:
        await admin.start()
        present = set(await admin.list_topics())
        missing = [n for n in names if n not in present]
        if missing:
            brokers = len((await admin.describe_cluster())["brokers"])
            # another publisher or worker may win the race: then the topic is there
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics([NewTopic(n, settings.partitions, min(3, brokers))
                                           for n in missing])
        return {meta["topic"]: len(meta["partitions"])
                for meta in await admin.describe_topics(names)}
    except KafkaConnectionError as ex:
        (await connect(settings)).close()  # a TLS or SASL refusal: the line naming its setting
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: expected a reachable broker, got "
                         f"{ex}") from ex
    except KafkaError as ex:
        raise StackError(f"Kafka at {settings.kafka_bootstrap}: expected to create or describe "
                         f"topics {', '.join(names)}, got {type(ex).__name__}: {ex}") from ex
    finally:
        await admin.close()


async def check_access(settings: Settings, wanted: list[Need]) -> None:
    """Raise ConfigError naming the first setting whose topic or group lacks an operation."""
    conn = await connect(settings)
    user = settings.kafka_sasl_username or "the TLS/anonymous principal"
    try:
        topics = [n for n in wanted if n.kind == "topic"]
        meta = await conn.send(_TopicOperations([n.name for n in topics]))
        by_name = {t[1]: (t[0], t[-1]) for t in meta.topics}
        for need in topics:
            error, allowed = by_name.get(need.name, (0, _NOT_REQUESTED))
            if error == _TOPIC_AUTHORIZATION_FAILED:
                allowed = 0
            _require(need, allowed, user)
        groups = [n for n in wanted if n.kind == "group"]
    finally:
        conn.close()
    for need in groups:
        await _check_group(settings, need, user)


async def _check_group(settings: Settings, need: Need, user: str) -> None:
    conn = await connect(settings)
    try:
        for _ in range(_COORDINATOR_TRIES):
            found = await conn.send(FindCoordinatorRequest(need.name, 0))
            if found.error_code not in _NOT_YET:
                break
            await asyncio.sleep(0.5)  # a fresh cluster creates its offsets topic first
        if found.error_code == _GROUP_AUTHORIZATION_FAILED:
            _require(need, 0, user)
            return
        if found.error_code:
            raise StackError(f"Kafka at {settings.kafka_bootstrap}: expected a coordinator for "
                             f"group {need.name!r}, got {for_code(found.error_code).__name__}")
    finally:
        conn.close()
    conn = await connect(settings, found.host, found.port)
    try:
        described = await conn.send(_GroupOperations(need.name))
    finally:
        conn.close()
    error, allowed = described.groups[0][0], described.groups[0][-1]
    _require(need, 0 if error == _GROUP_AUTHORIZATION_FAILED else allowed, user)


def _require(need: Need, allowed: int, user: str) -> None:
    if allowed == _NOT_REQUESTED:
        return
    missing = [op for op in need.operations if not allowed & (1 << OPERATIONS[op])]
    if missing:
        raise ConfigError(f"{need.variable}={need.name}: expected user {user!r} to be allowed "
                          f"{' and '.join(missing)} on {need.kind} {need.name!r}, got no such "
                          f"ACL (the ACLs it needs: docs/deployment.md, Kafka ACLs)")
