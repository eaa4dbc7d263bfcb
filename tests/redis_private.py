"""A private redis-server for tests that need one configured their own way (a password, TLS) or
must stop it: never the shared Redis of the local stack."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

__all__ = ["free_port", "start_cluster", "start_redis", "stop"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis(args: list[str], port: int, workdir: Path) -> subprocess.Popen:
    """``redis-server`` on 127.0.0.1 with ``args`` (which name the port), once it listens."""
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(workdir), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {proc.stdout.read().decode()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"redis-server did not listen on {port} within 10 s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def start_cluster(workdir: Path, masters: int = 3) -> tuple[list[subprocess.Popen], list[int]]:
    """``masters`` cluster-enabled redis-servers on loopback joined into one Redis Cluster (no
    replicas), once every slot is served."""
    import redis

    ports, procs = [free_port() for _ in range(masters)], []
    for port in ports:
        node = workdir / f"node-{port}"
        node.mkdir(parents=True)
        procs.append(start_redis(["--port", str(port), "--cluster-enabled", "yes",
                                  "--cluster-port", str(free_port()),  # else port + 10000
                                  "--cluster-config-file", f"nodes-{port}.conf"], port, node))
    subprocess.run(["redis-cli", "--cluster", "create",
                    *[f"127.0.0.1:{p}" for p in ports], "--cluster-replicas", "0",
                    "--cluster-yes"], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(redis.Redis(port=p).cluster("INFO").get("cluster_state") == "ok" for p in ports):
            return procs, ports
        time.sleep(0.2)
    for proc in procs:
        stop(proc)
    raise RuntimeError(f"Redis Cluster on {ports} not ok within 30 s")
