"""The local stack's real servers answer as the rest of seqstream expects them to."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict

import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.integration


def test_kafka_keeps_per_key_order_across_partitions(settings, unique):
    """10,000 keyed records over 6 partitions come back complete and in order per key."""
    topic, keys, n = unique, 37, 10_000

    async def scenario() -> dict[str, list[int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=6, replication_factor=1)])
            described = await admin.describe_topics([topic])
            assert len(described[0]["partitions"]) == 6
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for i in range(n):
                producer_key = f"entity-{i % keys}".encode()
                await producer.send(topic, key=producer_key, value=str(i).encode())
            await producer.flush()
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                    group_id=unique, auto_offset_reset="earliest")
        await consumer.start()
        seen: dict[str, list[int]] = defaultdict(list)
        partitions_of: dict[str, set[int]] = defaultdict(set)
        try:
            deadline = time.monotonic() + 60
            while sum(map(len, seen.values())) < n and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=1000)
                for tp, records in batch.items():
                    for record in records:
                        seen[record.key.decode()].append(int(record.value))
                        partitions_of[record.key.decode()].add(tp.partition)
        finally:
            await consumer.stop()
        assert all(len(p) == 1 for p in partitions_of.values()), "a key spread over partitions"
        assert len({next(iter(p)) for p in partitions_of.values()}) > 1, "one partition only"
        return seen

    seen = asyncio.run(scenario())
    assert sum(map(len, seen.values())) == n
    for k in range(keys):
        assert seen[f"entity-{k}"] == list(range(k, n, keys))


def test_kafka_lists_the_broker_and_topics_to_a_third_party_client(settings, unique):
    async def scenario() -> tuple[list, list]:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(unique, num_partitions=2, replication_factor=1)])
            return (await admin.describe_cluster())["brokers"], await admin.list_topics()
        finally:
            await admin.close()

    brokers, topics = asyncio.run(scenario())
    host, port = settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    assert [(b["host"], b["port"]) for b in brokers] == [(host, int(port))]
    assert unique in topics


def test_redis_round_trip_and_aof(settings, unique):
    client = redis.Redis.from_url(settings.redis_url)
    payload = bytes(range(256)) * 4
    client.set(unique, payload, ex=60)
    assert client.get(unique) == payload
    assert client.ttl(unique) > 0
    assert client.config_get("appendonly")["appendonly"] == "yes"
    client.delete(unique)


def _prometheus(settings, path: str) -> dict:
    url = f"http://127.0.0.1:{settings.prometheus_port}{path}"
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read()) if path.startswith("/api") else {"status": reply.status}


def test_prometheus_ready_and_scraping_itself(settings):
    assert _prometheus(settings, "/-/ready") == {"status": 200}
    deadline = time.monotonic() + 30  # first scrape comes within one 5 s interval
    health = None
    while time.monotonic() < deadline:
        targets = _prometheus(settings, "/api/v1/targets")["data"]["activeTargets"]
        health = {t["labels"]["job"]: t["health"] for t in targets}
        if health.get("prometheus") == "up":
            break
        time.sleep(1)
    assert health is not None and health.get("prometheus") == "up", health
    assert "seqstream-worker" in health
    result = _prometheus(settings, "/api/v1/query?query=up%7Bjob%3D%22prometheus%22%7D")
    assert result["data"]["result"][0]["value"][1] == "1"


def test_kafkas_own_topic_tool_lists_and_describes_our_topic(settings, unique):
    """Kafka's own command-line client (not aiokafka) sees the broker and a topic we create."""
    classpath = subprocess.run([sys.executable, "-m", "seqstream", "stack", "classpath"],
                               capture_output=True, text=True, timeout=60, check=True).stdout
    tool = ["java", "-cp", classpath.strip(), "org.apache.kafka.tools.TopicCommand",
            "--bootstrap-server", settings.kafka_bootstrap]
    created = subprocess.run([*tool, "--create", "--topic", unique, "--partitions", "3"],
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    listed = subprocess.run([*tool, "--list"], capture_output=True, text=True, timeout=60)
    assert unique in listed.stdout.split()
    described = subprocess.run([*tool, "--describe", "--topic", unique], capture_output=True,
                               text=True, timeout=60)
    assert "PartitionCount: 3" in described.stdout
