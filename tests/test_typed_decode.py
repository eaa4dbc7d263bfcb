"""stream.records decodes a valid event with msgspec's typed decoder and leaves everything else to
the checked way, which alone words a refusal: so wherever the typed way answers, it must answer
exactly what the checked way would (same entity, times, rows, kind), and it must answer for the
valid events it exists for. The payloads are test_bad_input_property's (every dead-letter
reason) plus hand-made edges where the two JSON decoders could part ways."""

from __future__ import annotations

import pytest
from hypothesis import given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_bad_input_property import MAX_BYTES, T0, F, materialise, specs

from stream.errors import RecordError
from stream.records import _checked, _typed, parse_event


def _outcome(raw: bytes, key: bytes | None) -> tuple:
    try:
        e = _checked(raw, F, key, True)
    except RecordError as ex:
        return ("refused", ex.reason, ex.detail)
    return _fields(e)


def _fields(e) -> tuple:
    return ("event", e.entity_id, e.ts, type(e.ts), e.period, type(e.period), e.chunk,
            [[(v, type(v)) for v in row] for row in e.rows])


def _agree(raw: bytes, key: bytes | None) -> object:
    typed = _typed(raw, F, key, True)
    want = _outcome(raw, key)
    if typed is not None:
        assert _fields(typed) == want, raw
    try:
        got = _fields(parse_event(raw, F, MAX_BYTES, key, True))
    except RecordError as ex:
        got = ("refused", ex.reason, ex.detail)
    if len(raw) <= MAX_BYTES:
        assert got == want, raw
    return typed


@seed(13)
@hsettings(max_examples=3000, deadline=None)
@given(spec=specs(), offset=st.integers(0, 10_000))
def test_the_typed_way_answers_as_the_checked_way_and_takes_every_valid_event(spec, offset):
    key, raw = materialise(spec, T0 + offset * 0.25)
    typed = _agree(raw, key)
    if spec.defect is None:
        assert typed is not None, raw


@pytest.mark.parametrize("raw", [
    b'{"entity_id":"a","ts":1,"values":[1, 2.5]}',
    b'{"entity_id":"a","ts":1,"values":[100000000000000000000000000000, 1]}',
    b'{"entity_id":"a","ts":1,"values":[10000000000000000000000000000000000000000, 1]}',
    b'{"entity_id":"a","ts":1,"values":[18446744073709551615, 1]}',
    b'{"entity_id":"a","ts":1,"values":[9223372036854775807, -9223372036854775808]}',
    b'{"entity_id":"a","ts":1,"values":[3.4028234663852886e38, -3.4028234663852886e38]}',
    b'{"entity_id":"a","ts":1,"values":[3.4028234663852890e38, 1]}',
    b'{"entity_id":"a","ts":1,"values":[1e39, 1]}',
    b'{"entity_id":"a","ts":1,"values":[-0.0, 1e-320]}',
    b'{"entity_id":"a","ts":1,"values":[true, 1]}',
    b'{"entity_id":"b","entity_id":"a","ts":1,"values":[1, 2]}',
    b'{"entity_id":"a","ts":1,"ts":"1970-01-01T00:00:02Z","values":[1, 2]}',
    b'{"entity_id":"a\\ud800","ts":1,"values":[1, 2]}',
    b'{"entity_id":"a","ts":253402300799,"values":[1, 2]}',
    b'{"entity_id":"a","ts":253402300800,"values":[1, 2]}',
    b'{"entity_id":"a","ts":99999999999999999999,"values":[1, 2]}',
    b'{"entity_id":"a","ts":1.5,"period":1,"values":[[1, 2]]}',
    b'{"entity_id":"a","ts":253402300798,"period":1,"values":[[1, 2],[1, 2],[1, 2]]}',
    b'{"entity_id":"a","ts":1,"period":31536000,"values":[[1, 2]]}',
    b'{"entity_id":"a","ts":1,"period":31536001,"values":[[1, 2]]}',
    b'{"entity_id":"a","ts":1,"period":true,"values":[[1, 2]]}',
    b'{"entity_id":"a","ts":1,"period":0.5,"values":[]}',
    b'{"entity_id":"a","ts":1,"period":0.5,"values":[[1, 2], [1]]}',
    b'{"entity_id":"a","ts":1,"values":[[1, 2]]}',
    b'{"entity_id":"a","ts":"2024-05-01T12:00:00","values":[1, 2]}',
    b'{"entity_id":"a","ts":"2024-05-01T12:00:00+01:00","values":[1, 2]}',
    b'{"entity_id":"a","ts":-1,"values":[1, 2]}',
    b'{"entity_id":" ","ts":1,"values":[1, 2]}',
    b'  {"entity_id":"a","ts":1,"values":[1, 2]}  ',
    b'{"entity_id":"a","ts":1,"values":[1, 2]} x',
    b'{"entity_id":"a","ts":1,"values":[NaN, 2]}',
])
def test_edges_of_the_two_decoders(raw):
    _agree(raw, b"a")
