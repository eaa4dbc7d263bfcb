"""A missing or corrupt artifact (or no --model, or a card with nothing to flag against) stops
``seqstream worker`` with one clear line and exit status 1 before it touches Kafka: no topic is
created, no consumer group joins."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest
from streamkit import REPO, make_artifact, topic_names


def start_worker(args: list[str], unique: str, settings) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTREAM_")}
    names = topic_names(unique)
    env.update({"SEQSTREAM_APP_ID": unique, "SEQSTREAM_TOPIC_EVENTS": names["events"],
                "SEQSTREAM_TOPIC_PREDICTIONS": names["predictions"],
                "SEQSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
                "SEQSTREAM_METRICS_PORT": "0"})
    return subprocess.run([sys.executable, "-m", "seqstream", "worker", *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)


async def kafka_knows(bootstrap: str, unique: str) -> tuple[list[str], list[str]]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(unique)]
        groups = [g[0] for g in await admin.list_consumer_groups() if g[0] == unique]
    finally:
        await admin.close()
    return topics, groups


def corrupt_card(directory):
    card = json.loads((directory / "card.json").read_text())
    card["threshold"]["value"] = 0.001  # an edit the model_id no longer covers
    (directory / "card.json").write_text(json.dumps(card))


def truncate_weights(directory):
    path = directory / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.integration
@pytest.mark.parametrize(("damage", "says"), [
    ("missing", "expected a directory with card.json and weights.safetensors"),
    ("card", "card.json does not match weights.safetensors"),
    ("weights", "card.json does not match weights.safetensors"),
    ("no-model", "--model: expected an artifact directory"),
    ("no-threshold", "card threshold: expected {'value': number}"),
])
def test_a_bad_artifact_stops_start_up_with_one_line_before_consuming(tmp_path, settings, unique,
                                                                      damage, says):
    directory = make_artifact(tmp_path / "art", threshold=None if damage == "no-threshold" else 4.0)
    if damage == "missing":
        directory = tmp_path / "nowhere"
    elif damage == "card":
        corrupt_card(directory)
    elif damage == "weights":
        truncate_weights(directory)
    done = start_worker([] if damage == "no-model" else ["--model", str(directory)], unique,
                        settings)
    assert done.returncode == 1, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("seqstream worker: ") and says in lines[0]
    assert asyncio.run(kafka_knows(settings.kafka_bootstrap, unique)) == ([], [])
