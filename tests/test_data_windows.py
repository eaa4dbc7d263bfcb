"""Training windows respect time: per-entity split in order, scaler from training only, targets
are the samples that follow, and ``train_on: normal`` keeps labelled anomalies out."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from stream.errors import ConfigError
from training.data import SeriesDataModule, split_points, windows
from training.sources import load_nab, load_wfdb

NAB_SERIES = ["realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
              "realAWSCloudwatch/rds_cpu_utilization_cc0c53.csv"]


@pytest.fixture(scope="module")
def nab(bundled_data: Path):
    return load_nab(bundled_data / "nab", NAB_SERIES)


def test_windows_stay_inside_their_bounds() -> None:
    cases = [(100, 10, 3, 0, 70), (100, 10, 7, 70, 85), (50, 60, 1, 0, 50)]
    for n, length, stride, lo, hi in cases:
        starts = windows(n, length, stride, lo, hi)
        assert np.all(starts >= lo) and np.all(starts + length <= hi)
        assert np.all(np.diff(starts) == stride)
        if len(starts):  # the next start would not fit
            assert starts[-1] + stride + length > hi


def test_split_is_in_time_order_and_refuses_bad_fractions() -> None:
    a, b = split_points(4032, (0.6, 0.15, 0.25))
    assert 0 < a < b < 4032 and a == round(4032 * 0.6)
    with pytest.raises(ConfigError, match="summing to 1"):
        split_points(100, (0.5, 0.2, 0.2))


def test_no_window_crosses_from_training_into_validation(nab) -> None:
    dm = SeriesDataModule(nab, window=48, stride=5, horizon=3, split=(0.6, 0.2, 0.2))
    span = 48 + 3
    for e, s in dm.train_starts:
        assert s + span <= dm.parts[e][0]
    for e, s in dm.val_starts:
        assert dm.parts[e][0] <= s and s + span <= dm.parts[e][1]
    assert {e for e, _ in dm.train_starts} == {0, 1}


def test_targets_are_the_next_h_samples(nab) -> None:
    dm = SeriesDataModule(nab, window=20, stride=7, horizon=3)
    ds = dm.train_dataloader().dataset
    for i in (0, len(ds) // 2, len(ds) - 1):
        x, y = ds[i]
        e, s = ds.starts[i]
        z = dm.scaled[e]
        assert np.array_equal(x.numpy(), z[s:s + 20])
        for k in range(3):
            assert np.array_equal(y[:, k].numpy(), z[s + 1 + k:s + 21 + k])


def test_scaler_is_fitted_on_training_parts_only(nab) -> None:
    dm = SeriesDataModule(nab, window=20, stride=7, horizon=1)
    train = np.concatenate([s.values[:a] for s, (a, _) in zip(nab, dm.parts, strict=True)])
    assert np.allclose(dm.scaler.mean, train.mean(0)) and np.allclose(dm.scaler.std, train.std(0))
    # Changing the future (validation and test) leaves the scaler as it was.
    edited = [replace(s, values=np.concatenate([s.values[:a], s.values[a:] * 10 + 5]))
              for s, (a, _) in zip(nab, dm.parts, strict=True)]
    again = SeriesDataModule(edited, window=20, stride=7, horizon=1)
    assert np.array_equal(again.scaler.mean, dm.scaler.mean)
    assert np.array_equal(again.scaler.std, dm.scaler.std)


def test_train_on_normal_keeps_labelled_windows_out(nab) -> None:
    # NAB's labelled windows lie late in these series: a long training part reaches them.
    kw = {"window": 48, "stride": 4, "horizon": 1, "split": (0.9, 0.05, 0.05)}
    everything = SeriesDataModule(nab, train_on="all", **kw)
    normal = SeriesDataModule(nab, train_on="normal", **kw)
    assert 0 < len(normal.train_starts) < len(everything.train_starts)
    for e, s in normal.train_starts:
        assert not nab[e].labels[s:s + 49].any()
    dropped = set(everything.train_starts) - set(normal.train_starts)
    assert all(nab[e].labels[s:s + 49].any() for e, s in dropped)


def test_ecg_normal_windows_hold_only_aami_normal_beats(bundled_data: Path) -> None:
    rec = load_wfdb(bundled_data / "mitdb", records=["106"], leads=["MLII"])
    dm = SeriesDataModule(rec, window=720, stride=360, horizon=1, train_on="normal")
    beats = rec[0].beats
    for _, s in dm.train_starts[::10]:
        inside = (beats.samples >= s) & (beats.samples < s + 721)
        assert set(np.array(beats.symbols)[inside]) <= set("NLRej")


def test_max_windows_caps_and_is_seeded(nab) -> None:
    a = SeriesDataModule(nab, window=48, stride=1, horizon=1, max_windows=100, seed=3)
    b = SeriesDataModule(nab, window=48, stride=1, horizon=1, max_windows=100, seed=3)
    c = SeriesDataModule(nab, window=48, stride=1, horizon=1, max_windows=100, seed=4)
    assert len(a.train_starts) == 100 and a.train_starts == b.train_starts != c.train_starts


def test_mismatched_entities_and_short_series_are_refused(nab, bundled_data: Path) -> None:
    ecg = load_wfdb(bundled_data / "mitdb", records=["100"], leads=["MLII"])
    with pytest.raises(ConfigError, match="same features"):
        SeriesDataModule([nab[0], ecg[0]], window=10, stride=5, horizon=1)
    with pytest.raises(ConfigError, match="no training window"):
        SeriesDataModule(nab, window=5000, stride=5, horizon=1)
