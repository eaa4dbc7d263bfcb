"""The two test tiers (``tests/tiers.py``) in a throwaway pytest session: without the shared
data sets tier 2 is left out with one line that says so; in CI it is required, in full, with
nothing skipped; a test that uses ``shared_data`` is tier 2 without being marked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

EXAMPLE = '''
import pytest

def test_tier_one():
    assert 1 + 1 == 2

def test_reads_the_shared_data(shared_data):
    assert (shared_data / "marker.txt").read_text() == "here"

@pytest.mark.shared
def test_marked_by_hand():
    assert True is not False
'''
SKIPPING = '''
import pytest

def test_skips():
    pytest.skip("not today")
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    shared: tier 2\n")
    (tmp_path / "conftest.py").write_text("from tiers import *  # noqa: F403\n")
    (tmp_path / "test_example.py").write_text(EXAMPLE)
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "marker.txt").write_text("here")
    return tmp_path


def _pytest(project: Path, *args: str, data: str, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env |= {"PYTHONPATH": str(TESTS), "SEQSTREAM_SHARED_DATA": str(project / data),
            "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}  # this session needs no installed plugin
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=project, env=env, capture_output=True, text=True, timeout=120)


def test_without_the_data_tier_two_is_left_out_with_one_line(project: Path) -> None:
    run = _pytest(project, "test_example.py", data="absent", ci=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 2 deselected" in run.stdout
    lines = [line for line in run.stdout.splitlines() if "tier 2" in line]
    assert lines == [f"tier 2 not run: 2 tests need the shared data sets at {project / 'absent'}"
                     " (not found); CI runs them, see CONTRIBUTING.md"]


def test_with_the_data_both_tiers_run_and_the_fixture_marks_tier_two(project: Path) -> None:
    run = _pytest(project, "test_example.py", "-m", "shared", data="data", ci=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed, 1 deselected" in run.stdout and "tier 2 not run" not in run.stdout
    assert "3 passed" in _pytest(project, "test_example.py", data="data", ci=True).stdout


def test_ci_without_the_data_stops_at_collection(project: Path) -> None:
    run = _pytest(project, "test_example.py", data="absent", ci=True)
    assert run.returncode == pytest.ExitCode.USAGE_ERROR
    assert f"expected the shared data sets at {project / 'absent'}" in run.stderr


def test_ci_fails_a_run_that_deselects_tier_two(project: Path) -> None:
    run = _pytest(project, "test_example.py", "-m", "not shared", data="data", ci=True)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED
    assert "CI needs both test tiers: 2 tier-2 tests were deselected" in run.stdout
    run = _pytest(project, "test_example.py", "-k", "tier_one", data="data", ci=True)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED and "no tier-2 test ran" in run.stdout


def test_ci_counts_a_skipped_test_as_failed(project: Path) -> None:
    run = _pytest(project, data="data", ci=True)
    assert run.returncode == pytest.ExitCode.TESTS_FAILED
    assert "1 failed, 3 passed" in run.stdout and "skipped in CI" in run.stdout
    assert "1 skipped" in _pytest(project, data="data", ci=False).stdout
