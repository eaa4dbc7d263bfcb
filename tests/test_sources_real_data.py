"""Every loader reads the real recordings into the same shape, with labels where they exist.

Counts are checked against the files themselves (read independently here), never against
numbers typed into the test.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import wfdb
from bundled import BUNDLED_NAB, SKAB_SENSORS

from stream.errors import ConfigError
from training.sources import (
    AAMI_ABNORMAL,
    BUNDLED_MITDB,
    PACED_RECORDS,
    load_nab,
    load_skab,
    load_source,
    load_table,
    load_wfdb,
    resolve_path,
)

DATA_FILES = (".dat", ".atr", ".csv", ".json")  # not .hea: git may rewrite its CRLF endings


def _checksummed(folder: Path) -> list[str]:
    """The data files ``folder/SHA256SUMS.txt`` lists, each checked against its digest."""
    names = []
    for line in (folder / "SHA256SUMS.txt").read_text().splitlines():
        digest, name = line.split()
        if not name.endswith(DATA_FILES):
            continue
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
        names.append(name)
    return names


def test_bundled_subset_is_real_mitdb_with_its_licence() -> None:
    readme = (BUNDLED_MITDB / "README.md").read_text()
    assert "ODC-By 1.0" in readme and "Moody GB, Mark RG" in readme
    names = sorted(p.stem for p in BUNDLED_MITDB.glob("*.hea"))
    assert len(names) >= 2
    assert {n.split(".")[0] for n in _checksummed(BUNDLED_MITDB)} >= set(names)
    assert resolve_path("bundled:mitdb") == BUNDLED_MITDB


def test_bundled_nab_series_are_nabs_files_with_its_licence() -> None:
    readme = (BUNDLED_NAB / "README.md").read_text()
    assert "Copyright 2014-2024 Numenta" in (BUNDLED_NAB / "LICENSE.txt").read_text()
    names = _checksummed(BUNDLED_NAB)
    series = sorted(str(p.relative_to(BUNDLED_NAB)) for p in BUNDLED_NAB.glob("data/*/*.csv"))
    assert sorted(n for n in names if n.startswith("data/")) == series
    assert all(s.removeprefix("data/") in readme for s in series)


def test_bundled_files_equal_the_shared_data_sets(shared_data: Path) -> None:
    for folder, name in [(BUNDLED_MITDB, "mitdb"), (BUNDLED_NAB, "nab")]:
        for rel in _checksummed(folder):
            assert (shared_data / name / rel).read_bytes() == (folder / rel).read_bytes(), rel


def test_bundled_records_hold_abnormal_and_normal_beats() -> None:
    series = load_wfdb(BUNDLED_MITDB, leads=["MLII"])
    beats = np.concatenate([s.beats.labels for s in series])
    assert (beats == 1).sum() > 100 and (beats == 0).sum() > 1000


def test_mitdb_beats_and_labels_follow_aami(bundled_data: Path) -> None:
    s = load_wfdb(bundled_data / "mitdb", records=["106"], leads=["MLII", "V1"])[0]
    ann = wfdb.rdann(str(bundled_data / "mitdb" / "106"), "atr")
    v_beats = sum(sym == "V" for sym in ann.symbol)
    assert s.values.shape[1] == 2 and s.features == (("MLII", "mV"), ("V1", "mV"))
    assert sum(sym == "V" for sym in s.beats.symbols) == v_beats
    assert int((s.beats.labels == 1).sum()) == sum(sym in AAMI_ABNORMAL for sym in ann.symbol)
    # Every sample carries its beat's label: the R peak of each V beat lies in an abnormal span.
    v_peaks = s.beats.samples[np.array(s.beats.symbols) == "V"]
    assert np.all(s.labels[v_peaks] == 1)
    n_peaks = s.beats.samples[np.array(s.beats.symbols) == "N"]
    assert np.all(s.labels[n_peaks] == 0)


def test_record_with_reversed_leads_is_read_by_name(shared_data: Path) -> None:
    s = load_wfdb(shared_data / "mitdb", records=["114"], leads=["MLII"])[0]
    rec = wfdb.rdrecord(str(shared_data / "mitdb" / "114"), sampto=100)
    assert rec.sig_name[0] != "MLII"
    assert np.allclose(s.values[:100, 0], rec.p_signal[:, rec.sig_name.index("MLII")])


def test_mitdb_source_leaves_paced_records_out(shared_data: Path) -> None:
    series = load_source("mitdb", shared_data / "mitdb", entities=["100", "102", "107"])
    assert [s.entity for s in series] == ["100"]
    assert {"102", "107"} <= set(PACED_RECORDS)
    wfdb_all = load_source("wfdb", shared_data / "mitdb", entities=["100", "102"])
    assert [s.entity for s in wfdb_all] == ["100", "102"]  # plain wfdb keeps them


def test_a_users_own_wfdb_folder_without_annotations(tmp_path: Path,
                                                     bundled_data: Path) -> None:
    for ext in ("hea", "dat"):
        shutil.copy(bundled_data / "mitdb" / f"215.{ext}", tmp_path / f"215.{ext}")
    s = load_wfdb(tmp_path)[0]
    assert s.entity == "215" and s.labels is None and s.beats is None
    assert s.values.shape[1] == 2
    with pytest.raises(ConfigError, match="expected"):
        load_wfdb(tmp_path, leads=["V9"])


def test_nab_labels_are_the_combined_windows(bundled_data: Path) -> None:
    name = "realKnownCause/ambient_temperature_system_failure.csv"
    s = load_nab(bundled_data / "nab", [name])[0]
    frame = pd.read_csv(bundled_data / "nab" / "data" / name)
    windows = json.loads((bundled_data / "nab" / "labels" / "combined_windows.json").read_text(
        ))
    stamps = pd.to_datetime(frame["timestamp"])
    inside = np.zeros(len(frame), dtype=bool)
    for lo, hi in windows[name]:
        inside |= ((stamps >= pd.Timestamp(lo)) & (stamps <= pd.Timestamp(hi))).to_numpy()
    assert np.array_equal(s.labels == 1, inside) and inside.any()
    assert s.period_s == float(stamps.diff().dt.total_seconds().median())
    assert np.array_equal(s.values[:, 0], frame["value"].to_numpy())


def test_nab_series_with_repeated_stamps_load_in_file_order(bundled_data: Path) -> None:
    name = "realAdExchange/exchange-2_cpc_results.csv"
    s = load_nab(bundled_data / "nab", [name])[0]
    frame = pd.read_csv(bundled_data / "nab" / "data" / name)
    assert (pd.to_datetime(frame["timestamp"]).diff().dt.total_seconds() == 0).any()
    assert len(s.values) == len(frame) and s.period_s > 0


# Tier 1 reads SKAB-format files the tests generate (SKAB is GPL-3.0, see tests/bundled.py);
# tier 2 reads the real experiments.
SKAB_ROOTS = ["bundled_data", pytest.param("shared_data", marks=pytest.mark.shared)]


@pytest.mark.parametrize("data", SKAB_ROOTS)
def test_skab_reads_eight_sensors_and_row_labels(request: pytest.FixtureRequest,
                                                 data: str) -> None:
    root = request.getfixturevalue(data) / "skab"
    series = load_skab(root, ["valve1/0.csv", "anomaly-free/anomaly-free.csv"])
    frame = pd.read_csv(root / "data" / "valve1" / "0.csv", sep=";")
    assert series[0].values.shape == (len(frame), 8)
    assert np.array_equal(series[0].labels, frame["anomaly"].to_numpy().astype(np.int8))
    assert not series[1].labels.any()
    assert dict(series[0].features)["Pressure"] == "bar"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_users_long_table_in_csv_or_parquet(tmp_path: Path, bundled_data: Path,
                                               fmt: str) -> None:
    # Two SKAB-format experiments in long form, rows shuffled: the loader sorts by time.
    parts = []
    for name in ("valve1/1.csv", "valve1/2.csv"):
        f = pd.read_csv(bundled_data / "skab" / "data" / name, sep=";")
        f["entity"] = name
        parts.append(f)
    frame = pd.concat(parts).sample(frac=1.0, random_state=0)
    path = tmp_path / f"long.{fmt}"
    frame.to_parquet(path) if fmt == "parquet" else frame.to_csv(path, index=False)
    series = load_table(path, "entity", "datetime", ["Current", "Pressure"], "anomaly",
                        ["A", "bar"])
    assert [s.entity for s in series] == ["valve1/1.csv", "valve1/2.csv"]
    for s, original in zip(series, parts, strict=True):
        assert np.array_equal(s.values, original[["Current", "Pressure"]].to_numpy())
        assert np.array_equal(s.labels, original["anomaly"].to_numpy().astype(np.int8))
        assert s.features == (("Current", "A"), ("Pressure", "bar"))
    with pytest.raises(ConfigError, match="missing"):
        load_table(path, "entity", "datetime", ["Flow"])


def test_generated_skab_files_have_the_real_files_format(bundled_data: Path,
                                                         shared_data: Path) -> None:
    for name in ("valve1/0.csv", "anomaly-free/anomaly-free.csv"):
        made, real = (root / "skab" / "data" / name for root in (bundled_data, shared_data))
        assert made.read_text().splitlines()[0] == real.read_text().splitlines()[0]
        a, b = (pd.read_csv(p, sep=";") for p in (made, real))
        assert dict(a.dtypes) == dict(b.dtypes)
        assert len(pd.to_datetime(a["datetime"], format="%Y-%m-%d %H:%M:%S")) == len(a)
        for label in ("anomaly", "changepoint"):
            if label in b:
                assert set(a[label]) == set(b[label]) == {0.0, 1.0}
    sensors = pd.read_csv(shared_data / "skab" / "data" / "anomaly-free" / "anomaly-free.csv",
                          sep=";", nrows=1).columns
    assert ["datetime", *SKAB_SENSORS] == list(sensors)


def test_unknown_source_and_missing_paths_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected one of wfdb"):
        load_source("hdf5", tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_table(tmp_path / "none.csv", None, "time", ["x"])
    with pytest.raises(ConfigError, match="combined_windows"):
        load_nab(tmp_path)
