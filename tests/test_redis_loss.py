"""Redis forgets acknowledged writes while the worker keeps running, and states are lost whole.

A PRIVATE redis-server (AOF, fsync always) is copied in the middle of a stream; the stream goes on
for a few seconds; Redis is stopped and restarted from the copy, so it has forgotten every save
since. (kill -9 of redis-server would lose nothing: what it wrote is in the kernel.) The running
worker's next save is refused by the checkpoint compare-and-set, it seeks back, and the lost
events are applied again: every sample's final prediction and every final state equal the
uninterrupted offline run, none is missing, the rewind is logged. The same on a Redis Cluster whose
master fails over to a replica that was paused behind it (``DEBUG SLEEP``, then kill -9 of the
master and ``CLUSTER FAILOVER TAKEOVER``).
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable

import numpy as np
import pytest
import redis
from streamkit import (
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

from seqstream.stack import RedisServer
from stream.artifact import load_artifact
from stream.state import StateCodec, namespace, parse_key


def checkpoint_sum(url: str, prefix: str, partitions: int) -> int:
    client = redis.Redis.from_url(url)
    try:
        values = client.mget([f"{{{prefix}:{p}}}" for p in range(partitions)])
    finally:
        client.close()
    return sum(int(v) for v in values if v is not None)


def wait_checkpoints(url: str, prefix: str, partitions: int, want: int, timeout: float) -> None:
    """Until the checkpoints say ``want`` records were applied (partitions start at offset 0)."""
    deadline = time.monotonic() + timeout
    while checkpoint_sum(url, prefix, partitions) < want:
        assert time.monotonic() < deadline, (checkpoint_sum(url, prefix, partitions), want)
        time.sleep(0.2)


def final_predictions(records: list[dict]) -> list[dict]:
    """The last prediction of each (entity, ts): the predictions topic is keyed by entity, so
    per entity the consumed order is the produced order."""
    last = {}
    for rec in records:
        last[(rec["entity_id"], rec["ts"])] = rec
    return list(last.values())


def assert_final_as_reference(art, artifact, records, sources, events: str, got: list[dict],
                              states) -> list[dict]:
    """The last prediction of each event and every saved state equal those of a clean run over
    the same records; returns those last predictions."""
    want_predictions, want_states = reference_run(art, records, sources, events)
    final = final_predictions(got)
    assert_predictions_match(final, want_predictions, threshold=3.0)
    assert_states_equal(StateCodec(artifact.model.state_size, artifact.n_features), states,
                        want_states)
    return final


@pytest.mark.integration
@pytest.mark.slow
def test_a_running_worker_rewinds_when_redis_comes_back_from_an_older_copy(
        tmp_path, shared_data, settings, unique):
    server = RedisServer(tmp_path / "redis", free_port(), appendfsync="always")
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    events = EventSet(shared_data, entities=20, per_entity=240, t0=time.time(), chunk_every=5)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:10]))
    artifact = load_artifact(art)
    prefix = namespace(unique, artifact.model_id)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=url, partitions=2, batch_max=100)
    records = events.interleaved(seed=5)
    slices = np.array_split(np.arange(len(records)), 9)
    sources: list[tuple[int, int]] = []

    def send(i: int) -> None:
        sources.extend(asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                           [records[j] for j in slices[i]])))

    copy = tmp_path / "aof-copy"
    try:
        worker.start().wait_ready()
        for i in range(3):
            send(i)
        wait_checkpoints(url, prefix, 2, len(sources), timeout=60)
        shutil.copytree(server.dir / "appendonlydir", copy)
        at_copy = checkpoint_sum(url, prefix, 2)
        for i in range(3, 6):
            send(i)
            time.sleep(1.0)
        wait_checkpoints(url, prefix, 2, len(sources), timeout=60)
        server.stop()
        shutil.rmtree(server.dir / "appendonlydir")
        shutil.copytree(copy, server.dir / "appendonlydir")
        server.start()
        assert checkpoint_sum(url, prefix, 2) == at_copy  # Redis forgot the saves since the copy
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
        for i in range(6, 9):
            send(i)
        wait_checkpoints(url, prefix, 2, len(sources), timeout=120)
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=120))[names["predictions"]]
        states = redis_states(url, unique, artifact.model_id, sorted(events.values))
    finally:
        code = worker.stop()
        server.stop()
    log = worker.log()
    assert code == 0, log[-3000:]
    assert log.count("partition sought back") == 2, log[-3000:]  # both were behind the copy
    final = assert_final_as_reference(art, artifact, records, sources, names["events"], got,
                                      states)
    print(f"{len(records)} events; checkpoints {at_copy} at the copy, {len(sources)} at the end;"
          f" {len(got)} prediction records for {len(final)} events; rewinds logged "
          f"{log.count('partition sought back')}")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("action", ["rebuild", "reset"])
def test_state_loss_after_a_flushall(tmp_path, shared_data, settings, unique, action):
    """The worker is stopped, its private Redis flushed (committed offsets stay in Kafka), and
    started again. ``rebuild``: every partition is read again from the earliest offset, so the
    final states equal the uninterrupted run's. ``reset``: it goes on from the committed offsets
    with fresh states (steps counted from there), each partition logged once."""
    server = RedisServer(tmp_path / "redis", free_port(), appendfsync="always")
    server.start()
    url = f"redis://127.0.0.1:{server.port}/0"
    events = EventSet(shared_data, entities=12, per_entity=200, t0=time.time(), chunk_every=4)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:6]))
    artifact = load_artifact(art)
    prefix = namespace(unique, artifact.model_id)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=url, partitions=2, batch_max=100,
                           extra_env={"SEQSTREAM_STATE_LOSS": action})
    records = events.interleaved(seed=9)
    half = len(records) // 2
    sources = asyncio.run(produce(settings.kafka_bootstrap, names["events"], records[:half]))
    try:
        worker.start().wait_ready()
        wait_checkpoints(url, prefix, 2, len(sources), timeout=60)
        time.sleep(4.0)  # past a Kafka commit interval: the committed offsets are there
        assert worker.stop() == 0, worker.log()[-3000:]
        redis.Redis.from_url(url).flushall()
        worker.start().wait_ready()
        sources += asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                       records[half:]))
        wait_checkpoints(url, prefix, 2, len(sources), timeout=120)
        states = redis_states(url, unique, artifact.model_id, sorted(events.values))
    finally:
        code = worker.stop()
        server.stop()
    log = worker.log()
    assert code == 0, log[-3000:]
    assert log.count(f"SEQSTREAM_STATE_LOSS={action}") == 2, log[-3000:]  # one per partition
    _, want_states = reference_run(art, records, sources, names["events"])
    codec = StateCodec(artifact.model.state_size, artifact.n_features)
    if action == "rebuild":
        assert_states_equal(codec, states, want_states)
        return
    got, found = codec.decode([states[n] for n in sorted(want_states)])
    want, _ = codec.decode([want_states[n] for n in sorted(want_states)])
    assert found.all()  # every entity went on, from a fresh state: fewer steps than the full run
    assert (got["steps"] < want["steps"]).all() and (got["wm_ts"] == want["wm_ts"]).all()


@pytest.mark.integration
@pytest.mark.slow
def test_the_worker_streams_on_a_redis_cluster_and_resumes_from_its_checkpoints(
        tmp_path, shared_data, settings, unique):
    """SEQSTREAM_REDIS_URL=redis+cluster://: a private 3-master cluster on loopback. Half the
    stream, a restart (the worker seeks to the checkpoints read from the cluster), the rest:
    every prediction and final state equal the offline run's."""
    from redis_private import start_cluster, stop

    procs, ports = start_cluster(tmp_path / "cluster")
    url = f"redis+cluster://127.0.0.1:{ports[0]}/0"
    events = EventSet(shared_data, entities=12, per_entity=200, t0=time.time(), chunk_every=4)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:6]))
    artifact = load_artifact(art)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 4))
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=url, partitions=4, batch_max=100)
    records = events.interleaved(seed=3)
    half = len(records) // 2
    cluster = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    prefix = namespace(unique, artifact.model_id)

    def applied() -> int:
        return sum(int(cluster.get(f"{{{prefix}:{p}}}") or 0) for p in range(4))

    def wait_applied(want: int) -> None:
        deadline = time.monotonic() + 120
        while applied() < want:
            assert time.monotonic() < deadline, (applied(), want, worker.log()[-2000:])
            time.sleep(0.2)

    try:
        sources = asyncio.run(produce(settings.kafka_bootstrap, names["events"], records[:half]))
        worker.start().wait_ready()
        wait_applied(len(sources))
        assert worker.stop() == 0, worker.log()[-3000:]
        worker.start().wait_ready()
        sources += asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                       records[half:]))
        wait_applied(len(sources))
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=120))[names["predictions"]]
        keys = {parse_key(k.decode())[2]: k  # type: ignore[index]
                for k in cluster.scan_iter(match="{" + prefix + ":*", count=1000)
                if parse_key(k.decode())[2] is not None}  # type: ignore[index]
        states = {n: cluster.get(keys[n]) if n in keys else None for n in sorted(events.values)}
    finally:
        code = worker.stop()
        cluster.close()
        for proc in procs:
            stop(proc)
    assert code == 0, worker.log()[-3000:]
    want_predictions, want_states = reference_run(art, records, sources, names["events"])
    assert_predictions_match(got, want_predictions, threshold=3.0)
    assert_states_equal(StateCodec(artifact.model.state_size, artifact.n_features), states,
                        want_states)


