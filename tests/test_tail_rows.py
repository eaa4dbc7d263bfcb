"""``seqstream tail``'s record handling: prediction records of the worker's schema flatten to
samples, join their observed values, and print as table rows or JSON lines."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
import wfdb

from seqstream.tail import HEADER, Sample, ValueIndex, format_row, samples, to_json

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "stream" / "schemas" /
                     "prediction.json").read_text())


@pytest.fixture(scope="module")
def ecg(bundled_data: Path) -> np.ndarray:
    """2 s of MIT-BIH record 106 (lead MLII, mV), which has ventricular ectopic beats."""
    rec = wfdb.rdrecord(str(bundled_data / "mitdb" / "106"), channel_names=["MLII"], sampto=720)
    return rec.p_signal


def _chunk_record(values: np.ndarray, ts: float, period: float) -> dict:
    """A prediction record of the schema's chunk form: persistence forecasts (H=2) and scores
    of each sample against the previous one, as a worker with a persistence model would."""
    forecast = [[row.tolist(), row.tolist()] for row in values]
    score = [None] + [float(abs(b - a)[0] / 0.05) for a, b in itertools.pairwise(values)]
    return {"entity_id": "106", "ts": ts, "period": period, "forecast": forecast,
            "score": score, "anomaly": [s is not None and s > 4.0 for s in score],
            "threshold": 4.0, "model_id": "m1"}


def test_chunk_record_matches_schema_and_flattens(ecg: np.ndarray) -> None:
    period = 1 / 360
    record = _chunk_record(ecg[:36], 1_700_000_000.0, period)
    jsonschema.validate(record, SCHEMA)
    flat = samples(record)
    assert len(flat) == 36
    assert [s.ts for s in flat] == [1_700_000_000.0 + i * period for i in range(36)]
    assert [s.forecast[0] for s in flat] == ecg[:36].tolist()
    assert flat[0].score is None and all(s.score is not None for s in flat[1:])


def test_single_record_matches_schema_and_flattens(ecg: np.ndarray) -> None:
    record = {"entity_id": "106", "ts": 5.0, "forecast": [ecg[1].tolist()], "score": 0.7,
              "anomaly": False, "threshold": 4.0, "model_id": "m1"}
    jsonschema.validate(record, SCHEMA)
    [s] = samples(record)
    assert (s.entity_id, s.ts, s.score, s.anomaly) == ("106", 5.0, 0.7, False)


def test_values_join_by_entity_and_time(ecg: np.ndarray) -> None:
    index = ValueIndex()
    ts, period = 1_700_000_123.456, 1 / 360
    # the worker computes sample times as ts + period * (k + n); here the chunk starts at k = 5
    index.add_event({"entity_id": "106", "ts": ts, "period": period,
                     "values": ecg[:36].tolist()})
    for n in range(31):
        assert index.get("106", (ts + period * 5) + n * period) == ecg[5 + n].tolist()
    assert index.get("107", ts) is None
    assert index.get("106", ts - period) is None
    iso = {"entity_id": "x", "ts": "2024-05-01T12:00:00+00:00", "values": [1.5]}
    index.add_event(iso)
    assert index.get("x", 1714564800.0) == [1.5]


def test_value_index_stays_bounded(ecg: np.ndarray) -> None:
    index = ValueIndex(limit=100)
    index.add_event({"entity_id": "106", "ts": 0.0, "period": 1 / 360,
                     "values": ecg[:300].tolist()})
    assert len(index) == 100
    assert index.get("106", 299 / 360) == ecg[299].tolist() and index.get("106", 0.0) is None


def test_table_row_of_a_chunk_summarises_it(ecg: np.ndarray) -> None:
    record = _chunk_record(ecg[:36], 1_700_000_000.0, 1 / 360)
    flat = samples(record)
    row = format_row(flat)
    flagged = sum(record["anomaly"])
    assert row.startswith("2023-11-14 22:13:20.000")
    assert " 36 " in row
    assert f"{max(s for s in record['score'] if s is not None):.2f}" in row
    assert (f"ANOMALY x{flagged}" in row) == (flagged > 0)
    assert len(row.split()) >= 6 and len(HEADER.split()) >= 6


def test_json_line_is_flat_and_carries_the_value(ecg: np.ndarray) -> None:
    s = Sample("106", 2.0, [ecg[3].tolist()], 1.25, True, 1.0, "m1", ecg[2].tolist())
    body = orjson.loads(to_json(s))
    assert body == {"entity_id": "106", "ts": 2.0, "value": ecg[2].tolist(),
                    "forecast": [ecg[3].tolist()], "score": 1.25, "anomaly": True,
                    "threshold": 1.0, "model_id": "m1"}
