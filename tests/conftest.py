"""Shared fixtures. Integration tests talk to the real stack that ``seqstream stack up`` starts
(``.ci/run`` starts it before the tests); its addresses come from the same settings the code uses.

Each test names its topics, consumer groups and Redis keys with :func:`unique` so tests never see
each other's data and need no cleanup order.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from stream.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name no other test (or earlier run) uses: ``test-<name>-<8 hex>``."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:40]
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data: the real recorded data sets (MIT-BIH, NAB, SKAB) for tests and CI."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"expected the shared data sets at {SHARED_DATA}")
    return SHARED_DATA
