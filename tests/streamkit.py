"""Helpers for the stream worker's tests: a small artifact, real ECG slices, event payloads, an
offline reference, Kafka produce/consume, and a worker subprocess that can be killed.

Test artifacts are small randomly initialised networks saved with ``stream.artifact.save_artifact``
(training is separate); their scaler comes from the real ECG they will see, so the numbers flowing
through the pipeline are realistic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from stream.artifact import load_artifact, save_artifact
from stream.model import Forecaster

__all__ = [
    "REPO",
    "WorkerProcess",
    "consume",
    "create_topics",
    "ecg",
    "free_port",
    "make_artifact",
    "offline_forecasts",
    "produce",
    "single",
    "topic_names",
]

REPO = Path(__file__).resolve().parents[1]
MITDB_RECORDS = ("100", "101", "103", "105", "106", "112", "113", "115", "116", "117")


def ecg(shared_data: Path, record: str, start: int, n: int) -> np.ndarray:
    """``n`` two-lead MIT-BIH samples (mV) of ``record`` from sample ``start``."""
    import wfdb

    rec = wfdb.rdrecord(str(shared_data / "mitdb" / record), sampfrom=start, sampto=start + n)
    return np.asarray(rec.p_signal, dtype=np.float64)


def make_artifact(directory: Path, *, cell: str = "gru", hidden: int = 16, layers: int = 1,
                  horizon: int = 3, seed: int = 0, threshold: float = 4.0,
                  sample: np.ndarray | None = None, n_features: int = 2,
                  residual_scale: Sequence[float] | None = None) -> Path:
    """A randomly initialised Forecaster saved as an artifact; scaler from ``sample`` if given."""
    torch.manual_seed(seed)
    model = Forecaster(cell, n_features=n_features, hidden_size=hidden, num_layers=layers,
                       horizon=horizon).eval()
    if sample is not None:
        mean, std = sample.mean(axis=0).tolist(), (sample.std(axis=0) + 1e-3).tolist()
    else:
        mean, std = [0.0] * n_features, [1.0] * n_features
    card = {
        "features": [{"name": f"lead{i}", "unit": "mV"} for i in range(n_features)],
        "scaler": {"mean": mean, "std": std},
        "period_s": 1 / 360,
        "score": {"kind": "rms_z",
                  "residual_scale": list(residual_scale or [0.5] * n_features)},
        "threshold": {"value": threshold},
        "data": {"source": "random initialisation for tests"},
        "metrics": {},
        "version": "test",
    }
    save_artifact(model, card, directory)
    return directory


def offline_forecasts(artifact_dir: Path, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """User-unit forecasts ``[T, H, F]`` and 1-step scores ``[T]`` (NaN first) of one
    ``model.forward`` over the whole sequence: the reference a stream must reproduce."""
    from stream.scoring import score

    art = load_artifact(artifact_dir)
    scaled = art.scale(np.asarray(values, dtype=np.float64))
    with torch.no_grad():
        y, _ = art.model(torch.from_numpy(scaled)[None])
    y = y[0].numpy()
    rs = np.asarray(art.card["score"]["residual_scale"], dtype=np.float64)
    scores = np.full(len(values), np.nan)
    scores[1:] = score(scaled[1:].astype(np.float64) - y[:-1, 0].astype(np.float64), rs)
    return art.unscale(y), scores


def single(entity: str, ts: float, values: Iterable[float]) -> tuple[bytes, bytes]:
    """(key, value) of a one-sample event."""
    return entity.encode(), orjson.dumps({"entity_id": entity, "ts": ts,
                                          "values": [float(v) for v in values]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def topic_names(unique: str) -> dict[str, str]:
    """The worker's four topic settings, named after the test."""
    return {k: f"{unique}.{k}" for k in ("events", "predictions", "anomalies", "deadletter")}


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]],
                  ) -> list[tuple[int, int]]:
    """Send ``(key, value)`` records and wait for every ack; their (partition, offset)s."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all",
                                max_request_size=4 << 20)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in records]
        metas = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metas]


async def consume(bootstrap: str, topics: Sequence[str], until: Any, timeout: float,
                  ) -> dict[str, list[Any]]:
    """Read ``topics`` from the beginning (no group) until ``until(records_by_topic)`` is true
    or ``timeout`` passes; values are decoded JSON, in partition order per topic."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                group_id=None, max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    got: dict[str, list[Any]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout
    try:
        while not until(got) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            for tp, messages in batch.items():
                got[tp.topic].extend(json.loads(m.value) for m in messages)
    finally:
        await consumer.stop()
    return got


class WorkerProcess:
    """``python -m seqstream worker`` in a subprocess (so a test can ``kill -9`` it)."""

    def __init__(self, artifact: Path, unique: str, log_dir: Path, *, bootstrap: str,
                 redis_url: str, partitions: int = 4, batch_max: int = 500,
                 batch_within_ms: int = 20, warmup_steps: int = 0, max_gap_s: float = 60.0,
                 app_id: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        names = topic_names(unique)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SEQSTREAM_")}
        self.env.update({
            "SEQSTREAM_KAFKA_BOOTSTRAP": bootstrap, "SEQSTREAM_REDIS_URL": redis_url,
            "SEQSTREAM_TOPIC_EVENTS": names["events"],
            "SEQSTREAM_TOPIC_PREDICTIONS": names["predictions"],
            "SEQSTREAM_TOPIC_ANOMALIES": names["anomalies"],
            "SEQSTREAM_TOPIC_DEADLETTER": names["deadletter"],
            "SEQSTREAM_PARTITIONS": str(partitions), "SEQSTREAM_APP_ID": app_id or unique,
            "SEQSTREAM_BATCH_MAX": str(batch_max),
            "SEQSTREAM_BATCH_WITHIN_MS": str(batch_within_ms),
            "SEQSTREAM_WARMUP_STEPS": str(warmup_steps), "SEQSTREAM_MAX_GAP_S": str(max_gap_s),
            "SEQSTREAM_METRICS_PORT": "0", "SEQSTREAM_HOME": str(log_dir / "home"),
            "OMP_NUM_THREADS": "1", "BROKER_SESSION_TIMEOUT": "6",
            "BROKER_HEARTBEAT_INTERVAL": "1",
        })
        self.env.update(extra_env or {})
        self.artifact, self.log_dir = artifact, log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{id(self)}-{self.starts}.log"

    def start(self) -> WorkerProcess:
        self.starts += 1
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "seqstream", "worker", "--model", str(self.artifact)],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until the worker logs that it was assigned partitions (or it dies)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "seqstream worker ready" in self.log():
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"worker not ready after {timeout} s:\n{self.log()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"worker ignored SIGTERM for {timeout} s:\n"
                                 f"{self.log()[-3000:]}") from None
