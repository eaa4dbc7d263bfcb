"""The state store's own throughput: a single redis-server against a 3-master Redis Cluster.

Each round is what the worker does per batch: one checked load (the batch's states and the
partitions' checkpoints) and one save (states and checkpoints, a compare-and-set per partition),
for ``batch`` entities spread over :data:`PARTITIONS` partitions, through
:class:`stream.state.RedisStateStore`. Both servers are private, on free loopback ports, AOF off
(the disk is not what is measured). The two run alternately, ``repeats`` times each, in the same
process, so that a load that comes and goes on a shared machine falls on both alike::

    states_per_s = median over the repeats of batch * rounds / wall seconds of the rounds
    vs_single    = the cluster's states_per_s / the single Redis's
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from stream.state import RedisStateStore, StateCodec, namespace

__all__ = ["PARTITIONS", "store_throughput"]

PARTITIONS = 4


def _free_base() -> int:
    """A port p with p + 1000..1002 and p + 2000..2002 free (the local cluster's layout)."""
    for port in range(21_000, 40_000, 37):
        wanted = [port + 1000 + i for i in range(3)] + [port + 2000 + i for i in range(3)]
        if all(socket.socket().connect_ex(("127.0.0.1", p)) != 0 for p in wanted):
            return port
    raise RuntimeError("no free port range for a private cluster")


async def _rounds(client: Any, codec: StateCodec, batch: int, rounds: int, run: int) -> float:
    store = RedisStateStore(client, namespace(f"bench-{run}", "ab" * 32), ttl_s=3600)
    ids = [f"b-{i}" for i in range(batch)]
    parts = [i % PARTITIONS for i in range(batch)]
    part_of = dict(zip(ids, parts, strict=True))
    values = dict(zip(ids, codec.encode(codec.empty(batch)), strict=True))
    positions: dict[int, int | None] = dict.fromkeys(range(PARTITIONS))
    began = time.perf_counter()
    for r in range(rounds):
        await store.load_checked(ids, parts, positions)
        write = {p: (positions[p], (r + 1) * batch) for p in range(PARTITIONS)}
        await store.save(values, part_of, write)
        positions = {p: w for p, (_, w) in write.items()}
    elapsed = time.perf_counter() - began
    await store.close()
    return batch * rounds / elapsed


def store_throughput(state_size: int, n_features: int, batch: int = 1000,
                     rounds: int = 200, repeats: int = 3) -> list[dict]:
    """States per second through the store on one Redis and on a 3-master cluster, and their
    ratio."""
    import redis.asyncio

    from seqstream.stack import RedisServer, cluster_nodes, form_cluster
    from stream.settings import Settings

    codec = StateCodec(state_size, n_features)
    with tempfile.TemporaryDirectory(prefix="seqstream-bench-store-") as tmp:
        base = _free_base()
        single = RedisServer(Path(tmp) / "single", base, appendfsync="no")
        settings = Settings.from_env({"SEQSTREAM_HOME": tmp,
                                      "SEQSTREAM_REDIS_PORT": str(base),
                                      "SEQSTREAM_REDIS_APPENDFSYNC": "no"})
        nodes = cluster_nodes(settings)
        clients = {"single": lambda: redis.asyncio.Redis(port=base),
                   "cluster of 3": lambda: redis.asyncio.RedisCluster(host="127.0.0.1",
                                                                      port=nodes[0].port)}
        runs: dict[str, list[float]] = {name: [] for name in clients}
        try:
            single.start(timeout=30)
            for node in nodes:
                node.start(timeout=30)
            form_cluster(nodes)
            for run in range(repeats):  # each run its own keys: checkpoints start absent
                for name, client in clients.items():
                    runs[name].append(asyncio.run(_rounds(client(), codec, batch, rounds, run)))
        finally:
            single.stop()
            for node in nodes:
                node.stop()
    rates = {name: statistics.median(r) for name, r in runs.items()}
    return [{"redis": name, "batch": batch, "partitions": PARTITIONS, "rounds": rounds,
             "repeats": repeats, "states_per_s": round(rate),
             "runs": [round(r) for r in runs[name]],
             "vs_single": round(rate / rates["single"], 2)} for name, rate in rates.items()]
