"""One frozen settings object, from ``SEQSTREAM_*`` environment variables and command-line flags.

Precedence is flag > environment variable > default. Every field is declared once below with its
variable, its default and its help; ``add_flags`` turns the same declarations into argparse flags
whose help names the variable, so the README table, ``--help`` and the code cannot drift apart.

>>> s = Settings.from_env({"SEQSTREAM_BATCH_MAX": "64"})
>>> s.batch_max, s.topic_events
(64, 'seqstream.events')
>>> Settings.from_env({"SEQSTREAM_BATCH_MAX": "lots"})
Traceback (most recent call last):
...
stream.errors.ConfigError: SEQSTREAM_BATCH_MAX: expected an integer in [1, 1000000], got 'lots'
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stream.errors import ConfigError
from stream.secret import Secret

__all__ = ["Settings", "add_flags", "describe", "env_name"]

PREFIX = "SEQSTREAM_"


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError as ex:
            raise ValueError(_range_text("an integer", lo, hi)) from ex
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(_range_text("an integer", lo, hi))
        return value

    return parse


def _float(lo: float | None = None) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError as ex:
            raise ValueError(_range_text("a number", lo, None)) from ex
        if value != value or (lo is not None and value < lo):  # NaN fails too
            raise ValueError(_range_text("a number", lo, None))
        return value

    return parse


def _range_text(kind: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]"
    if lo is not None:
        return f"{kind} >= {lo}"
    return kind


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError("one of " + ", ".join(options))
        return raw

    return parse


def _text(raw: str) -> str:
    if not raw.strip():
        raise ValueError("a non-empty string")
    return raw.strip()


def _host_port(raw: str) -> str:
    for part in raw.split(","):
        host, sep, port = part.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("host:port[,host:port...]")
    return raw.strip()


def _jvm_size(raw: str) -> str:
    number, unit = raw[:-1], raw[-1:].lower()
    if unit not in ("m", "g") or not number.isdigit() or int(number) == 0:
        raise ValueError("a JVM heap size such as 512m or 1g")
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://", "redis+cluster://",
                           "rediss+cluster://")):
        raise ValueError("a redis://, rediss://, unix:// URL, or redis+cluster:// "
                         "(rediss+cluster://) naming one node of a Redis Cluster")
    return raw


def _http_url(raw: str) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("an http:// or https:// URL with a host")
    return raw.strip().rstrip("/")


def _optional_path(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw.strip() else None


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _secret(raw: str) -> Secret | None:
    # Passwords are kept as given (spaces may be part of them); empty means unset.
    return Secret(raw) if raw else None


def _path(raw: str) -> Path:
    return Path(_text(raw)).expanduser()


def _default_home() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "seqstream")


def _setting(default: Any, parse: Callable[[str], Any], help: str, group: str) -> Any:
    return field(default=default, metadata={"parse": parse, "help": help, "group": group})


@dataclass(frozen=True)
class Settings:
    """Every knob of seqstream; build with :meth:`from_env`, never mutate (it is frozen)."""

    # Kafka
    kafka_bootstrap: str = _setting(
        "127.0.0.1:9092", _host_port, "Kafka bootstrap servers", "kafka")
    kafka_port: int = _setting(
        9092, _int(1, 65535), "port of the local stack's Kafka broker listener", "stack")
    kafka_controller_port: int = _setting(
        9093, _int(1, 65535), "port of the local stack's KRaft controller listener", "stack")
    kafka_heap: str = _setting("512m", _jvm_size, "JVM heap cap of the local Kafka broker", "stack")
    topic_events: str = _setting("seqstream.events", _text, "input topic (key = entity_id)",
                                 "kafka")
    topic_predictions: str = _setting("seqstream.predictions", _text,
                                      "topic of one prediction per event", "kafka")
    topic_anomalies: str = _setting("seqstream.anomalies", _text,
                                    "topic of flagged predictions only", "kafka")
    topic_beats: str = _setting("seqstream.beats", _text,
                                "topic of one record per detected heartbeat (ECG models)", "kafka")
    topic_deadletter: str = _setting("seqstream.deadletter", _text,
                                     "topic of rejected events with their reason", "kafka")
    partitions: int = _setting(4, _int(1, 10_000), "partitions of topics created if missing",
                               "kafka")
    app_id: str = _setting("seqstream", _text, "Faust app id = Kafka consumer group", "kafka")
    # Redis
    redis_url: str = _setting("redis://127.0.0.1:6379/0", _redis_url, "Redis URL for entity state "
                              "(redis+cluster://host:port: a Redis Cluster, from any one node)",
                              "redis")
    redis_port: int = _setting(6379, _int(1, 65535), "port of the local stack's Redis", "stack")
    redis_appendfsync: str = _setting("everysec", _choice("always", "everysec", "no"),
                                      "AOF fsync policy of the local stack's Redis", "stack")
    # Prometheus
    prometheus_port: int = _setting(9090, _int(1, 65535), "port of the local stack's Prometheus",
                                    "stack")
    prometheus_url: str = _setting(
        "http://127.0.0.1:9090", _http_url, "Prometheus HTTP API that `seqstream view` asks for "
        "the fleet figures", "view")
    metrics_host: str = _setting("127.0.0.1", _text,
                                 "bind address of the worker's /metrics endpoint", "worker")
    metrics_port: int = _setting(8000, _int(0, 65535),
                                 "port of the worker's /metrics endpoint (0 = off)", "worker")
    # Worker
    model: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "model artifact directory", "worker")
    batch_max: int = _setting(1000, _int(1, 1_000_000), "most events taken per micro-batch",
                              "worker")
    inflight: int = _setting(
        2, _int(1, 64), "micro-batches computed and not yet delivered (Kafka acks, Redis save): "
        "the next batch is computed while up to this many are delivered, in order (1 = each "
        "waits for the one before)", "worker")
    state_cache: int = _setting(
        200_000, _int(0, 100_000_000), "entity states of owned partitions kept in the worker's "
        "memory (least recently used saved ones dropped beyond; a batch waits while states "
        "whose save is in flight alone fill it; 0 = none kept, each batch waits for the previous "
        "one's save)", "worker")
    state_ttl_s: int = _setting(7 * 24 * 3600, _int(0), "idle expiry of entity state, seconds "
                                "(0 = never)", "worker")
    state_loss: str = _setting(
        "rebuild", _choice("rebuild", "reset"), "a partition with a committed Kafka offset but "
        "no Redis checkpoint (Redis flushed or new): rebuild = reread from the earliest retained "
        "offset, reset = go on from the committed offset with fresh states", "worker")
    warmup_steps: int = _setting(360, _int(0), "steps after first event or reset with no flag",
                                 "worker")
    max_gap_s: float = _setting(60.0, _float(0.0), "a gap longer than this resets the entity, "
                                "seconds (0 = never)", "worker")
    max_payload_bytes: int = _setting(1_048_576, _int(64), "events larger than this are "
                                      "dead-lettered", "worker")
    max_future_s: float = _setting(300.0, _float(0.0), "events stamped more than this ahead of "
                                   "the worker's clock are dead-lettered (future_ts), seconds "
                                   "(0 = never)", "worker")
    # View (seqstream view: the live page of one entity)
    view_host: str = _setting("127.0.0.1", _text, "bind address of `seqstream view`'s web page",
                              "view")
    view_port: int = _setting(8050, _int(1, 65535), "port of `seqstream view`'s web page", "view")
    view_samples: int = _setting(3600, _int(10, 1_000_000), "samples (and beats) `seqstream view` "
                                 "keeps per entity and each page holds: the scrolling window",
                                 "view")
    view_entities: int = _setting(500, _int(1, 1_000_000), "entities `seqstream view` keeps "
                                  "(the least recently heard is dropped beyond)", "view")
    # Security (see stream.security: each *_password may instead come from the file that
    # *_password_file names, e.g. a Docker/Kubernetes secret; secrets have no command-line flag)
    kafka_security_protocol: str = _setting(
        "PLAINTEXT", _choice("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        "Kafka security protocol", "security")
    kafka_sasl_mechanism: str = _setting(
        "PLAIN", _choice("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
        "Kafka SASL mechanism (with SASL_PLAINTEXT or SASL_SSL)", "security")
    kafka_sasl_username: str | None = _setting(None, _optional_text, "Kafka SASL user name",
                                               "security")
    kafka_sasl_password: Secret | None = _setting(  # noqa: RUF009
        None, _secret, "Kafka SASL password", "security")
    kafka_sasl_password_file: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "file holding the Kafka SASL password", "security")
    kafka_ssl_cafile: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "CA bundle (PEM) that signed the Kafka brokers' certificates "
        "(unset = system CAs)", "security")
    kafka_ssl_certfile: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "client certificate (PEM) for Kafka mutual TLS", "security")
    kafka_ssl_keyfile: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "client private key (PEM) for Kafka mutual TLS", "security")
    redis_username: str | None = _setting(
        None, _optional_text, "Redis ACL user name (unset = the default user)", "security")
    redis_password: Secret | None = _setting(  # noqa: RUF009
        None, _secret, "Redis password (requirepass or the ACL user's)", "security")
    redis_password_file: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "file holding the Redis password", "security")
    redis_ssl_cafile: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "CA bundle (PEM) for a rediss:// URL (unset = system CAs)",
        "security")
    redis_ssl_certfile: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "client certificate (PEM) for Redis mutual TLS", "security")
    redis_ssl_keyfile: Path | None = _setting(  # noqa: RUF009
        None, _optional_path, "client private key (PEM) for Redis mutual TLS", "security")
    # Everything
    home: Path = _setting(  # noqa: RUF009
        _default_home(), _path, "cache and runtime dir (Kafka jars, stack data)",
                          "stack")
    log_level: str = _setting("INFO", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "log level",
                              "all")

    def __post_init__(self) -> None:
        # Defaults are declared as strings where the type needs parsing (paths).
        if isinstance(self.home, str):
            object.__setattr__(self, "home", Path(self.home))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 overrides: Mapping[str, Any] | None = None) -> Settings:
        """Read every ``SEQSTREAM_*`` variable of ``env`` (default ``os.environ``), then apply
        ``overrides`` (already-parsed flag values; ``None`` means "not given")."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = env_name(f.name)
            if overrides and overrides.get(f.name) is not None:
                raw, source = overrides[f.name], "--" + f.name.replace("_", "-")
                if not isinstance(raw, str):
                    values[f.name] = raw
                    continue
            elif var in env:
                raw, source = env[var], var
            else:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as ex:
                raise ConfigError(f"{source}: expected {ex}, got {raw!r}") from None
        unknown = sorted(k for k in env if k.startswith(PREFIX) and k not in _ENV_NAMES)
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]}: expected one of "
                              + ", ".join(sorted(_ENV_NAMES)))
        # Moving the local stack's ports moves the addresses clients use, unless those are set.
        if "kafka_bootstrap" not in values and "kafka_port" in values:
            values["kafka_bootstrap"] = f"127.0.0.1:{values['kafka_port']}"
        if "redis_url" not in values and "redis_port" in values:
            values["redis_url"] = f"redis://127.0.0.1:{values['redis_port']}/0"
        if "prometheus_url" not in values and "prometheus_port" in values:
            values["prometheus_url"] = f"http://127.0.0.1:{values['prometheus_port']}"
        return cls(**values)


def env_name(name: str) -> str:
    """The environment variable of a settings field."""
    return PREFIX + name.upper()


_ENV_NAMES = frozenset(env_name(f.name) for f in dataclasses.fields(Settings))


def add_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """Add a ``--flag`` for each named field; each help names its variable and default."""
    defaults = Settings()
    by_name = {f.name: f for f in dataclasses.fields(Settings)}
    for name in names:
        f = by_name[name]
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, default=None, metavar=name.upper(),
            help=f"{f.metadata['help']} (env {env_name(name)}, default "
                 f"{getattr(defaults, name)})")


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, help) rows for the README's configuration table."""
    defaults = Settings()
    return [(env_name(f.name), str(getattr(defaults, f.name)), f.metadata["help"])
            for f in dataclasses.fields(Settings)]
