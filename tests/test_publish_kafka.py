"""``seqstream publish`` against the real Kafka: real ECG samples arrive intact, keyed by entity,
in order per entity, over the configured partitions, at the paced rate."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import wfdb
from aiokafka import AIOKafkaConsumer

from seqstream import publish
from stream.security import kafka_kwargs
from stream.settings import Settings

pytestmark = pytest.mark.integration


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    publish.configure(parser)
    return parser.parse_args(list(argv))


async def _consume(settings: Settings, topic: str, n: int, timeout_s: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(topic, **kafka_kwargs(settings), group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < n and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def _settings(settings: Settings, topic: str) -> Settings:
    return dataclasses.replace(settings, topic_events=topic)


def test_chunked_ecg_round_trips_sample_for_sample(settings: Settings, unique: str,
                                                    bundled_data: Path) -> None:
    cfg = _settings(settings, unique)
    args = _args("--path", str(bundled_data / "mitdb"), "--records", "100,106",
                 "--entities", "4", "--entity-prefix", f"{unique}-",
                 "--samples-per-event", "36", "--count", "400")
    lanes = publish.load_lanes(args, cfg)
    report = asyncio.run(publish.publish(cfg, lanes, publish.Options(
        samples_per_event=36, count=400, progress=False)))
    assert report.events == 400 and report.entities == 4
    assert report.partitions == settings.partitions

    records = asyncio.run(_consume(cfg, unique, 400))
    assert len(records) == 400
    assert len({r.partition for r in records}) > 1  # keys spread over partitions
    by_entity: dict[str, list[dict]] = {}
    for r in records:
        body = orjson.loads(r.value)
        assert r.key.decode() == body["entity_id"]
        assert set(body) == {"entity_id", "ts", "period", "values"}
        by_entity.setdefault(body["entity_id"], []).append(body)
    assert sorted(by_entity) == sorted(f"{unique}-{e}" for e in
                                       ("100", "106", "100@325000", "106@325000"))
    for entity, events in by_entity.items():
        record, _, start = entity.removeprefix(f"{unique}-").partition("@")
        start = int(start or 0)
        got = np.array([row for e in events for row in e["values"]])
        rec = wfdb.rdrecord(str(bundled_data / "mitdb" / record), channel_names=["MLII"],
                            sampfrom=start, sampto=start + len(got))
        np.testing.assert_array_equal(got, rec.p_signal)  # the recorded mV, unaltered
        ts = [e["ts"] for e in events]
        ends = [e["ts"] + (len(e["values"]) - 1) * e["period"] for e in events]
        assert all(b > a for a, b in zip(ends, ts[1:], strict=False))  # no overlap, increasing
        assert events[0]["period"] == pytest.approx(1 / 360)


def test_single_sample_events_from_a_parquet_table(settings: Settings, unique: str,
                                                    bundled_data: Path, tmp_path: Path) -> None:
    import pandas as pd

    nab = bundled_data / "nab" / "data" / "realTraffic"
    frames = [pd.read_csv(nab / f"{name}.csv").head(50).assign(sensor=name)
              for name in ("speed_6005", "occupancy_6005")]
    table = tmp_path / "traffic.parquet"
    pd.concat(frames).to_parquet(table)
    cfg = _settings(settings, unique)
    args = _args("--path", str(table), "--entity-column", "sensor", "--ts", "source")
    lanes = publish.load_lanes(args, cfg)
    report = asyncio.run(publish.publish(cfg, lanes, publish.Options(ts="source",
                                                                     progress=False)))
    assert report.events == 100 and report.samples == 100
    bodies = [orjson.loads(r.value) for r in asyncio.run(_consume(cfg, unique, 100))]
    speed = [b for b in bodies if b["entity_id"] == "speed_6005"]
    assert [b["values"] for b in speed] == [[v] for v in frames[0]["value"]]
    # source time = sample index x the median step of the recorded timestamps
    recorded = pd.to_datetime(frames[0]["timestamp"]).diff().dt.total_seconds().median()
    assert [b["ts"] for b in speed] == [i * recorded for i in range(50)]


@pytest.mark.parametrize(("rate", "expected_per_s", "unit"), [("realtime", 720.0, "samples"),
                                                             (150.0, 150.0, "events")])
def test_pacing(settings: Settings, unique: str, bundled_data: Path, rate: float | str,
                expected_per_s: float, unit: str) -> None:
    cfg = _settings(settings, unique)
    args = _args("--path", str(bundled_data / "mitdb"), "--records", "100,106")
    lanes = publish.load_lanes(args, cfg)
    report = asyncio.run(publish.publish(cfg, lanes, publish.Options(
        rate=rate, samples_per_event=12, duration_s=2.0, progress=False)))
    achieved = (report.samples if unit == "samples" else report.events) / report.seconds
    assert achieved == pytest.approx(expected_per_s, rel=0.15)
    if rate == "realtime":
        assert report.ahead_s < 0.5  # paced at real time, ts is the send time


def test_cli_prints_the_achieved_rate(unique: str, bundled_data: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from seqstream.cli import main

    rc = main(["publish", "--path", str(bundled_data / "mitdb"), "--records", "100",
               "--count", "50", "--topic-events", unique, "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"published 50 events (50 samples) for 1 entities to {unique}" in out
    assert "events/s" in out


def test_realtime_chunks_put_their_last_sample_at_the_send_time(settings: Settings, unique: str,
                                                                 bundled_data: Path) -> None:
    cfg = _settings(settings, unique)
    lanes = publish.load_lanes(_args("--path", str(bundled_data / "mitdb"), "--records",
                                     "100,106"), cfg)
    report = asyncio.run(publish.publish(cfg, lanes, publish.Options(
        rate="realtime", samples_per_event=36, duration_s=1.5, progress=False)))
    records = asyncio.run(_consume(cfg, unique, report.events))
    assert len(records) == report.events >= 6
    for r in records:
        body = orjson.loads(r.value)
        last = body["ts"] + (len(body["values"]) - 1) * body["period"]
        # the producer stamps each record with its create time (ms): the last sample's time
        assert abs(last - r.timestamp / 1000) < 0.05
