"""The state stores behave the same (memory, one Redis, a 3-master Redis Cluster): batched
load/save, one value per entity, monotonic saves, idle TTL, model-scoped keys, per-partition
checkpoints with a compare-and-set. The Redis one is checked against the real shared Redis (one
MGET and one script call per batch; bytes per entity close to the raw state size)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from redis_private import start_cluster, stop

from stream.state import (
    FLAG_FORECAST,
    HEADER_BYTES,
    UNCHECKED,
    CheckpointMoved,
    MemoryStateStore,
    RedisStateStore,
    StateCodec,
    StateStore,
    namespace,
)

CODEC = StateCodec(state_size=128, n_features=2)  # e.g. a 2-layer GRU with 64 units


def states(n: int, wm: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = CODEC.empty(n)
    rows["flags"] = FLAG_FORECAST
    rows["steps"] = np.arange(n) + 1
    rows["wm_ts"] = wm
    rows["wm_offset"] = np.arange(n) * 10
    rows["state"] = rng.standard_normal((n, 128)).astype(np.float32)
    rows["forecast"] = rng.standard_normal((n, 2)).astype(np.float32)
    return rows


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory) -> Iterator[int]:
    """A private 3-master Redis Cluster on loopback (never the shared Redis)."""
    procs, ports = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield ports[0]
    for proc in procs:
        stop(proc)


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration),
                        pytest.param("cluster", marks=pytest.mark.integration)])
def make_store(request, settings, unique):
    made: list[StateStore] = []

    async def make(ttl_s: int = 0, model_id: str = "ab" * 32) -> StateStore:
        prefix = namespace(unique, model_id)
        if request.param == "memory":
            store: StateStore = MemoryStateStore(prefix, ttl_s)
        elif request.param == "cluster":
            port = request.getfixturevalue("cluster_port")
            store = RedisStateStore(aioredis.RedisCluster(host="127.0.0.1", port=port), prefix,
                                    ttl_s)
        else:
            store = RedisStateStore(aioredis.Redis.from_url(settings.redis_url), prefix, ttl_s)
        made.append(store)
        return store

    yield make
    if request.param == "redis":
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(match="{" + unique + ":*"))
        if keys:
            client.delete(*keys)


def test_a_batch_round_trips_one_value_per_entity(make_store):
    async def go():
        store = await make_store()
        ids = [f"e{i}" for i in range(50)] + ["üñï code ✓"]
        rows = states(len(ids), wm=100.0)
        assert await store.save(dict(zip(ids, CODEC.encode(rows), strict=True))) == len(ids)
        blobs = await store.load([*ids, "never-seen"])
        back, found = CODEC.decode(blobs)
        assert found.tolist() == [True] * len(ids) + [False]
        assert back[:-1].tobytes() == rows.tobytes()
        assert all(len(b) == HEADER_BYTES + 4 * (128 + 2) for b in blobs[:-1])
        await store.close()

    asyncio.run(go())


def test_a_save_never_moves_a_state_backwards(make_store):
    async def go():
        store = await make_store()
        newer, older = states(3, wm=200.0, seed=1), states(3, wm=150.0, seed=2)
        await store.save(dict(zip("abc", CODEC.encode(newer), strict=True)))
        # a worker that lost the partition finishing a stale batch: ignored
        assert await store.save(dict(zip("abc", CODEC.encode(older), strict=True))) == 0
        back, _ = CODEC.decode(await store.load(list("abc")))
        assert back.tobytes() == newer.tobytes()
        # a later one replaces it; garbage under the key is replaced too
        await store.save({"a": b"junk"})  # junk is "not a state": always overwritten
        later = states(3, wm=300.0, seed=3)
        assert await store.save(dict(zip("abc", CODEC.encode(later), strict=True))) == 3
        back, _ = CODEC.decode(await store.load(list("abc")))
        assert back.tobytes() == later.tobytes()
        await store.close()

    asyncio.run(go())


def test_states_of_another_model_are_invisible(make_store):
    async def go():
        one, two = await make_store(model_id="11" * 32), await make_store(model_id="22" * 32)
        await one.save({"x": CODEC.encode(states(1, wm=5.0))[0]})
        assert await two.load(["x"]) == [None]
        assert (await one.load(["x"]))[0] is not None
        await one.close()
        await two.close()

    asyncio.run(go())


def test_states_and_checkpoint_are_kept_per_partition(make_store):
    async def go():
        store = await make_store()
        a, b = CODEC.encode(states(2, wm=3.0))
        await store.save({"x": a, "y": b}, {"x": 1, "y": 2}, {1: (UNCHECKED, 10), 2: (None, 7)})
        assert await store.load(["x", "y", "x"], [1, 2, 2]) == [a, b, None]
        assert await store.checkpoints([1, 2, 3]) == {1: 10, 2: 7, 3: None}
        await store.close()

    asyncio.run(go())


def test_a_save_whose_checkpoint_moved_is_refused_for_that_partition_only(make_store):
    """Partition 1's stored checkpoint is 10 (as after Redis came back from an older copy) while
    the worker expects 20: partition 1 writes nothing, partition 2 is saved."""
    async def go():
        store = await make_store()
        old = CODEC.encode(states(2, wm=3.0))
        await store.save({"x": old[0], "y": old[1]}, {"x": 1, "y": 2},
                         {1: (None, 10), 2: (None, 5)})
        new = CODEC.encode(states(2, wm=4.0, seed=1))
        with pytest.raises(CheckpointMoved) as info:
            await store.save({"x": new[0], "y": new[1]}, {"x": 1, "y": 2},
                             {1: (20, 30), 2: (5, 9)})
        assert info.value.stored == {1: 10} and info.value.expected == {1: 20}
        assert await store.load(["x", "y"], [1, 2]) == [old[0], new[1]]
        assert await store.checkpoints([1, 2]) == {1: 10, 2: 9}
        # an absent checkpoint is expected as None: a worker expecting one is refused too
        with pytest.raises(CheckpointMoved) as info:
            await store.save({}, {}, {3: (4, 8)})
        assert info.value.stored == {3: None}
        await store.close()

    asyncio.run(go())


def test_an_idle_state_expires_after_its_ttl(make_store):
    async def go():
        store = await make_store(ttl_s=1)
        await store.save({"idle": CODEC.encode(states(1, wm=1.0))[0]})
        assert (await store.load(["idle"]))[0] is not None
        await asyncio.sleep(2.2)
        assert await store.load(["idle"]) == [None]
        await store.close()

    asyncio.run(go())


@pytest.mark.integration
def test_redis_batches_are_one_mget_and_one_script_call(settings, unique):
    """Counted by Redis itself (INFO commandstats), which other tests share: ours must show."""
    sync = redis.Redis.from_url(settings.redis_url)

    def calls(name: str) -> int:
        stats = sync.info("commandstats").get(f"cmdstat_{name}", {})
        return int(stats.get("calls", 0))

    ids = [f"patient-{i:05d}" for i in range(500)]
    prefix = namespace(unique, "cd" * 32)

    async def go():
        store = RedisStateStore(aioredis.Redis.from_url(settings.redis_url), prefix, ttl_s=3600)
        mget0, eval0 = calls("mget"), calls("evalsha") + calls("eval")
        await store.load(ids)
        await store.save(dict(zip(ids, CODEC.encode(states(len(ids), wm=9.0)), strict=True)))
        await store.load(ids)
        assert calls("mget") - mget0 >= 2 and calls("evalsha") + calls("eval") - eval0 >= 1
        await store.close()

    asyncio.run(go())
    assert 3500 < sync.ttl(f"{{{prefix}:0}}:{ids[0]}") <= 3600
    sync.delete(*[f"{{{prefix}:0}}:{i}" for i in ids])


@pytest.mark.integration
@pytest.mark.parametrize(("hidden", "layers", "features"), [(32, 1, 1), (64, 2, 1), (64, 2, 8)])
def test_a_stored_state_is_within_1_3x_of_its_raw_float32_bytes(settings, unique, hidden,
                                                                 layers, features):
    """The stored value (STRLEN) against the raw hidden state + forecast bytes, for the demo's
    GRU (32 units), the large ECG GRU (2 x 64) and an 8-sensor one. Redis's own per-key
    bookkeeping (MEMORY USAGE: key, dict entry, object header, allocator rounding) is printed
    for the record; it is a fixed ~100 bytes per key plus up to 25 % allocator rounding."""
    codec = StateCodec(hidden * layers, features)
    sync = redis.Redis.from_url(settings.redis_url)
    key = f"{namespace('seqstream', 'ef' * 32)}:mitdb-100-{unique[-8:]}"
    rows = codec.empty(1)
    rows["state"] = 0.5
    sync.set(key, codec.encode(rows)[0], ex=60)
    stored, usage = sync.strlen(key), sync.memory_usage(key)
    sync.delete(key)
    print(f"state {hidden}x{layers}, {features} features: raw {codec.raw_bytes} B, value "
          f"{stored} B (x{stored / codec.raw_bytes:.2f}), MEMORY USAGE {usage} B "
          f"(x{usage / codec.raw_bytes:.2f})")
    assert stored == codec.size == codec.raw_bytes + HEADER_BYTES
    assert stored <= 1.3 * codec.raw_bytes


def test_a_load_reads_the_checkpoints_and_refuses_a_moved_one(make_store):
    async def go():
        store = await make_store()
        (a,) = CODEC.encode(states(1, wm=3.0))
        await store.save({"x": a}, {"x": 1}, {1: (None, 10)})
        assert await store.load_checked(["x"], [1], {1: 10}) == [a]
        with pytest.raises(CheckpointMoved) as info:
            await store.load_checked(["x"], [1], {1: 25})
        assert info.value.stored == {1: 10} and info.value.saved == frozenset()
        await store.close()

    asyncio.run(go())
