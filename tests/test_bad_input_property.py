"""Bad input never stops the worker and no message vanishes (property-based, seeded, through
real Kafka, Redis and the worker).

Hypothesis generates batches of events, each either good (a single sample or a chunk, numeric or
ISO-8601 time, unicode entity ids, float32 edge values) or good-but-for-one-defect (every
dead-letter reason the worker knows, including an event older than its entity's watermark,
``late``, and one stamped far ahead of the wall clock, ``future_ts``). More than 10,000
payloads in all go through one running worker; after each batch every good event has its
prediction and every bad one a dead letter with the expected reason at its topic/partition/
offset, and at the end the worker is still running and never logged an error.

Then the invariant "every consumed message ends as exactly one of: a prediction record, a dead
letter, a counted replay" is checked by accounting: the worker's counters and the records on
the output topics add up to every message sent, with no replay. Finally the group's offsets and
the checkpoints stored with the states are rewound to the start and the worker restarted: the
whole topic is consumed again, and now no event is predicted twice: each message is a counted
replay or a dead letter again.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from streamkit import (
    EndOffsets,
    WorkerProcess,
    create_topics,
    free_port,
    make_artifact,
    topic_names,
)

from stream.artifact import load_artifact
from stream.records import REASONS
from stream.state import namespace

F = 2
MAX_BYTES = 2048
PERIOD = 0.25  # binary-exact, so times survive float and ISO-8601 round trips bit for bit
T0 = 1_700_000_000.0
PLACEHOLDER = 987654.125
EXAMPLES, MIN_EVENTS, MAX_EVENTS = 260, 40, 50
ENTITIES = ("pump-1", "patient ✓ 7", "sensor/α:β", "x", "M" * 200, "with space", "ü-ß-漢字",
            "0")
DEFECTS = ("too_large", "malformed_json", "not_object", "missing_field", "extra_field",
           "wrong_type", "empty_entity_id", "bad_entity_id", "key_mismatch", "bad_ts",
           "bad_period", "empty_chunk", "feature_count", "non_finite", "future_ts", "late")
YEAR_S = 365.25 * 24 * 3600

number = st.one_of(
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32),
    st.integers(-1_000_000, 1_000_000),
    st.sampled_from([0.0, -0.0, 1e-45, -1e-38, 9999.999]),
)
row = st.lists(number, min_size=F, max_size=F)
small_int = st.integers(-(2**63), 2**63 - 1)
a_dict = st.dictionaries(st.text(max_size=3), st.integers(0, 9), max_size=2)
a_list = st.lists(st.integers(0, 9), max_size=2)
# per field, JSON values of a type the field does not take (and that no other check catches first:
# a string ts is an ISO time to parse, a list in a sample's place would make it a chunk)
WRONG = {
    "entity_id": st.one_of(small_int, st.none(), st.booleans(), a_list, a_dict,
                           st.floats(allow_nan=False, allow_infinity=False)),
    "ts": st.one_of(st.booleans(), st.none(), a_list, a_dict),
    "values": st.one_of(st.none(), st.text(max_size=5), small_int, st.booleans(), a_dict),
    "element": st.one_of(st.none(), st.text(max_size=5), st.booleans(), a_dict),
    "period": st.one_of(st.none(), st.text(max_size=5), st.booleans(), a_list, a_dict),
    "row": st.one_of(st.none(), st.text(max_size=5), small_int, st.booleans(), a_dict),
}


@dataclass
class Spec:
    entity: str
    chunk: bool
    rows: list
    ts_form: str
    defect: str | None
    detail: object = None


@st.composite
def specs(draw) -> Spec:
    chunk = draw(st.booleans())
    rows = draw(st.lists(row, min_size=1, max_size=5)) if chunk else [draw(row)]
    defect = draw(st.one_of(st.none(), st.sampled_from(DEFECTS)))
    if defect in ("bad_period", "empty_chunk"):
        chunk = True
    detail = None
    if defect == "malformed_json":
        detail = draw(st.one_of(st.floats(0.01, 0.99), st.just("utf8")))
    elif defect == "not_object":
        detail = draw(st.one_of(st.lists(small_int, max_size=3), small_int,
                                st.text(max_size=10), st.none(), st.booleans(),
                                st.floats(allow_nan=False, allow_infinity=False)))
    elif defect == "missing_field":
        detail = draw(st.sampled_from(["entity_id", "ts", "values"] + (["period"] if chunk
                                                                           else [])))
    elif defect == "extra_field":
        detail = draw(st.text(min_size=1, max_size=8).filter(
            lambda k: k not in ("entity_id", "ts", "values", "period")))
    elif defect == "wrong_type":
        field = draw(st.sampled_from(["entity_id", "ts", "values", "element"]
                                     + (["period", "row"] if chunk else [])))
        detail = (field, draw(WRONG[field]))
    elif defect == "empty_entity_id":
        detail = draw(st.sampled_from(["", " ", "\t \n"]))
    elif defect == "key_mismatch":
        detail = draw(st.sampled_from([None, b"other"]))
    elif defect == "bad_ts":
        detail = draw(st.sampled_from([-1.0, -0.25, 2.6e11, "2024-13-01T00:00:00Z",
                                       "yesterday", "2024-05-01T12:00:00", ""]))
    elif defect == "bad_period":
        detail = draw(st.sampled_from([0, -1, -0.25, 1e9]))
    elif defect == "feature_count":
        detail = draw(st.sampled_from([0, 1, 3, 4]))
    elif defect == "non_finite":
        detail = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400",
                                       b"1e39", b"-3.5e38"]))
    elif defect == "future_ts":  # seconds ahead of the wall clock, all past the default bound
        detail = draw(st.sampled_from([3600.0, 86400.0, 100 * YEAR_S]))
    elif defect == "late":  # periods before the entity's watermark for its last sample
        detail = draw(st.integers(0, 40))
    return Spec(draw(st.sampled_from(ENTITIES)), chunk, rows,
                draw(st.sampled_from(["float", "int", "iso_z", "iso_plus1"])), defect, detail)


def iso(ts: float, form: str) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    if form == "iso_plus1":
        return moment.astimezone(timezone(timedelta(hours=1))).isoformat()
    return moment.isoformat().replace("+00:00", "Z")


def materialise(spec: Spec, ts: float) -> tuple[bytes | None, bytes]:
    """The (key, value) of ``spec`` at time ``ts``."""
    ts_value: object = ts
    if spec.ts_form == "int" and ts == int(ts):
        ts_value = int(ts)
    elif spec.ts_form.startswith("iso"):
        ts_value = iso(ts, spec.ts_form)
    body: dict = {"entity_id": spec.entity, "ts": ts_value,
                  "values": spec.rows if spec.chunk else spec.rows[0]}
    if spec.chunk:
        body["period"] = PERIOD
    key: bytes | None = spec.entity.encode()
    d, detail = spec.defect, spec.detail
    if d == "missing_field":
        del body[detail]
    elif d == "extra_field":
        body[detail] = 1
    elif d == "wrong_type":
        field, bad = detail
        if field == "element":
            (body["values"][0] if spec.chunk else body["values"])[0] = bad
        elif field == "row":
            body["values"][0] = bad
        else:
            body[field] = bad
    elif d == "empty_entity_id":
        body["entity_id"], key = detail, detail.encode()
    elif d == "bad_entity_id":
        body["entity_id"] = "e" * 300
        key = body["entity_id"].encode()
    elif d == "key_mismatch":
        key = detail
    elif d == "bad_ts":
        body["ts"] = detail
    elif d == "bad_period":
        body["period"] = detail
    elif d == "empty_chunk":
        body["values"] = []
    elif d == "feature_count":
        target = body["values"][-1] if spec.chunk else body["values"]
        target[:] = (target * 3)[:detail]
    elif d == "non_finite":
        (body["values"][0] if spec.chunk else body["values"])[0] = PLACEHOLDER
    value = orjson.dumps(body)
    if d == "non_finite":
        value = value.replace(b"987654.125", detail)
    elif d == "too_large":
        value = b" " * (MAX_BYTES + 1 - len(value) + 10) + value
    elif d == "malformed_json":
        if detail == "utf8":
            value = value.replace(b'"entity_id"', b'"entity_\xff"')
        else:
            value = value[:max(1, int(len(value) * detail))]
    elif d == "not_object":
        value = orjson.dumps(detail)
    return key, value


class Harness:
    """One producer and one group-less consumer of the outputs, on one event loop."""

    def __init__(self, bootstrap: str, names: dict[str, str]) -> None:
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

        self.names = names
        self.loop = asyncio.new_event_loop()

        async def start():  # aiokafka clients must be created inside their running loop
            producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
            consumer = AIOKafkaConsumer(names["predictions"], names["deadletter"],
                                        bootstrap_servers=bootstrap, group_id=None,
                                        auto_offset_reset="earliest")
            await producer.start()
            await consumer.start()
            return producer, consumer

        self.producer, self.consumer = self.loop.run_until_complete(start())
        self.predictions: dict[tuple[str, float], dict] = {}
        self.dead: dict[tuple[int, int], dict] = {}
        self.duplicates = 0

    def send(self, records: list[tuple[bytes | None, bytes]]) -> list[tuple[int, int]]:
        async def go():
            futures = [await self.producer.send(self.names["events"], value=v, key=k)
                       for k, v in records]
            return [(m.partition, m.offset) for m in await asyncio.gather(*futures)]

        return self.loop.run_until_complete(go())

    def wait_for(self, predictions: set, dead: set, timeout: float = 60.0) -> None:
        async def go():
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if predictions <= self.predictions.keys() and dead <= self.dead.keys():
                    return
                got = await self.consumer.getmany(timeout_ms=100)
                for tp, messages in got.items():
                    for m in messages:
                        rec = orjson.loads(m.value)
                        if tp.topic == self.names["predictions"]:
                            key = (rec["entity_id"], rec["ts"])
                            self.duplicates += key in self.predictions
                            self.predictions[key] = rec
                        else:
                            self.dead[(rec["partition"], rec["offset"])] = rec

        self.loop.run_until_complete(go())

    def close(self) -> None:
        self.loop.run_until_complete(self.producer.stop())
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()


@pytest.mark.integration
@pytest.mark.slow
def test_bad_input_never_stops_the_worker(tmp_path, settings, unique):
    art = make_artifact(tmp_path / "art", horizon=2)
    names = topic_names(unique)
    asyncio.run(create_topics(settings.kafka_bootstrap, names.values(), 2))
    port = free_port()
    worker = WorkerProcess(art, unique, tmp_path, bootstrap=settings.kafka_bootstrap,
                           redis_url=settings.redis_url, partitions=2, max_gap_s=0,
                           extra_env={"SEQSTREAM_MAX_PAYLOAD_BYTES": str(MAX_BYTES),
                                      "SEQSTREAM_METRICS_PORT": str(port)})
    worker.start()
    harness = Harness(settings.kafka_bootstrap, names)
    clock = dict.fromkeys(ENTITIES, T0)  # next free time per entity
    totals = {"good": 0, "bad": 0}
    reasons: dict[str, int] = {}
    try:
        worker.wait_ready()

        @seed(15)
        @hsettings(max_examples=EXAMPLES, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                          HealthCheck.large_base_example])
        @given(st.lists(specs(), min_size=MIN_EVENTS, max_size=MAX_EVENTS))
        def check(batch: list[Spec]) -> None:
            records, expected = [], []
            for spec in batch:
                ts = clock[spec.entity]
                if spec.defect == "late" and ts == T0:  # nothing applied yet: cannot be late
                    spec = replace(spec, defect=None)
                if spec.defect == "late":
                    ts -= PERIOD * (len(spec.rows) + spec.detail)
                elif spec.defect == "future_ts":
                    ts = float(int(time.time() + spec.detail))
                records.append(materialise(spec, ts))
                if spec.defect is None:
                    clock[spec.entity] = ts + PERIOD * len(spec.rows)
                    expected.append(((spec.entity, ts), len(spec.rows) if spec.chunk else None))
                else:
                    expected.append((None, spec.defect))
            sources = harness.send(records)
            want_p = {e for e, _ in expected if e is not None}
            want_d = {s for s, (e, _) in zip(sources, expected, strict=True) if e is None}
            harness.wait_for(want_p, want_d)
            for source, (event, what) in zip(sources, expected, strict=True):
                if event is not None:
                    rec = harness.predictions.get(event)
                    assert rec is not None, f"no prediction for good event {event}"
                    if what is None:
                        assert len(rec["forecast"]) == 2 and "period" not in rec
                    else:
                        assert len(rec["forecast"]) == what == len(rec["score"])
                    totals["good"] += 1
                else:
                    rec = harness.dead.get(source)
                    assert rec is not None, f"no dead letter for a {what} event at {source}"
                    assert rec["reason"] == what, (what, rec)
                    totals["bad"] += 1
                    reasons[what] = reasons.get(what, 0) + 1
            assert worker.proc is not None and worker.proc.poll() is None, worker.log()[-3000:]

        check()
        first = Counts.scrape(port)
        written = {k: ends(settings.kafka_bootstrap, names[k]) for k in ("events", "predictions",
                                                                        "deadletter")}
        code = worker.stop()
        log = worker.log()
        # the whole topic once more, as after a crash before any commit: the position the worker
        # resumes from is the partition's checkpoint in Redis (Kafka's commit only without one)
        asyncio.run(rewind(settings.kafka_bootstrap, unique, names["events"], 2))
        rewind_checkpoints(settings.redis_url, unique, load_artifact(art).model_id, 2)
        worker.start().wait_ready()
        second = Counts.scrape(port, until_events=written["events"])
        again = {k: ends(settings.kafka_bootstrap, names[k]) for k in ("predictions",
                                                                      "deadletter")}
    finally:
        harness.close()
        code2 = worker.stop()
    sent = totals["good"] + totals["bad"]
    print(f"payloads: {totals}, dead letters by reason: {dict(sorted(reasons.items()))}")
    print(f"first run {first}; topics {written}; after rewinding: {second}, topics {again}")
    assert sent >= 10_000 and min(totals.values()) > 3000
    assert set(reasons) == set(DEFECTS) and set(DEFECTS) <= set(REASONS)
    assert harness.duplicates == 0  # a running worker predicts each event once
    assert code == 0 and "Traceback" not in log and "CRITICAL" not in log, log[-3000:]
    # every message is exactly one prediction, dead letter or counted replay
    assert first.events == written["events"] == sent
    assert first.predictions == written["predictions"] == totals["good"]
    assert first.deadletters == written["deadletter"] == totals["bad"]
    assert first.replayed == 0 and first.by_reason == reasons
    # the replayed topic: nothing predicted twice, every message accounted for again
    log2 = worker.log()
    assert code2 == 0 and "Traceback" not in log2 and "CRITICAL" not in log2, log2[-3000:]
    assert second.events == sent and second.predictions == 0
    assert again["predictions"] == written["predictions"]
    assert second.replayed + second.deadletters == sent and second.replayed >= totals["good"]
    assert again["deadletter"] == written["deadletter"] + second.deadletters


@dataclass
class Counts:
    """The worker's message counters, read from its /metrics endpoint."""

    events: int
    predictions: int
    deadletters: int
    replayed: int
    by_reason: dict[str, int]

    @classmethod
    def scrape(cls, port: int, until_events: int = 0, timeout: float = 180.0) -> Counts:
        """The counters now, or once ``events`` reached ``until_events``."""
        deadline = time.monotonic() + timeout
        while True:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                          timeout=10).read().decode()
            values = {(s.name, s.labels.get("reason")): s.value
                      for f in text_string_to_metric_families(text) for s in f.samples}
            by_reason = {r: int(v) for (n, r), v in values.items()
                         if n == "seqstream_deadletters_total" and v}
            counts = cls(int(values[("seqstream_events_total", None)]),
                         int(values[("seqstream_predictions_total", None)]),
                         sum(by_reason.values()), int(values[("seqstream_replayed_total", None)]),
                         by_reason)
            if counts.events >= until_events or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


def ends(bootstrap: str, topic: str) -> int:
    """Records ever written to ``topic``."""
    offsets = EndOffsets(bootstrap, topic)
    try:
        return offsets.total()
    finally:
        offsets.close()


def rewind_checkpoints(redis_url: str, app_id: str, model_id: str, partitions: int) -> None:
    """Set every partition's checkpoint (the next offset to read, kept with the states) to 0."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        for p in range(partitions):
            client.set(f"{{{namespace(app_id, model_id)}:{p}}}", b"0")  # stream.state's layout
    finally:
        client.close()


async def rewind(bootstrap: str, group: str, topic: str, partitions: int) -> None:
    """Commit offset 0 on every partition of ``topic`` for the (idle) consumer ``group``."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.structs import OffsetAndMetadata

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.commit({tp: OffsetAndMetadata(0, "") for tp in tps})
    finally:
        await consumer.stop()
