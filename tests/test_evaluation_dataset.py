"""Which samples an evaluation uses: validation parts by the training split, test records the
network never saw (paced and DS1 ones left out), cut to the first minutes (fast tier, real
MIT-BIH)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wfdb

from seqstream.evaluation.dataset import load_eval_data, normal_mask, split_bounds
from seqstream.evaluation.labels import BEAT_SYMBOLS, Labels
from stream.errors import ConfigError

CARD = {"training": {"config": {"data": {"source": "mitdb", "path": "bundled:mitdb"}}},
        "data": {"entities": ["100"], "split": [0.7, 0.15, 0.15], "features": ["MLII"]}}


def _subset(folder: Path, mitdb: Path, records: tuple[str, ...]) -> Path:
    """``folder`` holding links to ``records`` of the MIT-BIH folder ``mitdb``."""
    for rec in records:
        for ext in ("hea", "dat", "atr"):
            (folder / f"{rec}.{ext}").symlink_to(mitdb / f"{rec}.{ext}")
    return folder


@pytest.fixture
def mitdb_subset(tmp_path: Path, bundled_data: Path) -> Path:
    """The bundled records 100 (trained on by CARD), 106 (DS1) and 200 (DS2)."""
    return _subset(tmp_path, bundled_data / "mitdb", ("100", "106", "200"))


def test_unseen_ds2_records_are_the_test_set(mitdb_subset: Path) -> None:
    data = load_eval_data(CARD, mitdb_subset, minutes=0.5)
    assert [s.entity for s in data.test] == ["200"]
    assert all(len(s.values) == 0.5 * 60 * 360 for s in data.test)
    ann = wfdb.rdann(str(mitdb_subset / "200"), "atr")
    beats = [s for s, sym in zip(ann.sample, ann.symbol, strict=True)
             if sym in BEAT_SYMBOLS and s < 0.5 * 60 * 360]
    assert data.test[0].labels.r_peaks.tolist() == beats


def test_paced_records_are_left_out_of_the_test_set(tmp_path: Path, shared_data: Path) -> None:
    subset = _subset(tmp_path, shared_data / "mitdb", ("100", "101", "102", "103"))
    data = load_eval_data(CARD, subset, minutes=0.5)
    assert [s.entity for s in data.test] == ["103"]  # 101 is DS1, 102 is paced


def test_validation_is_the_training_split_of_the_trained_records(mitdb_subset: Path) -> None:
    data = load_eval_data(CARD, mitdb_subset, minutes=0.5)
    [val] = data.validation
    a, b = split_bounds(650000, (0.7, 0.15, 0.15))
    assert val.entity == "100" and val.offset == a and len(val.values) == b - a
    full = wfdb.rdrecord(str(mitdb_subset / "100"), channel_names=["MLII"]).p_signal[:, 0]
    np.testing.assert_array_equal(val.values[:, 0], full[a:b])
    assert np.all((val.labels.r_peaks >= 0) & (val.labels.r_peaks < b - a))
    assert len(data.train_parts[0]) == a


def test_trained_records_are_refused_as_test_entities(mitdb_subset: Path) -> None:
    with pytest.raises(ConfigError, match="never saw"):
        load_eval_data(CARD, mitdb_subset, entities=["100"])


def test_ds1_records_are_refused_as_test_entities(mitdb_subset: Path) -> None:
    with pytest.raises(ConfigError, match=r"expected MIT-BIH DS2 records.*'106'"):
        load_eval_data(CARD, mitdb_subset, entities=["106", "200"])


def test_without_unseen_records_the_test_parts_are_used(tmp_path: Path,
                                                        bundled_data: Path) -> None:
    data = load_eval_data(CARD, _subset(tmp_path, bundled_data / "mitdb", ("100",)), minutes=1)
    a, b = split_bounds(650000, (0.7, 0.15, 0.15))
    [t] = data.test
    # streamed from the validation start (warm state), scored from the test start on
    assert t.entity == "100" and t.offset == a and t.start == b - a
    assert len(t.values) == b - a + 60 * 360
    assert "test parts" in data.test_source


def test_normal_mask_covers_normal_beats_and_samples_outside_windows() -> None:
    beats = Labels.from_beats([2, 6, 9], ["N", "VEB", "N"])
    assert normal_mask(beats, 11).astype(int).tolist() == [1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]
    wins = Labels.from_windows([(2, 4)])
    assert normal_mask(wins, 6).astype(int).tolist() == [1, 1, 0, 0, 1, 1]
