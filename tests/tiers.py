"""The two test tiers: what a fresh clone runs, and what needs the large shared data sets.

Tier 1 is every test that reads only what ships with the repository (the bundled MIT-BIH
records, the NAB series under ``tests/data/nab``, SKAB-format files the tests write). Tier 2 is
every test marked ``shared``; a test that asks for the ``shared_data`` fixture is marked
automatically, so new tests need no bookkeeping.

- Without the data sets (``../shared/data`` beside the checkout, or ``SEQSTREAM_SHARED_DATA``),
  tier 2 is deselected and the run ends with one line saying so and why.
- In CI (``CI`` set to ``true``/``1``/``yes``, as ``.ci/run`` sets it) nothing may be left out:
  missing data sets stop the run at collection, and the run fails if a tier-2 test was
  deselected (``-m``/``-k``), none ran at all, or any test was skipped.

``tests/conftest.py`` imports the hooks and the fixture from here; ``tests/test_tiers.py`` runs
them in a throwaway pytest session.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

MARK = "shared"
FIXTURE = "shared_data"
DEFAULT_SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

_NOT_RUN = pytest.StashKey[list[str]]()
_DESELECTED = pytest.StashKey[list[str]]()
_RAN = pytest.StashKey[set[str]]()
_PROBLEMS = pytest.StashKey[list[str]]()

__all__ = [
    "in_ci",
    "pytest_collection_modifyitems",
    "pytest_deselected",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "shared_data",
    "shared_path",
]


def shared_path() -> Path:
    """Where tier 2 reads the data sets: ``$SEQSTREAM_SHARED_DATA``, else ``../shared/data``."""
    override = os.environ.get("SEQSTREAM_SHARED_DATA")
    return Path(override) if override else DEFAULT_SHARED


def in_ci() -> bool:
    """True where the CI convention's ``CI`` variable says so (``.ci/run`` exports CI=true)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data sets (MIT-BIH's 48 records, NAB, SKAB): a test that asks for them is
    tier 2, and only runs where they are (see the module docstring)."""
    path = shared_path()
    if not path.is_dir():  # a test that reaches it by getfixturevalue, without the marker
        pytest.fail(f"expected the shared data sets at {path}, found no such folder")
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests that use ``shared_data``; without the data sets leave tier 2 out (or, in
    CI, refuse to run). Runs before ``-m``/``-k`` so ``-m shared`` selects tier 2."""
    config.stash[_DESELECTED] = []
    config.stash[_RAN] = set()
    for item in items:
        if FIXTURE in getattr(item, "fixturenames", ()) and not item.get_closest_marker(MARK):
            item.add_marker(MARK)
    tier2 = [item for item in items if item.get_closest_marker(MARK)]
    config.stash[_NOT_RUN] = []
    if not tier2 or shared_path().is_dir():
        return
    if in_ci():
        raise pytest.UsageError(
            f"CI runs both test tiers: expected the shared data sets at {shared_path()} "
            f"for {len(tier2)} tier-2 tests, found no such folder")
    config.stash[_NOT_RUN] = [item.nodeid for item in tier2]
    items[:] = [item for item in items if not item.get_closest_marker(MARK)]
    config.hook.pytest_deselected(items=tier2)


def pytest_deselected(items: list[pytest.Item]) -> None:
    """Remember tier-2 tests that ``-m``/``-k`` left out: CI fails on them."""
    if not items:
        return
    config = items[0].config
    ours = set(config.stash.get(_NOT_RUN, []))
    config.stash.setdefault(_DESELECTED, []).extend(
        item.nodeid for item in items if item.get_closest_marker(MARK) and item.nodeid not in ours)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Count the tier-2 tests that ran; in CI a skipped test is a failed one (both tiers must
    run in full there)."""
    report = yield
    if report.when == "call" and item.get_closest_marker(MARK):
        item.config.stash.setdefault(_RAN, set()).add(item.nodeid)
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: skipped in CI, where every test must run "
                           f"(skip reason: {report.longrepr})")
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI, fail a run that left tier 2 (or part of it) out."""
    if not in_ci():
        return
    problems = []
    deselected = session.config.stash.get(_DESELECTED, [])
    if deselected:
        problems.append(f"{len(deselected)} tier-2 tests were deselected "
                        f"(first: {deselected[0]})")
    if not session.config.stash.get(_RAN, set()):
        problems.append("no tier-2 test ran")
    if problems:
        session.config.stash[_PROBLEMS] = problems
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line on tier 2: how many tests were left out and why."""
    problems = config.stash.get(_PROBLEMS, [])
    if problems:
        terminalreporter.write_line(f"CI needs both test tiers: {'; '.join(problems)}",
                                    red=True, bold=True)
    not_run = config.stash.get(_NOT_RUN, [])
    if not_run:
        terminalreporter.write_line(
            f"tier 2 not run: {len(not_run)} tests need the shared data sets at "
            f"{shared_path()} (not found); CI runs them, see CONTRIBUTING.md", yellow=True)
