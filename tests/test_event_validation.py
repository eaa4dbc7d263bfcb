"""Every kind of bad event is refused with its own reason and a message saying what was expected
and what came; good singles and chunks (numeric or ISO-8601 times) pass; the JSON Schemas are
valid and agree with the validator on the examples."""

from __future__ import annotations

import jsonschema
import orjson
import pytest

from stream.errors import RecordError
from stream.records import RAW_LIMIT, REASONS, deadletter_record, parse_event, schema

F = 2


def good(**over) -> dict:
    body = {"entity_id": "p1", "ts": 1_700_000_000.5, "values": [0.1, -2]}
    body.update(over)
    return body


@pytest.mark.parametrize(("raw", "reason", "says"), [
    (b"x" * 5000, "too_large", "expected at most 4096 bytes, got 5000"),
    (b'{"entity_id": "p1", ', "malformed_json", "expected UTF-8 JSON"),
    (b'\xff\xfe{"a": 1}', "malformed_json", "expected UTF-8 JSON"),
    (b"[1, 2]", "not_object", "got an array"),
    (b"42", "not_object", "got a number"),
    (orjson.dumps({"entity_id": "p1", "values": [1, 2]}), "missing_field", "missing ts"),
    (orjson.dumps(good(extra=1)), "extra_field", "'extra'"),
    (orjson.dumps(good(entity_id=7)), "wrong_type", "entity_id: expected a string, got a number"),
    (orjson.dumps(good(entity_id=" \t")), "empty_entity_id", "non-blank"),
    (orjson.dumps(good(entity_id="x" * 300)), "bad_entity_id", "at most 256 UTF-8 bytes"),
    (orjson.dumps(good(ts=True)), "wrong_type", "ts: expected a number or an ISO-8601 string"),
    (orjson.dumps(good(ts=-1)), "bad_ts", "got -1"),
    (orjson.dumps(good(ts="yesterday")), "bad_ts", "ISO-8601"),
    (orjson.dumps(good(ts="2024-05-01T12:00:00")), "bad_ts", "naive"),
    (orjson.dumps(good(values={"a": 1})), "wrong_type", "values: expected an array"),
    (orjson.dumps(good(values=[1.0])), "feature_count", "expected 2 values, got 1"),
    (orjson.dumps(good(values=[1.0, "2"])), "wrong_type", "got a string"),
    (orjson.dumps(good(values=[1.0, None])), "wrong_type", "got null"),
    (orjson.dumps(good(values=[True, 1.0])), "wrong_type", "got a boolean"),
    (orjson.dumps(good(values=[1e39, 1.0])), "non_finite", "finite float32"),
    (b'{"entity_id": "p1", "ts": 1, "values": [NaN, 1]}', "non_finite", "NaN"),
    (b'{"entity_id": "p1", "ts": 1, "values": [-Infinity, 1]}', "non_finite", "-Infinity"),
    (b'{"entity_id": "p1", "ts": 1, "values": [1e999, 1]}', "non_finite", "1e999"),
    (orjson.dumps(good(values=[[1, 2], [3, 4]])), "missing_field", "needs 'period'"),
    (orjson.dumps(good(period=0.1, values=[])), "empty_chunk", "at least one sample"),
    (orjson.dumps(good(period=0, values=[[1, 2]])), "bad_period", "got 0"),
    (orjson.dumps(good(period="1", values=[[1, 2]])), "wrong_type", "period"),
    (orjson.dumps(good(period=0.1, values=[1, 2])), "wrong_type", "values[0]"),
    (orjson.dumps(good(period=0.1, values=[[1, 2], [3]])), "feature_count", "values[1]"),
])
def test_a_bad_event_gets_its_reason_and_a_message_saying_what_was_expected(raw, reason, says):
    with pytest.raises(RecordError) as caught:
        parse_event(raw, F, max_bytes=4096)
    assert caught.value.reason == reason
    assert reason in REASONS
    assert says in caught.value.detail


def test_the_kafka_key_must_be_the_entity_id():
    raw = orjson.dumps(good())
    assert parse_event(raw, F, key=b"p1", check_key=True).entity_id == "p1"
    for key in (None, b"p2"):
        with pytest.raises(RecordError, match="key_mismatch"):
            parse_event(raw, F, key=key, check_key=True)


def test_good_singles_and_chunks_with_numeric_or_iso_times():
    e = parse_event(orjson.dumps(good(ts="2023-11-14T22:13:20.5+00:00")), F)
    assert (e.entity_id, e.ts, e.chunk, e.rows) == ("p1", 1_700_000_000.5, False, [[0.1, -2]])
    c = parse_event(orjson.dumps(good(period=0.5, values=[[1, 2], [3, 4], [5, 6]],
                                      ts="2023-11-14T23:13:20+01:00")), F)
    assert (c.ts, c.period, c.chunk, len(c.rows)) == (1_700_000_000.0, 0.5, True, 3)


def test_a_dead_letter_keeps_the_raw_start_as_text_and_locates_the_message():
    raw = b"\xff" + b"y" * (RAW_LIMIT + 10)
    with pytest.raises(RecordError) as caught:
        parse_event(raw, F)
    record = deadletter_record(caught.value, raw, "events", 3, 1234)
    jsonschema.validate(record, schema("deadletter"))
    assert record["raw"].startswith("\ufffdyyy") and len(record["raw"]) == RAW_LIMIT
    assert (record["raw_bytes"], record["raw_truncated"]) == (len(raw), True)
    assert (record["topic"], record["partition"], record["offset"]) == ("events", 3, 1234)


def test_the_schemas_are_valid_and_agree_with_the_validator():
    for name in ("event", "prediction", "beat", "deadletter"):
        jsonschema.Draft202012Validator.check_schema(schema(name))
    assert tuple(schema("deadletter")["properties"]["reason"]["enum"]) == REASONS
    for example in schema("event")["examples"]:
        jsonschema.validate(example, schema("event"))
        n = len(example["values"][0]) if "period" in example else len(example["values"])
        assert parse_event(orjson.dumps(example), n).entity_id == example["entity_id"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(good(extra=1), schema("event"))
