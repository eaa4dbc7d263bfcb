"""``seqstream stack``'s process handling: idempotent up, clean down, clear errors.

These start private servers on free ports in a temporary directory, never the shared stack.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from seqstream.stack import KafkaServer, PrometheusServer, RedisServer, _pid_alive, port_open
from stream.errors import StackError

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_up_twice_is_harmless_and_down_stops_it(tmp_path):
    server = RedisServer(tmp_path / "redis", free_port())
    assert server.start() is True
    pid = server.pid()
    assert pid is not None and server.healthy()
    assert server.start() is False  # already running: left alone
    assert server.pid() == pid
    assert server.stop() is True
    assert not _pid_alive(pid) and not port_open(server.port)
    assert not os.path.exists(f"/proc/{pid}"), "the stopped server was left a zombie"
    assert server.stop() is False


def test_a_port_taken_by_someone_else_is_named(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = RedisServer(tmp_path / "redis", port)
        with pytest.raises(StackError, match=rf"port {port} .* already in use .*"
                                             r"SEQSTREAM_REDIS_PORT"):
            server.start()
        assert server.pid() is None


def test_prometheus_with_other_ports_scrapes_the_configured_worker_port(tmp_path):
    server = PrometheusServer(tmp_path / "prom", free_port(), metrics_port=free_port())
    try:
        assert server.start()
        written = (tmp_path / "prom" / "prometheus.yml").read_text()
        assert f"127.0.0.1:{server.port}" in written
        assert f"127.0.0.1:{server.metrics_port}" in written
    finally:
        server.stop()
    assert not port_open(server.port)


@pytest.mark.slow
def test_private_kafka_broker_formats_starts_and_stops(tmp_path, settings):
    jars = settings.home / KafkaServer.jars_name()
    server = KafkaServer(tmp_path / "kafka", free_port(), free_port(), "384m", jars)
    try:
        assert server.start(timeout=120)
        assert (tmp_path / "kafka" / "data" / "meta.properties").exists()
        assert server.healthy()
    finally:
        server.stop()
    assert not port_open(server.port) and server.pid() is None


def test_stack_status_reports_each_part():
    """The CLI front: ``status`` names each part with its address (the shared stack is up)."""
    done = subprocess.run([sys.executable, "-m", "seqstream", "stack", "status"],
                          capture_output=True, text=True, timeout=60)
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["kafka", "redis", "prometheus"]
    assert all("healthy" in line for line in lines), done.stdout
    assert done.returncode == 0
