"""``seqstream state``: migrate the layout before partitions, inspect, stats, repartition; and the
worker's refusal of a changed partition count. Against the real shared Redis and Kafka."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from streamkit import create_topics, topic_names

from seqstream.state import inspect_entity, migrate, repartition, stats
from stream.errors import StackError
from stream.settings import Settings
from stream.state import FLAG_FORECAST, RedisStateStore, StateCodec, namespace
from stream.worker import check_partition_count

CODEC = StateCodec(state_size=8, n_features=1)


def old_layout(client: redis.Redis, prefix: str) -> dict[str, bytes]:
    """Three states written as the worker before partitions did: ``<namespace>:<entity>``."""
    rows = CODEC.empty(3)
    rows["flags"], rows["steps"] = FLAG_FORECAST, [5, 6, 7]
    rows["partition"], rows["wm_ts"], rows["wm_offset"] = [0, 1, 1], 10.0, [3, 4, 8]
    rows["state"] = np.arange(24, dtype=np.float32).reshape(3, 8)
    values = dict(zip(["a", "b", "c"], CODEC.encode(rows), strict=True))
    for entity, value in values.items():
        client.set(f"{prefix}:{entity}", value, ex=600)
    return values


@pytest.mark.integration
def test_migrate_moves_old_states_to_their_partitions_and_inspect_reads_them(settings, unique):
    prefix = namespace(unique, "ab" * 32)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, [names["events"]], 2))
    run = Settings.from_env({"SEQSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                             "SEQSTREAM_REDIS_URL": settings.redis_url,
                             "SEQSTREAM_TOPIC_EVENTS": names["events"],
                             "SEQSTREAM_APP_ID": unique})
    sync = redis.Redis.from_url(settings.redis_url)
    values = old_layout(sync, prefix)

    async def go() -> tuple[str, str, str, list[bytes | None]]:
        client = aioredis.Redis.from_url(settings.redis_url)
        said = await migrate(client, run, prefix)
        shown = await inspect_entity(client, prefix, CODEC, "c")
        table = await stats(client, prefix)
        store = RedisStateStore(aioredis.Redis.from_url(settings.redis_url), prefix)
        loaded = await store.load(["a", "b", "c"], [0, 1, 1])
        await store.close()
        await client.aclose()
        return said, shown, table, loaded

    try:
        said, shown, table, loaded = asyncio.run(go())
        assert loaded == [values["a"], values["b"], values["c"]]
        assert not [k for k in sync.scan_iter(match=f"{prefix}:*")
                    if k != f"{prefix}:partitions".encode()]
        assert 500 < sync.ttl(f"{{{prefix}:1}}:c") <= 600  # the TTL went along
        assert "migrated 3 states" in said and "of 2 partitions" in said, said
        assert "steps        7" in shown and "partition 1, offset 8" in shown, shown
        assert "keys in the layout before partitions: 0" in table, table
        print(said, shown, table, sep="\n")
    finally:
        keys = [*sync.scan_iter(match="{" + prefix + ":*"), *sync.scan_iter(match=prefix + ":*")]
        if keys:
            sync.delete(*keys)


@pytest.mark.integration
def test_repartition_moves_each_state_to_its_hashed_partition(settings, unique):
    from aiokafka.partitioner import murmur2

    prefix = namespace(unique, "cd" * 32)
    sync = redis.Redis.from_url(settings.redis_url)
    rows = CODEC.empty(20)
    rows["wm_ts"] = 1.0
    entities = [f"pump-{i}" for i in range(20)]
    for entity, value in zip(entities, CODEC.encode(rows), strict=True):
        sync.set(f"{{{prefix}:0}}:{entity}", value, ex=600)

    async def go() -> str:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            return await repartition(client, prefix, 3)
        finally:
            await client.aclose()

    try:
        said = asyncio.run(go())
        where = {e: (murmur2(e.encode()) & 0x7FFFFFFF) % 3 for e in entities}
        assert all(sync.exists(f"{{{prefix}:{p}}}:{e}") for e, p in where.items())
        assert sync.get(f"{prefix}:partitions") == b"3"
        assert f"moved {sum(p != 0 for p in where.values())} states" in said, said
    finally:
        keys = [*sync.scan_iter(match="{" + prefix + ":*"), *sync.scan_iter(match=prefix + ":*")]
        if keys:
            sync.delete(*keys)


@pytest.mark.integration
def test_a_changed_partition_count_is_refused_with_one_line(settings, unique):
    prefix = namespace(unique, "ef" * 32)

    async def go() -> None:
        client = aioredis.Redis.from_url(settings.redis_url)
        try:
            await check_partition_count(client, prefix, "events", 4)
            await check_partition_count(client, prefix, "events", 4)  # the same count: fine
            with pytest.raises(StackError, match="has 6 partitions but the Redis states"):
                await check_partition_count(client, prefix, "events", 6)
        finally:
            await client.delete(f"{prefix}:partitions")
            await client.aclose()

    asyncio.run(go())
