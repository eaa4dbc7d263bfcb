"""Redis bytes per entity against the raw state bytes, in a private redis-server.

The states are the worker's own values (:class:`stream.state.StateCodec`: a 32-byte header, the
packed float32 hidden state, the last 1-step forecast) written through
:class:`stream.state.RedisStateStore` with the worker's idle TTL and key layout
(``{<namespace>:<partition>}:<entity>``, over :data:`PARTITIONS` partitions, each save writing
the partitions' checkpoints too), as the worker writes them. A
private ``redis-server`` on a free port keeps the shared one free of a million keys and makes
``used_memory`` a clean before/after difference::

    per_entity   = (used_memory after - used_memory before) / N       (hash tables included)
    memory_usage = mean of MEMORY USAGE over a sample of keys         (key, value, allocator
                                                                       rounding; no table slot)
    ratio        = per_entity / raw hidden-state bytes (4 * state_size)
"""

from __future__ import annotations

import asyncio
import socket
import tempfile
from pathlib import Path

import numpy as np

from stream.state import UNCHECKED, RedisStateStore, StateCodec, namespace

__all__ = ["PARTITIONS", "state_cost"]

PARTITIONS = 4  # the default SEQSTREAM_PARTITIONS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _measure(port: int, codec: StateCodec, counts: list[int], model_id: str,
                   ttl_s: int, chunk: int = 5000, sample: int = 2000) -> list[dict]:
    import redis.asyncio

    client = redis.asyncio.Redis(port=port)
    rng = np.random.default_rng(0)
    rows = []
    try:
        for n in counts:
            await client.flushall()
            before = int((await client.info("memory"))["used_memory"])
            store = RedisStateStore(client, namespace("bench", model_id), ttl_s)
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                st = codec.empty(hi - lo)
                st["state"] = rng.standard_normal(st["state"].shape).astype(np.float32)
                st["forecast"] = rng.standard_normal(st["forecast"].shape).astype(np.float32)
                st["wm_ts"] = 1.7e9
                ids = [f"b-{100 + i % 48}@{i}" for i in range(lo, hi)]
                parts = {e: i % PARTITIONS for i, e in zip(range(lo, hi), ids, strict=True)}
                await store.save(dict(zip(ids, codec.encode(st), strict=True)), parts,
                                 {p: (UNCHECKED, hi) for p in range(PARTITIONS)})
            after = int((await client.info("memory"))["used_memory"])
            picks = rng.choice(n, size=min(sample, n), replace=False)
            usage = [await client.memory_usage(store.key(f"b-{100 + i % 48}@{i}", i % PARTITIONS))
                     for i in picks.tolist()]
            per_entity = (after - before) / n
            raw = 4 * codec.state_size
            rows.append({"entities": n, "value_bytes": codec.size, "raw_state_bytes": raw,
                         "used_memory_per_entity": round(per_entity, 1),
                         "memory_usage_mean": round(float(np.mean(usage)), 1),
                         "ratio_to_raw": round(per_entity / raw, 3),
                         "ratio_to_value": round(per_entity / codec.size, 3),
                         "ttl_s": ttl_s})
    finally:
        await client.aclose()
    return rows


def state_cost(state_size: int, n_features: int, counts: list[int], model_id: str,
               ttl_s: int) -> list[dict]:
    """Bytes per entity for each entity count in ``counts`` (see the module docstring)."""
    from seqstream.stack import RedisServer

    with tempfile.TemporaryDirectory(prefix="seqstream-bench-redis-") as tmp:
        server = RedisServer(Path(tmp), _free_port(), appendfsync="no")
        if not server.start(timeout=30):
            raise RuntimeError(f"private redis-server on port {server.port} did not start")
        try:
            return asyncio.run(_measure(server.port, StateCodec(state_size, n_features), counts,
                                        model_id, ttl_s))
        finally:
            server.stop()
