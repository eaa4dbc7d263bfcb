"""A worker (``python -m seqstream worker``) as a subprocess, started and stopped one way.

The demo, the live evaluation, the benchmark and the tests each run workers in processes of their
own: a Faust app owns its process and event loop, two processes form a two-member consumer group,
and a test must be able to ``kill -9`` one. They share this class: the command, its log file (a
worker logs to stdout and stderr), waiting for it to be ready (its ``seqstream worker ready``
line, logged once partitions are assigned), and the stop (SIGTERM, which lets Faust finish the
batch in flight and commit; SIGKILL after a timeout).

:func:`settings_env` spells settings as the worker reads them, so a run on private topics and a
private consumer group is ``{**os.environ, **settings_env(topic_events=..., app_id=...)}``.

>>> settings_env(topic_events="t.events", warmup_steps=0)
{'SEQSTREAM_TOPIC_EVENTS': 't.events', 'SEQSTREAM_WARMUP_STEPS': '0'}
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from stream.errors import StackError
from stream.settings import env_name

__all__ = ["READY", "WorkerProcess", "settings_env", "stop_all", "worker_argv"]

READY = "seqstream worker ready"


def worker_argv(model: str | Path | None = None, python_flags: Sequence[str] = ()) -> list[str]:
    """``python [flags] -m seqstream worker [--model MODEL]`` with this interpreter."""
    return [sys.executable, *python_flags, "-m", "seqstream", "worker",
            *(["--model", str(model)] if model is not None else [])]


def settings_env(**values: Any) -> dict[str, str]:
    """``SEQSTREAM_*`` variables for the named settings (``topic_events=...`` and so on)."""
    return {env_name(name): str(value) for name, value in values.items()}


class WorkerProcess:
    """One subprocess (by default a worker) logging to a file; :meth:`start` may be called again
    after a stop or a kill, each start with a log of its own (:attr:`log_path`)."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log_dir: Path,
                 name: str = "worker", cwd: Path | None = None) -> None:
        self.argv, self.env, self.cwd = list(argv), dict(env), cwd
        self.log_dir, self.name = log_dir, name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.killed = False  # the last wait ran out and the process was SIGKILLed

    @property
    def log_path(self) -> Path:
        """The current (or first) start's log: ``<name>.log``, then ``<name>-2.log``, ..."""
        suffix = "" if self.starts <= 1 else f"-{self.starts}"
        return self.log_dir / f"{self.name}{suffix}.log"

    def start(self) -> Self:
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def exited(self) -> int | None:
        """The exit code once the process ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def check_alive(self, what: str) -> None:
        """Raise :class:`StackError` (with the log's end) if the process exited."""
        code = self.exited()
        if code is not None:
            raise StackError(f"{what}: the {self.name} exited with {code}; its log "
                             f"({self.log_path}) ends:\n{self.log()[-2000:]}")

    def wait_ready(self, timeout: float = 90.0, marker: str = READY) -> None:
        """Until the log shows ``marker`` (the worker was assigned partitions); a process that
        exits first, or a timeout, is a :class:`StackError` with the log's end."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log():
                return
            self.check_alive(f"expected {marker!r} in the log")
            time.sleep(0.2)
        raise StackError(f"expected the {self.name} to log {marker!r} within {timeout:.0f} s, it "
                         f"did not; its log ({self.log_path}) ends:\n{self.log()[-2000:]}")

    def kill9(self) -> None:
        """SIGKILL, as a crash: nothing of the batch in flight is acknowledged or saved."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        """SIGTERM if running: Faust finishes the batch in flight, commits and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        """Wait for the exit; SIGKILL after ``timeout`` (then :attr:`killed` is set). Returns
        the exit code (None if never started)."""
        if self.proc is None:
            return None
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.proc.kill()
            self.proc.wait(10)
        return self.proc.returncode

    def stop(self, timeout: float = 60.0) -> int | None:
        """:meth:`terminate`, then :meth:`wait`."""
        self.terminate()
        return self.wait(timeout)


def stop_all(processes: Sequence[WorkerProcess], timeout: float = 30.0) -> None:
    """SIGTERM every process at once, then wait for each within one shared ``timeout``."""
    for p in processes:
        p.terminate()
    deadline = time.monotonic() + timeout
    for p in processes:
        p.wait(max(0.1, deadline - time.monotonic()))
