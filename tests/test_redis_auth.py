"""Redis that requires credentials: a private redis-server (never the shared one) with a password,
an ACL user, and TLS; the right credentials connect, wrong ones fail with one clear line."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_private import free_port, start_redis, stop

from stream.errors import ConfigError, StackError
from stream.security import connect_redis
from stream.settings import Settings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server on a free port that requires PASSWORD and has an ACL user ``app``."""
    port = free_port()
    proc = start_redis(["--port", str(port), "--requirepass", PASSWORD,
                   "--user", "app", "on", ">app-secret", "~seqstream:*", "+@all"], port, tmp_path)
    yield port
    stop(proc)


def _settings(port: int, scheme: str = "redis", **env: str) -> Settings:
    return Settings.from_env({"SEQSTREAM_REDIS_URL": f"{scheme}://127.0.0.1:{port}/0", **env})


async def _roundtrip(settings: Settings) -> bytes | None:
    client = await connect_redis(settings)
    try:
        await client.set("seqstream:auth-test", b"ok")
        return await client.get("seqstream:auth-test")
    finally:
        await client.aclose()


def test_right_password_connects(private_redis: int) -> None:
    settings = _settings(private_redis, SEQSTREAM_REDIS_PASSWORD=PASSWORD)
    assert asyncio.run(_roundtrip(settings)) == b"ok"


def test_password_from_file_connects(private_redis: int, tmp_path: Path) -> None:
    secret_file = tmp_path / "redis-password"
    secret_file.write_text(PASSWORD + "\n")  # as `echo ... > file` or a Docker secret leaves it
    settings = _settings(private_redis, SEQSTREAM_REDIS_PASSWORD_FILE=str(secret_file))
    assert asyncio.run(_roundtrip(settings)) == b"ok"


def test_wrong_password_is_refused_with_a_clear_line(private_redis: int) -> None:
    settings = _settings(private_redis, SEQSTREAM_REDIS_PASSWORD="not-the-password")
    with pytest.raises(ConfigError) as info:
        asyncio.run(_roundtrip(settings))
    message = str(info.value)
    assert "refused the credentials" in message
    assert "SEQSTREAM_REDIS_PASSWORD" in message
    assert f"127.0.0.1:{private_redis}" in message
    assert "not-the-password" not in message and "\n" not in message


def test_missing_password_names_the_setting(private_redis: int) -> None:
    with pytest.raises(ConfigError, match="requires a password: expected SEQSTREAM_REDIS_PASSWORD"):
        asyncio.run(_roundtrip(_settings(private_redis)))


def test_acl_user_connects_and_is_confined(private_redis: int) -> None:
    settings = _settings(private_redis, SEQSTREAM_REDIS_USERNAME="app",
                         SEQSTREAM_REDIS_PASSWORD="app-secret")
    assert asyncio.run(_roundtrip(settings)) == b"ok"

    async def outside_its_keys() -> None:
        client = await connect_redis(settings)
        try:
            await client.set("other:key", b"x")
        finally:
            await client.aclose()

    from redis.exceptions import NoPermissionError

    with pytest.raises(NoPermissionError):
        asyncio.run(outside_its_keys())


def test_acl_user_with_wrong_password_is_refused(private_redis: int) -> None:
    settings = _settings(private_redis, SEQSTREAM_REDIS_USERNAME="app",
                         SEQSTREAM_REDIS_PASSWORD=PASSWORD)
    with pytest.raises(ConfigError, match="user 'app'"):
        asyncio.run(_roundtrip(settings))


def _make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
        "/CN=seqstream-test-ca", "-keyout", str(ca_key), "-out", str(ca_crt))
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key),
        "-out", str(csr))
    run("x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(crt))
    return ca_crt, crt, key


def test_tls_with_password(tmp_path: Path) -> None:
    ca, crt, key = _make_ca_and_server_cert(tmp_path)
    port = free_port()
    proc = start_redis(["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(crt),
                   "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                   "--tls-auth-clients", "no", "--requirepass", PASSWORD], port, tmp_path)
    try:
        good = _settings(port, "rediss", SEQSTREAM_REDIS_PASSWORD=PASSWORD,
                         SEQSTREAM_REDIS_SSL_CAFILE=str(ca))
        assert asyncio.run(_roundtrip(good)) == b"ok"
        # Without the CA that signed the server's certificate, the handshake must fail.
        untrusted = _settings(port, "rediss", SEQSTREAM_REDIS_PASSWORD=PASSWORD)
        with pytest.raises(StackError, match=r"(?i)certificate verify failed"):
            asyncio.run(_roundtrip(untrusted))
    finally:
        stop(proc)
