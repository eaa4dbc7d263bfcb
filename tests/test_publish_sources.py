"""What ``seqstream publish`` reads: source detection, feature defaults, and bad files refused with
one line naming the problem (before any Kafka connection)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from seqstream import publish
from seqstream.cli import main
from stream.settings import Settings


def _lanes(*argv: str, settings: Settings | None = None):
    parser = argparse.ArgumentParser()
    publish.configure(parser)
    return publish.load_lanes(parser.parse_args(list(argv)), settings or Settings())


def test_default_is_the_bundled_ecg_lead_mlii() -> None:
    lanes = _lanes()
    assert lanes, "the bundled MIT-BIH records should give at least one entity"
    for lane in lanes:
        assert lane.values.shape[1] == 1 and lane.period_s == pytest.approx(1 / 360)


@pytest.mark.parametrize(("sub", "records", "n_features"), [
    ("mitdb", "100", 1),
    ("nab", "realKnownCause/rogue_agent_key_hold.csv", 1),
    ("skab", "valve1/0.csv", 8),
])
def test_source_is_detected_from_the_path(bundled_data: Path, sub: str, records: str,
                                          n_features: int) -> None:
    [lane] = _lanes("--path", str(bundled_data / sub), "--records", records)
    assert lane.entity_id == records and lane.values.shape[1] == n_features


def test_features_default_to_the_model_card(bundled_data: Path, tmp_path: Path) -> None:
    (tmp_path / "card.json").write_text(json.dumps({"features": [{"name": "V1", "unit": "mV"}]}))
    settings = Settings.from_env({"SEQSTREAM_MODEL": str(tmp_path)})
    [lane] = _lanes("--path", str(bundled_data / "mitdb"), "--records", "106", settings=settings)
    import wfdb

    rec = wfdb.rdrecord(str(bundled_data / "mitdb" / "106"), channel_names=["V1"], sampto=100)
    assert (lane.values[:100] == rec.p_signal).all()


def _one_line_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    rc = main(["publish", *argv, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 1
    assert err.startswith("seqstream publish: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = _one_line_error(capsys, "--path", str(tmp_path / "nope"))
    assert "not found" in err and str(tmp_path / "nope") in err


def test_semicolon_csv_points_at_skab(capsys: pytest.CaptureFixture[str],
                                      bundled_data: Path) -> None:
    err = _one_line_error(capsys, "--path", str(bundled_data / "skab/data/valve1/0.csv"))
    assert "';' between columns" in err and "--source skab" in err


def test_not_a_table(capsys: pytest.CaptureFixture[str], bundled_data: Path) -> None:
    err = _one_line_error(capsys, "--path", str(bundled_data / "nab" / "README.md"))
    assert "expected a .csv or .parquet file" in err


def test_missing_feature_column(capsys: pytest.CaptureFixture[str], bundled_data: Path) -> None:
    path = bundled_data / "nab/data/realTraffic/speed_6005.csv"
    err = _one_line_error(capsys, "--path", str(path), "--features", "speed")
    assert "missing ['speed']" in err and "timestamp" in err


def test_missing_lead(capsys: pytest.CaptureFixture[str], bundled_data: Path) -> None:
    err = _one_line_error(capsys, "--path", str(bundled_data / "mitdb"), "--records", "100",
                          "--features", "V1")
    assert "record 100 has leads" in err


def test_garbage_parquet(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    err = _one_line_error(capsys, "--path", str(bad))
    assert "expected a readable CSV or Parquet file" in err and str(bad) in err


def test_time_column_needed(capsys: pytest.CaptureFixture[str], bundled_data: Path,
                            tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.read_csv(bundled_data / "nab/data/realTraffic/speed_6005.csv").head(20)
    path = tmp_path / "no_time.csv"
    frame.rename(columns={"timestamp": "when"}).to_csv(path, index=False)
    err = _one_line_error(capsys, "--path", str(path))
    assert "expected a time column" in err and "--time-column" in err
    # and with the column named, the same file reads
    [lane] = _lanes("--path", str(path), "--time-column", "when")
    assert lane.values[:, 0].tolist() == frame["value"].tolist()
