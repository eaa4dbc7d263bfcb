"""Security settings → client kwargs: secrets from env or files, never shown, refused when
inconsistent; faust's credentials map to the same aiokafka arguments as ours."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from stream.errors import ConfigError
from stream.security import faust_broker, kafka_kwargs, mask_url, redis_kwargs, secret
from stream.settings import Settings

SASL = {"SEQSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "SEQSTREAM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "SEQSTREAM_KAFKA_SASL_USERNAME": "worker",
        "SEQSTREAM_KAFKA_SASL_PASSWORD": "p4ss-w0rd"}


def test_secrets_never_show_in_settings_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings.from_env({**SASL, "SEQSTREAM_REDIS_PASSWORD": "r3dis-pw"})
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("settings %s", settings)
    text = repr(settings) + str(settings) + caplog.text
    assert "p4ss-w0rd" not in text and "r3dis-pw" not in text
    assert "Secret('***')" in text
    assert secret(settings, "redis_password") == "r3dis-pw"


def test_password_file_strips_one_newline_only(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("  spaced pw \n")
    settings = Settings.from_env({"SEQSTREAM_REDIS_PASSWORD_FILE": str(path)})
    assert secret(settings, "redis_password") == "  spaced pw "
    assert redis_kwargs(settings) == {"password": "  spaced pw "}


def test_both_password_and_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pw"
    path.write_text("a")
    settings = Settings.from_env({"SEQSTREAM_REDIS_PASSWORD": "b",
                                  "SEQSTREAM_REDIS_PASSWORD_FILE": str(path)})
    with pytest.raises(ConfigError, match="SEQSTREAM_REDIS_PASSWORD and "
                                          "SEQSTREAM_REDIS_PASSWORD_FILE: expected one"):
        redis_kwargs(settings)


@pytest.mark.parametrize(("content", "expected"), [(None, "No such file"),
                                                   ("", "empty file")])
def test_unreadable_or_empty_password_file(tmp_path: Path, content: str | None,
                                           expected: str) -> None:
    path = tmp_path / "pw"
    if content is not None:
        path.write_text(content)
    settings = Settings.from_env({"SEQSTREAM_KAFKA_SASL_PASSWORD_FILE": str(path), **{
        k: v for k, v in SASL.items() if k != "SEQSTREAM_KAFKA_SASL_PASSWORD"}})
    with pytest.raises(ConfigError, match=rf"SEQSTREAM_KAFKA_SASL_PASSWORD_FILE: .*{expected}"):
        kafka_kwargs(settings)


def test_plaintext_kafka_kwargs_are_minimal() -> None:
    assert kafka_kwargs(Settings()) == {"bootstrap_servers": "127.0.0.1:9092",
                                        "security_protocol": "PLAINTEXT"}


def test_sasl_kwargs_and_faust_credentials_agree() -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    settings = Settings.from_env({**SASL, "SEQSTREAM_KAFKA_BOOTSTRAP": "k1:9092,k2:9093"})
    ours = kafka_kwargs(settings)
    assert ours["sasl_plain_username"] == "worker" and ours["sasl_plain_password"] == "p4ss-w0rd"
    broker = faust_broker(settings)
    assert broker["broker"] == "kafka://k1:9092;kafka://k2:9093"
    theirs = credentials_to_aiokafka_auth(broker["broker_credentials"])
    assert {k: v for k, v in theirs.items() if v is not None} == {
        k: v for k, v in ours.items() if k != "bootstrap_servers"}


def test_sasl_without_password_names_the_missing_setting() -> None:
    env = {k: v for k, v in SASL.items() if k != "SEQSTREAM_KAFKA_SASL_PASSWORD"}
    with pytest.raises(ConfigError, match=r"expected SEQSTREAM_KAFKA_SASL_USERNAME and "
                                          r"SEQSTREAM_KAFKA_SASL_PASSWORD.*got no password"):
        kafka_kwargs(Settings.from_env(env))


def test_credentials_without_sasl_protocol_are_refused() -> None:
    env = {"SEQSTREAM_KAFKA_SASL_USERNAME": "worker", "SEQSTREAM_KAFKA_SASL_PASSWORD": "x"}
    with pytest.raises(ConfigError, match="expected SEQSTREAM_KAFKA_SECURITY_PROTOCOL "
                                          "SASL_PLAINTEXT or SASL_SSL"):
        kafka_kwargs(Settings.from_env(env))


def test_ssl_uses_a_verifying_context_and_faust_gets_ssl_credentials() -> None:
    import ssl

    settings = Settings.from_env({"SEQSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL"})
    context = kafka_kwargs(settings)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(faust_broker(settings)["broker_credentials"])
    assert auth["security_protocol"] == "SSL"


def test_missing_ca_file_is_one_clear_line(tmp_path: Path) -> None:
    settings = Settings.from_env({"SEQSTREAM_KAFKA_SECURITY_PROTOCOL": "SSL",
                                  "SEQSTREAM_KAFKA_SSL_CAFILE": str(tmp_path / "none.pem")})
    with pytest.raises(ConfigError, match="expected readable PEM files"):
        kafka_kwargs(settings)


def test_redis_tls_files_need_rediss(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = Settings.from_env({"SEQSTREAM_REDIS_SSL_CAFILE": str(ca)})
    with pytest.raises(ConfigError, match="expected a rediss:// SEQSTREAM_REDIS_URL"):
        redis_kwargs(settings)
    tls = Settings.from_env({"SEQSTREAM_REDIS_SSL_CAFILE": str(ca),
                             "SEQSTREAM_REDIS_URL": "rediss://cache:6380/0"})
    assert redis_kwargs(tls) == {"ssl_ca_certs": str(ca)}


def test_mask_url_hides_inline_passwords_only() -> None:
    assert mask_url("redis://:pw@h:1/0") == "redis://:***@h:1/0"
    assert mask_url("redis://h:1/0") == "redis://h:1/0"
