"""Ground truth: AAMI EC57 classes from WFDB annotations, NAB windows by timestamp, SKAB runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb

from seqstream.evaluation.labels import (
    PACED_RECORDS,
    Labels,
    aami_class,
    ecg_labels,
    ecg_records,
    nab_labels,
    skab_labels,
)
from stream.errors import ConfigError


def test_aami_grouping_of_beat_symbols() -> None:
    assert {s: aami_class(s) for s in "NLRej"} == dict.fromkeys("NLRej", "N")
    assert {s: aami_class(s) for s in "AaJS"} == dict.fromkeys("AaJS", "SVEB")
    assert {s: aami_class(s) for s in "VE"} == dict.fromkeys("VE", "VEB")
    assert aami_class("F") == "F"
    assert [aami_class(s) for s in "/fQ?"] == ["Q"] * 4
    assert [aami_class(s) for s in "+~|x![]\""] == [None] * 8


def test_hand_written_annotation_file_gives_classes_and_drops_non_beats(tmp_path: Path) -> None:
    symbols = ["N", "+", "A", "V", "~", "[", "V", "N", "]", "L", "/", "F"]
    samples = [10, 12, 20, 30, 35, 38, 40, 50, 55, 60, 70, 80]
    wfdb.wrann("rec", "atr", np.array(samples), symbols, write_dir=str(tmp_path), fs=360)
    lab = ecg_labels(tmp_path, "rec")
    # non-beats (+ ~ [ ]) dropped; the V and N inside the flutter episode [38, 55] become Q
    assert lab.r_peaks.tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
    assert lab.classes.tolist() == ["N", "SVEB", "VEB", "Q", "Q", "N", "Q", "F"]
    assert lab.counts() == {"N": 2, "SVEB": 1, "VEB": 1, "F": 1, "Q": 3}


def test_paced_records_are_left_out_of_the_shared_mitdb(shared_data: Path) -> None:
    names = ecg_records(shared_data / "mitdb")
    listed = (shared_data / "mitdb" / "RECORDS").read_text().split()
    assert set(names) == set(listed) - set(PACED_RECORDS)
    assert not set(PACED_RECORDS) & set(names)


def test_real_record_labels_agree_with_its_annotation_symbols(bundled_data: Path) -> None:
    lab = ecg_labels(bundled_data / "mitdb", "100")
    ann = wfdb.rdann(str(bundled_data / "mitdb" / "100"), "atr")
    v_samples = [s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym == "V"]
    assert lab.r_peaks[lab.classes == "VEB"].tolist() == v_samples
    assert np.all(np.diff(lab.r_peaks) > 0)
    assert lab.counts()["SVEB"] == sum(sym in "AaJS" for sym in ann.symbol)


def test_part_cuts_and_reindexes_beats_and_windows() -> None:
    beats = Labels.from_beats([5, 15, 25], ["N", "VEB", "N"]).part(10, 30)
    assert beats.r_peaks.tolist() == [5, 15] and beats.classes.tolist() == ["VEB", "N"]
    wins = Labels.from_windows([(0, 4), (6, 12), (20, 30)]).part(5, 25)
    assert wins.windows.tolist() == [[1, 7], [15, 20]]


def test_nab_windows_become_inclusive_sample_ranges(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(
        {"x/s.csv": [["2020-01-01 00:10:00.000000", "2020-01-01 00:20:00.000000"],
                     ["2020-01-01 00:42:00", "2020-01-01 00:47:00"]]}))
    stamps = pd.date_range("2020-01-01", periods=12, freq="5min").astype(str).tolist()
    lab = nab_labels(tmp_path, "x/s.csv", stamps)
    # rows at 00:10, 00:15, 00:20 -> [2, 5); 00:42..00:47 holds only the row at 00:45 -> [9, 10)
    assert lab.windows.tolist() == [[2, 5], [9, 10]]
    with pytest.raises(ConfigError, match=r"expected 'y\.csv'"):
        nab_labels(tmp_path, "y.csv", stamps)


def test_real_nab_series_windows_match_its_label_file(bundled_data: Path) -> None:
    root = bundled_data / "nab"
    name = "realKnownCause/ambient_temperature_system_failure.csv"
    frame = pd.read_csv(root / "data" / name)
    lab = nab_labels(root, name, frame["timestamp"])
    table = json.loads((root / "labels" / "combined_windows.json").read_text())[name]
    stamps = pd.to_datetime(frame["timestamp"])
    assert len(lab.windows) == len(table)
    for (lo, hi), (start, end) in zip(lab.windows, table, strict=True):
        inside = stamps[lo:hi]
        assert inside.min() >= pd.Timestamp(start) and inside.max() <= pd.Timestamp(end)
        assert lo == 0 or stamps[lo - 1] < pd.Timestamp(start)
        assert hi == len(stamps) or stamps[hi] > pd.Timestamp(end)


def test_skab_anomaly_column_runs_are_windows() -> None:
    lab = skab_labels([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    assert lab.windows.tolist() == [[1, 3], [5, 6]]
