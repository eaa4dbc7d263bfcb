"""Shared fixtures. Integration tests talk to the real stack that ``seqstream stack up`` starts
(``.ci/run`` starts it before the tests); its addresses come from the same settings the code uses.

Each test names its topics, consumer groups and Redis keys with :func:`unique` so tests never see
each other's data and need no cleanup order.

Data comes in two tiers (``tests/tiers.py``): ``bundled_data`` is what ships with the repository
(tier 1, every run); ``shared_data`` is the full data sets in ``../shared/data`` (tier 2: a test
that asks for it is marked ``shared`` and runs only where they are; CI requires them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled import link_bundled
from tiers import (  # noqa: F401 (hooks and the tier-2 fixture, registered by being here)
    pytest_collection_modifyitems,
    pytest_deselected,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
    shared_data,
)

from stream.settings import Settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name no other test (or earlier run) uses: ``test-<name>-<8 hex>``."""
    name = request.node.name.replace("[", "-").replace("]", "").replace("/", "-")[:40]
    return f"test-{name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def bundled_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tier-1 data in ``../shared/data``'s layout (``mitdb``, ``nab``, ``skab``): the
    bundled MIT-BIH records, the NAB series in tests/data/nab, generated SKAB-format files."""
    return link_bundled(tmp_path_factory.mktemp("bundled"))


@pytest.fixture(params=["redis", "cluster"])
def redis_url(request, settings, tmp_path) -> Iterator[str]:
    """The shared Redis, or a private 3-master Redis Cluster on loopback."""
    if request.param == "redis":
        yield settings.redis_url
        return
    from redis_private import start_cluster, stop

    procs, ports = start_cluster(tmp_path / "cluster")
    yield f"redis+cluster://127.0.0.1:{ports[0]}/0"
    for proc in procs:
        stop(proc)
