"""Settings → client keyword arguments for Kafka (aiokafka, faust) and Redis, secrets included.

One place turns the security settings into what each client library takes, so the worker, the
publish and tail tools and the tests connect the same way:

- :func:`kafka_kwargs` for ``aiokafka.AIOKafkaProducer``/``AIOKafkaConsumer``/admin client:
  ``bootstrap_servers``, ``security_protocol``, SASL user/password/mechanism, ``ssl_context``;
- :func:`faust_broker` for ``faust.App(broker=..., broker_credentials=...)``;
- :func:`redis_kwargs` for ``redis.Redis.from_url(settings.redis_url, **kwargs)`` (and the asyncio
  client): ACL user name, password and, with a ``rediss://`` URL, the TLS files;
- :func:`connect_redis` opens an asyncio client and pings it, turning a refused password or an
  unreachable server into one ``ConfigError`` / ``StackError`` line that names what to fix.

A password comes either from ``SEQSTREAM_X_PASSWORD`` or from the file ``SEQSTREAM_X_PASSWORD_FILE``
names (a Docker or Kubernetes secret; one trailing newline is dropped), never from a command-line
flag (``ps`` shows those to every user). Setting both is refused: two sources for one secret is how
a rotated password silently keeps its old value. Passwords are :class:`~stream.secret.Secret` in
``Settings``, so a printed settings object shows ``***``; and the URL quoted in error messages has
any inline password masked.

>>> from stream.settings import Settings
>>> redis_kwargs(Settings.from_env({"SEQSTREAM_REDIS_USERNAME": "seqstream"}))
{'username': 'seqstream'}
>>> kafka_kwargs(Settings())["security_protocol"]
'PLAINTEXT'
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from stream.errors import ConfigError, StackError
from stream.settings import Settings, env_name

if TYPE_CHECKING:
    import redis.asyncio

__all__ = [
    "connect_redis",
    "faust_broker",
    "kafka_kwargs",
    "kafka_ssl_context",
    "mask_url",
    "redis_kwargs",
    "secret",
]


def secret(settings: Settings, name: str) -> str | None:
    """The value of secret field ``name`` (e.g. ``redis_password``), from the variable itself or
    the file ``<name>_file`` names; ``None`` when neither is set."""
    value = getattr(settings, name)
    path: Path | None = getattr(settings, name + "_file")
    if value is not None and path is not None:
        raise ConfigError(f"{env_name(name)} and {env_name(name + '_file')}: expected one of "
                          "them, got both (unset one so the secret has a single source)")
    if path is None:
        return value.reveal() if value is not None else None
    var = env_name(name + "_file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as ex:
        raise ConfigError(f"{var}: expected a readable file, got {str(path)!r} "
                          f"({ex.strerror or ex})") from ex
    except UnicodeDecodeError as ex:
        raise ConfigError(f"{var}: expected a UTF-8 text file, got {str(path)!r} "
                          "(not UTF-8)") from ex
    text = text[:-1] if text.endswith("\n") else text
    text = text[:-1] if text.endswith("\r") else text
    if not text:
        raise ConfigError(f"{var}: expected a file holding the secret, got an empty file "
                          f"{str(path)!r}")
    return text


def _tls_context(cafile: Path | None, certfile: Path | None, keyfile: Path | None,
                 prefix: str) -> ssl.SSLContext:
    if (certfile is None) != (keyfile is None):
        raise ConfigError(f"{env_name(prefix + '_ssl_certfile')} and "
                          f"{env_name(prefix + '_ssl_keyfile')}: expected both (mutual TLS) or "
                          "neither, got only one")
    try:
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        if certfile is not None:
            context.load_cert_chain(str(certfile), str(keyfile))
    except (OSError, ssl.SSLError) as ex:
        raise ConfigError(f"{prefix} TLS files (ca {cafile}, cert {certfile}, key {keyfile}): "
                          f"expected readable PEM files, got {ex}") from ex
    return context


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL/SASL_SSL Kafka listeners; ``None`` for plaintext ones."""
    if not settings.kafka_security_protocol.endswith("SSL"):
        if settings.kafka_ssl_cafile or settings.kafka_ssl_certfile:
            raise ConfigError(f"{env_name('kafka_ssl_cafile')}/{env_name('kafka_ssl_certfile')}:"
                              f" expected {env_name('kafka_security_protocol')} SSL or SASL_SSL "
                              f"with TLS files, got {settings.kafka_security_protocol}")
        return None
    return _tls_context(settings.kafka_ssl_cafile, settings.kafka_ssl_certfile,
                        settings.kafka_ssl_keyfile, "kafka")


def _kafka_sasl(settings: Settings) -> tuple[str, str] | None:
    uses_sasl = settings.kafka_security_protocol.startswith("SASL")
    password = secret(settings, "kafka_sasl_password")
    user = settings.kafka_sasl_username
    if not uses_sasl:
        if user or password:
            raise ConfigError(f"{env_name('kafka_sasl_username')}/password: expected "
                              f"{env_name('kafka_security_protocol')} SASL_PLAINTEXT or "
                              f"SASL_SSL with SASL credentials, got "
                              f"{settings.kafka_security_protocol}")
        return None
    if not user or not password:
        raise ConfigError(f"{env_name('kafka_security_protocol')}="
                          f"{settings.kafka_security_protocol}: expected "
                          f"{env_name('kafka_sasl_username')} and {env_name('kafka_sasl_password')}"
                          f" (or {env_name('kafka_sasl_password_file')}), got "
                          + ("no user name" if not user else "no password"))
    return user, password


