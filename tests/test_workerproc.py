"""The one subprocess helper of demo, evaluation, bench and tests: ready line, log per start,
SIGTERM then SIGKILL, and an early exit reported with the log's end."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from seqstream.workerproc import READY, WorkerProcess, stop_all
from stream.errors import StackError


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_ready_then_stopped_by_sigterm_with_a_log_per_start(tmp_path: Path) -> None:
    proc = WorkerProcess(python(f"import time; print({READY!r}, flush=True); time.sleep(60)"),
                         {}, tmp_path, name="w")
    assert proc.log_path == tmp_path / "w.log" and proc.exited() is None
    proc.start().wait_ready(30)
    assert proc.stop(30) == -signal.SIGTERM and not proc.killed
    proc.start().wait_ready(30)
    assert proc.log_path == tmp_path / "w-2.log" and READY in proc.log()
    stop_all([proc], 30)
    assert proc.exited() == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    code = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"print({READY!r}, flush=True); time.sleep(60)")
    proc = WorkerProcess(python(code), {}, tmp_path).start()
    proc.wait_ready(30)
    assert proc.stop(0.5) == -signal.SIGKILL and proc.killed


def test_an_exit_before_ready_is_one_error_with_the_log(tmp_path: Path) -> None:
    proc = WorkerProcess(python("import sys; print('no Kafka here'); sys.exit(3)"), {},
                         tmp_path).start()
    with pytest.raises(StackError, match=r"(?s)exited with 3.*no Kafka here"):
        proc.wait_ready(30)