PAUSE_S = 30  # the replica's DEBUG SLEEP: longer than the drop, the stream and the kill take


def replication(port: int) -> dict:
    client = redis.Redis(port=port)
    try:
        return client.info("replication")
    finally:
        client.close()


def rewinds(metrics_port: int) -> float:
    """``seqstream_state_rewinds_total`` on the worker's metrics endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                  timeout=10).read().decode()
    return sum(float(ln.split()[-1]) for ln in text.splitlines()
               if ln.startswith("seqstream_state_rewinds_total"))


@pytest.mark.integration
@pytest.mark.slow
def test_a_failover_to_a_replica_paused_behind_its_master_rewinds_the_running_worker(
        tmp_path, bundled_data, settings, unique):
    """A private 3-master cluster; the master holding partition 0's slot gets a replica. Mid-stream
    the replica sleeps (``DEBUG SLEEP``), its master drops it (``repl-timeout``) and goes on
    acknowledging the worker's saves, is killed -9, and the replica, awake, is promoted
    (``CLUSTER FAILOVER TAKEOVER``): the cluster now holds partition 0's states and checkpoint
    from before the pause. The worker keeps running throughout; its next load or save is refused,
    it seeks back and applies the lost events again: every sample's final prediction and every
    final state equal the offline run, none is missing, the rewind is counted and logged."""
    from redis_private import add_replica, start_cluster, stop

    procs, ports = start_cluster(tmp_path / "cluster")
    events = EventSet(bundled_data, entities=20, per_entity=240, t0=time.time(), chunk_every=5)
    art = make_artifact(tmp_path / "art", hidden=16, threshold=3.0,
                        sample=np.concatenate(list(events.values.values())[:10]))
    artifact = load_artifact(art)
    prefix = namespace(unique, artifact.model_id)
    checkpoint = f"{{{prefix}:0}}"
    probe = redis.RedisCluster(host="127.0.0.1", port=ports[0])
    master_port = probe.get_node_from_key(checkpoint).port
    # the partitions whose slot that master serves (0, and 1 where it hashes there too)
    lost = [p for p in range(2) if probe.get_node_from_key(f"{{{prefix}:{p}}}").port
            == master_port]
    probe.close()
    master_proc = procs[ports.index(master_port)]
    replica_proc, replica_port = add_replica(
        tmp_path / "cluster", master_port,
        ("--enable-debug-command", "local", "--cluster-replica-no-failover", "yes"))
    procs.append(replica_proc)
    survivor = next(p for p in ports if p != master_port)
    url = f"redis+cluster://127.0.0.1:{survivor}/0"
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    metrics_port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=url, partitions=2, batch_max=100,
                           extra_env={"SEQSTREAM_METRICS_PORT": str(metrics_port)})
    records = events.interleaved(seed=11)
    slices = np.array_split(np.arange(len(records)), 9)
    sources: list[tuple[int, int]] = []
    master, replica = redis.Redis(port=master_port), redis.Redis(port=replica_port)

    def send(i: int) -> None:
        sources.extend(asyncio.run(produce(settings.kafka_bootstrap, names["events"],
                                           [records[j] for j in slices[i]])))

    def applied() -> int:
        client = redis.RedisCluster(host="127.0.0.1", port=survivor)
        try:
            return sum(int(client.get(f"{{{prefix}:{p}}}") or 0) for p in range(2))
        finally:
            client.close()

    def wait_applied(timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while applied() < len(sources):
            assert time.monotonic() < deadline, (applied(), len(sources), worker.log()[-2000:])
            time.sleep(0.2)

    def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.1)

    sleeper = threading.Thread(target=lambda: redis.Redis(
        port=replica_port, socket_timeout=PAUSE_S + 10).execute_command("DEBUG", "SLEEP", PAUSE_S))
    try:
        worker.start().wait_ready()
        for i in range(3):
            send(i)
        wait_applied(60)
        offset = master.info("replication")["master_repl_offset"]
        wait(lambda: replication(replica_port)["slave_repl_offset"] >= offset, 30,
             "the replica catching up")
        master.config_set("repl-timeout", 2)
        paused_at = time.monotonic()
        sleeper.start()
        wait(lambda: master.info("replication")["connected_slaves"] == 0, 15,
             "the master dropping its sleeping replica")
        at_drop = int(master.get(checkpoint) or 0)
        for i in range(3, 6):
            send(i)
            time.sleep(0.5)
        wait_applied(60)
        before_kill = int(master.get(checkpoint) or 0)
        assert time.monotonic() - paused_at < PAUSE_S - 2, "the replica woke before the kill"
        master_proc.kill()
        master_proc.wait(10)
        sleeper.join(PAUSE_S + 10)
        replica.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
        wait(lambda: replication(replica_port)["role"] == "master", 30, "the takeover")
        wait(lambda: all(redis.Redis(port=p).cluster("INFO").get("cluster_state") == "ok"
                         for p in [*ports, replica_port] if p != master_port), 60,
             "the cluster serving every slot again")
        restored = int(replica.get(checkpoint) or 0)
        assert restored <= at_drop < before_kill  # the promoted replica forgot those saves
        assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]
        for i in range(6, 9):
            send(i)
        wait_applied(120)
        got = asyncio.run(consume(
            settings.kafka_bootstrap, [names["predictions"]],
            lambda g: len({(r["entity_id"], r["ts"]) for r in g[names["predictions"]]})
            >= len(records), timeout=120))[names["predictions"]]
        counted = rewinds(metrics_port)
        states = redis_states(url, unique, artifact.model_id, sorted(events.values))
    finally:
        code = worker.stop()
        master.close()
        replica.close()
        if sleeper.is_alive():
            sleeper.join(PAUSE_S + 10)
        for proc in procs:
            stop(proc)
    log = worker.log()
    assert code == 0, log[-3000:]
    assert log.count("partition sought back") == counted == len(lost), log[-3000:]
    final = assert_final_as_reference(art, artifact, records, sources, names["events"], got,
                                      states)
    print(f"{len(records)} events; partition 0's checkpoint {at_drop} when the master dropped "
          f"its replica, {before_kill} at the kill, {restored} after the takeover; {len(got)} "
          f"prediction records for {len(final)} events; partitions {lost} on the failed master; "
          f"rewinds counted {counted:.0f}, logged {log.count('partition sought back')}")