def kafka_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's producer, consumer and admin client."""
    kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                              "security_protocol": settings.kafka_security_protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    sasl = _kafka_sasl(settings)
    if sasl is not None:
        kwargs.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                      sasl_plain_username=sasl[0], sasl_plain_password=sasl[1])
    return kwargs


def faust_broker(settings: Settings) -> dict[str, Any]:
    """``broker`` and ``broker_credentials`` for ``faust.App`` (faust maps the credentials to the
    same aiokafka arguments as :func:`kafka_kwargs`)."""
    import faust  # the worker's dependency; imported here so the CLI tools stay light

    broker = ";".join("kafka://" + part.strip() for part in settings.kafka_bootstrap.split(","))
    context = kafka_ssl_context(settings)
    sasl = _kafka_sasl(settings)
    credentials: Any = None
    if sasl is not None:
        credentials = faust.SASLCredentials(username=sasl[0], password=sasl[1],
                                            ssl_context=context,
                                            mechanism=settings.kafka_sasl_mechanism)
    elif context is not None:
        credentials = faust.SSLCredentials(context)
    return {"broker": broker, "broker_credentials": credentials}


def redis_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``Redis.from_url(settings.redis_url, **kwargs)``: only what is set,
    so a password written into the URL itself still works when the settings carry none."""
    kwargs: dict[str, Any] = {}
    if settings.redis_username:
        kwargs["username"] = settings.redis_username
    password = secret(settings, "redis_password")
    if password is not None:
        kwargs["password"] = password
    tls_files = (settings.redis_ssl_cafile, settings.redis_ssl_certfile,
                 settings.redis_ssl_keyfile)
    if any(tls_files):
        if not settings.redis_url.startswith(("rediss://", "rediss+cluster://")):
            raise ConfigError(f"{env_name('redis_ssl_cafile')}/certfile/keyfile: expected a "
                              f"rediss:// {env_name('redis_url')} for TLS, got "
                              f"{mask_url(settings.redis_url)}")
        if (tls_files[1] is None) != (tls_files[2] is None):
            raise ConfigError(f"{env_name('redis_ssl_certfile')} and "
                              f"{env_name('redis_ssl_keyfile')}: expected both (mutual TLS) or "
                              "neither, got only one")
        for key, path in zip(("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"), tls_files,
                             strict=True):
            if path is not None:
                if not path.is_file():
                    raise ConfigError(f"redis TLS file: expected a readable PEM file, got "
                                      f"{str(path)!r} (no such file)")
                kwargs[key] = str(path)
    return kwargs


def mask_url(url: str) -> str:
    """``url`` with any inline password replaced by ``***`` (for messages and logs).

    >>> mask_url("rediss://app:s3cret@cache.example:6380/0")
    'rediss://app:***@cache.example:6380/0'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def connect_redis(settings: Settings) -> redis.asyncio.Redis:
    """An asyncio Redis client for ``settings``, pinged once so that a wrong password or an
    unreachable server fails here, with a message naming what to fix, not deep in the hot path."""
    import redis.asyncio as aioredis
    from redis import exceptions

    url = settings.redis_url
    if "+cluster://" in url:  # redis+cluster://node:port: the client finds the other nodes
        client: Any = aioredis.RedisCluster.from_url(url.replace("+cluster://", "://", 1),
                                                     **redis_kwargs(settings))
    else:
        client = aioredis.Redis.from_url(url, **redis_kwargs(settings))
    where = mask_url(settings.redis_url)
    user = settings.redis_username or "default"
    given = settings.redis_password or settings.redis_password_file or urlsplit(
        settings.redis_url).password
    source = (env_name("redis_password_file") if settings.redis_password_file else
              env_name("redis_password") if settings.redis_password else "the URL")
    try:
        await client.ping()
    except (exceptions.AuthenticationError, exceptions.ResponseError) as ex:
        await client.aclose()
        text = str(ex)
        if (not given and isinstance(ex, exceptions.AuthenticationError)) or "NOAUTH" in text:
            raise ConfigError(f"Redis at {where} requires a password: expected "
                              f"{env_name('redis_password')} or {env_name('redis_password_file')}"
                              f", got none (the server replied {text!r})") from ex
        if isinstance(ex, exceptions.AuthenticationError) or "WRONGPASS" in text:
            raise ConfigError(f"Redis at {where} refused the credentials (user {user!r}, password "
                              f"from {source}): expected the password its requirepass or ACL "
                              f"user has, got the reply {text!r}") from ex
        raise StackError(f"Redis at {where}: expected PONG, got the error {text}") from ex
    except (exceptions.ConnectionError, OSError) as ex:
        await client.aclose()
        raise StackError(f"Redis at {where}: expected a reachable server, got {ex}") from ex
    return client
