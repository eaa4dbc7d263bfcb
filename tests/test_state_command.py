"""``seqstream state``: migrate the layout before partitions, inspect, stats, repartition; and the
worker's refusal of a changed partition count. Against the real shared Redis and Kafka; the
migration also end to end, from a group with committed offsets to a worker that resumes there."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis
from streamkit import (
    REPO,
    EventSet,
    WorkerProcess,
    assert_predictions_match,
    assert_states_equal,
    consume,
    create_topics,
    free_port,
    make_artifact,
    produce,
    redis_states,
    reference_run,
    topic_names,
)

from seqstream.state import inspect_entity, migrate, repartition, stats
from stream.artifact import load_artifact
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


async def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]
                         ) -> None:
    """Commit ``offsets`` (partition → next offset to read) for ``group``, as the old worker's
    Faust consumer did."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = {p: TopicPartition(topic, p) for p in offsets}
        consumer.assign(list(tps.values()))
        await consumer.commit({tps[p]: o for p, o in offsets.items()})
    finally:
        await consumer.stop()



@pytest.mark.integration
@pytest.mark.slow
def test_migrate_with_committed_offsets_lets_the_new_worker_resume_without_loss(
        tmp_path, bundled_data, settings, unique, redis_url):
    """A deployment before partitions: the first half of a stream consumed by the old worker
    (its states under ``<namespace>:<entity>``, the group's offsets committed in Kafka, no
    checkpoint). ``seqstream state migrate`` moves the states and turns the committed offsets
    into checkpoints; the new worker starts at those offsets (not the earliest: no event of the
    first half is read again, none is called lost) and streams the second half: every
    prediction of it and every final state equal the uninterrupted offline run's."""
    events = EventSet(bundled_data, entities=12, per_entity=200, t0=time.time(), chunk_every=4)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:6]))
    artifact = load_artifact(art)
    prefix = namespace(unique, artifact.model_id)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    records = events.interleaved(seed=4)
    half = len(records) // 2
    sources = asyncio.run(produce(settings.kafka_bootstrap, names["events"], records[:half]))
    # the old worker's work: its states, in the layout before partitions, and its commits
    first, old_states = reference_run(art, records[:half], sources, names["events"])
    cluster = "+cluster://" in redis_url
    sync = (redis.RedisCluster.from_url(redis_url.replace("+cluster://", "://", 1)) if cluster
            else redis.Redis.from_url(redis_url))
    for entity, value in old_states.items():
        sync.set(f"{prefix}:{entity}", value, ex=3600)
    committed = {p: max(o for q, o in sources if q == p) + 1 for p in {q for q, _ in sources}}
    assert len(committed) == 2
    asyncio.run(commit_offsets(settings.kafka_bootstrap, unique, names["events"], committed))

    metrics_port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=redis_url, partitions=2, batch_max=100,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(metrics_port)})

    def state_command(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "seqstream", "state", *args, "--model",
                               str(art)], cwd=REPO, env=worker.env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    try:
        said = state_command("migrate")
        checkpoints = {p: int(sync.get(f"{{{prefix}:{p}}}")) for p in committed}
        worker.start().wait_ready()
        sources += asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                       records[half:]))
        ends = {p: max(o for q, o in sources if q == p) + 1 for p in committed}
        deadline = time.monotonic() + 120
        while any(int(sync.get(f"{{{prefix}:{p}}}") or 0) < ends[p] for p in ends):
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        want_predictions, want_states = reference_run(art, records, sources, names["events"])
        second = {k: v for k, v in want_predictions.items() if k not in first}
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len(g[names["predictions"]]) >= len(second),
            timeout=120))[names["predictions"]]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                         timeout=10).read().decode()
        states = redis_states(redis_url, unique, artifact.model_id, sorted(want_states))
        entity = sorted(want_states)[0]
        shown, table = state_command("inspect", entity).stdout, state_command("stats").stdout
    finally:
        code = worker.stop()
        if not cluster:  # the private cluster goes with its servers
            keys = [*sync.scan_iter(match="{" + prefix + ":*"),
                    *sync.scan_iter(match=prefix + ":*")]
            if keys:
                sync.delete(*keys)
        sync.close()
    log = worker.log()
    assert code == 0, log[-3000:]
    assert f"migrated {len(old_states)} states" in said.stdout, said.stdout
    assert "written for 2 of 2 partitions" in said.stdout, said.stdout
    assert checkpoints == committed
    assert "no Redis checkpoint" not in log, log[-3000:]
    consumed = [ln for ln in metrics.splitlines() if ln.startswith("seqstream_events_total")]
    assert consumed and float(consumed[0].split()[-1]) == len(records) - half, consumed
    assert_predictions_match(got, second, threshold=3.0)  # none of the first half again
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    assert_states_equal(codec, states, want_states)
    want, _ = codec.decode([want_states[entity]])
    assert f"steps        {int(want['steps'][0])}" in shown, shown
    assert all(f"{p:>9} {ends[p]:>12}" in table for p in ends), table
    print(said.stdout.strip())
    print(f"{half} events before the migration, {len(records) - half} after; checkpoints "
          f"{checkpoints} from the committed offsets; {len(got)} predictions after it")
