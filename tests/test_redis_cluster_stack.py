"""``seqstream stack up --redis-cluster``'s cluster: three masters on loopback, joined into one
Redis Cluster that the worker's URL form reaches (run here on free ports under a private home,
never the shared stack's)."""

from __future__ import annotations

import socket

import pytest
import redis

from seqstream.stack import cluster_nodes, form_cluster
from stream.settings import Settings


def free_base() -> int:
    """A port p with p + 1000..1002 and p + 2000..2002 all free (and under Redis's 55535)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1] % 20_000 + 20_000
        wanted = [base + 1000 + i for i in range(3)] + [base + 2000 + i for i in range(3)]
        if all(socket.socket().connect_ex(("127.0.0.1", p)) != 0 for p in wanted):
            return base
    raise AssertionError("no free port range for a local cluster")


@pytest.mark.integration
def test_the_local_cluster_forms_once_and_takes_keys_in_every_slot(tmp_path):
    settings = Settings.from_env({"SEQSTREAM_HOME": str(tmp_path),
                                  "SEQSTREAM_REDIS_PORT": str(free_base())})
    nodes = cluster_nodes(settings)
    try:
        for node in nodes:
            assert node.start(timeout=30)
        url = form_cluster(nodes)
        assert form_cluster(nodes) == url  # already a cluster: left as it is
        assert url == f"redis+cluster://127.0.0.1:{nodes[0].port}/0"
        client = redis.RedisCluster(host="127.0.0.1", port=nodes[0].port)
        for p in range(16):  # sixteen hash tags land on all three masters
            client.set(f"{{t:{p}}}", p)
        assert [int(client.get(f"{{t:{p}}}")) for p in range(16)] == list(range(16))
        assert len({client.keyslot(f"{{t:{p}}}") // 5462 for p in range(16)}) == 3
        client.close()
    finally:
        for node in nodes:
            node.stop()
