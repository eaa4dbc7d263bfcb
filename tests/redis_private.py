"""A private redis-server for tests that need one configured their own way (a password, TLS) or
must stop it: never the shared Redis of the local stack."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

__all__ = ["free_port", "start_redis", "stop"]


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
