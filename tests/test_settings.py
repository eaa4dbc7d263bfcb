"""The settings object: env vars and flags, with errors that name the variable."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from stream.errors import ConfigError
from stream.settings import Settings, add_flags, describe, env_name


def test_defaults_are_the_documented_real_defaults():
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert (s.topic_events, s.topic_predictions, s.topic_anomalies, s.topic_deadletter) == (
        "seqstream.events", "seqstream.predictions", "seqstream.anomalies", "seqstream.deadletter")
    assert s.prometheus_port == 9090 and s.redis_appendfsync == "everysec"


def test_env_vars_are_parsed_to_their_types():
    s = Settings.from_env({"SEQSTREAM_PARTITIONS": "12", "SEQSTREAM_MAX_GAP_S": "2.5",
                           "SEQSTREAM_MODEL": "~/m", "SEQSTREAM_REDIS_URL": "rediss://h:1/0",
                           "SEQSTREAM_INFLIGHT": "3", "SEQSTREAM_STATE_CACHE": "0"})
    assert s.partitions == 12 and s.max_gap_s == 2.5
    assert s.inflight == 3 and s.state_cache == 0
    assert s.model == Path("~/m").expanduser() and s.redis_url == "rediss://h:1/0"


@pytest.mark.parametrize(("var", "raw", "expected"), [
    ("SEQSTREAM_PARTITIONS", "0", "an integer in [1, 10000]"),
    ("SEQSTREAM_BATCH_MAX", "ten", "an integer in [1, 1000000]"),
    ("SEQSTREAM_INFLIGHT", "0", "an integer in [1, 64]"),
    ("SEQSTREAM_STATE_CACHE", "-1", "an integer in [0, 100000000]"),
    ("SEQSTREAM_MAX_GAP_S", "nan", "a number >= 0.0"),
    ("SEQSTREAM_KAFKA_BOOTSTRAP", "localhost", "host:port"),
    ("SEQSTREAM_REDIS_URL", "http://x", "a redis://, rediss://, unix:// URL, or redis+cluster://"),
    ("SEQSTREAM_REDIS_APPENDFSYNC", "sometimes", "one of always, everysec, no"),
    ("SEQSTREAM_KAFKA_HEAP", "512", "a JVM heap size"),
    ("SEQSTREAM_TOPIC_EVENTS", "  ", "a non-empty string"),
])
def test_a_bad_value_names_the_variable_what_was_expected_and_what_came(var, raw, expected):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({var: raw})
    message = str(caught.value)
    assert message.startswith(f"{var}: expected {expected}")
    assert message.endswith(f"got {raw!r}")


def test_an_unknown_variable_is_refused_rather_than_ignored():
    with pytest.raises(ConfigError, match="unknown setting SEQSTREAM_BATCH_SIZ"):
        Settings.from_env({"SEQSTREAM_BATCH_SIZ": "10"})


def test_a_flag_beats_the_env_var_and_its_help_names_the_variable():
    parser = argparse.ArgumentParser()
    add_flags(parser, ["batch_max", "redis_url"])
    assert "SEQSTREAM_BATCH_MAX" in parser.format_help()
    args = parser.parse_args(["--batch-max", "7"])
    s = Settings.from_env({"SEQSTREAM_BATCH_MAX": "9"}, overrides=vars(args))
    assert s.batch_max == 7
    with pytest.raises(ConfigError, match=r"^--batch-max: expected"):
        Settings.from_env({}, overrides=vars(parser.parse_args(["--batch-max", "-1"])))


def test_settings_are_frozen_and_every_field_is_described():
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.batch_max = 3  # type: ignore[misc]
    names = {row[0] for row in describe()}
    assert names == {env_name(f.name) for f in dataclasses.fields(Settings)}


def test_moving_the_stack_ports_moves_the_client_addresses_unless_they_are_set():
    s = Settings.from_env({"SEQSTREAM_KAFKA_PORT": "19092", "SEQSTREAM_REDIS_PORT": "16379"})
    assert s.kafka_bootstrap == "127.0.0.1:19092"
    assert s.redis_url == "redis://127.0.0.1:16379/0"
    s = Settings.from_env({"SEQSTREAM_KAFKA_PORT": "19092",
                           "SEQSTREAM_KAFKA_BOOTSTRAP": "kafka:9092"})
    assert s.kafka_bootstrap == "kafka:9092"


def test_prometheus_url_follows_the_stack_port_unless_set():
    assert Settings.from_env({"SEQSTREAM_PROMETHEUS_PORT": "19090"}).prometheus_url == (
        "http://127.0.0.1:19090")
    s = Settings.from_env({"SEQSTREAM_PROMETHEUS_PORT": "19090",
                           "SEQSTREAM_PROMETHEUS_URL": "http://prometheus:9090/"})
    assert s.prometheus_url == "http://prometheus:9090"
    with pytest.raises(ConfigError, match="SEQSTREAM_PROMETHEUS_URL: expected an http"):
        Settings.from_env({"SEQSTREAM_PROMETHEUS_URL": "prometheus:9090"})
