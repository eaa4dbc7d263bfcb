"""A private redis-server for tests that need one configured their own way (a password, TLS) or
must stop it: never the shared Redis of the local stack."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

__all__ = ["add_replica", "free_port", "start_cluster", "start_redis", "stop"]


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


def add_replica(workdir: Path, master_port: int, args: tuple[str, ...] = ()
                ) -> tuple[subprocess.Popen, int]:
    """A cluster-enabled redis-server (``args`` added) joined to the cluster as a replica of the
    master on ``master_port``, once its replication link is up: a cluster with a failover
    target."""
    import redis

    port = free_port()
    node = workdir / f"node-{port}"
    node.mkdir(parents=True)
    proc = start_redis(["--port", str(port), "--cluster-enabled", "yes",
                        "--cluster-port", str(free_port()),
                        "--cluster-config-file", f"nodes-{port}.conf", *args], port, node)
    master = redis.Redis(port=master_port)
    master.config_set("repl-diskless-sync-delay", 0)  # the first sync now, not in 5 s
    master_id = master.execute_command("CLUSTER", "MYID").decode()
    master.close()
    subprocess.run(["redis-cli", "--cluster", "add-node", f"127.0.0.1:{port}",
                    f"127.0.0.1:{master_port}", "--cluster-slave", "--cluster-master-id",
                    master_id], check=True, capture_output=True, timeout=60)
    replica = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while replica.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            stop(proc)
            raise RuntimeError(f"replica on {port} of {master_port}: no link within 30 s")
        time.sleep(0.2)
    replica.close()
    return proc, port
