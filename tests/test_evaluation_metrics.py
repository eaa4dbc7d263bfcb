"""Forecast and flag metrics agree with their definitions, computed here the slow way."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pytest

from seqstream.evaluation.metrics import roc_auc
from training.evaluate import (
    beat_outcomes,
    estimate_season,
    flag_metrics,
    forecast_metrics,
)
from training.sources import load_nab, load_wfdb


@pytest.fixture(scope="module")
def cpu(bundled_data: Path) -> np.ndarray:
    s = load_nab(bundled_data / "nab", ["realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv"])[0]
    return (s.values - s.values.mean()) / s.values.std()


def test_persistence_as_the_forecast_scores_mase_of_persistence(cpu) -> None:
    fc = np.full_like(cpu, np.nan)
    fc[1:] = cpu[:-1]
    a, b = 2400, 3000
    m = forecast_metrics([cpu], [fc], [(a, b)], np.array([2.0]), ["cpu"], season=None)
    assert m["mae_ratio_persistence"] == pytest.approx(1.0)
    naive_train = np.mean(np.abs(np.diff(cpu[:a, 0])))
    test_err = cpu[b:, 0] - cpu[b - 1:-1, 0]
    assert m["mase"] == pytest.approx(np.mean(np.abs(test_err)) / naive_train)
    assert m["rmse"] == pytest.approx(np.sqrt(np.mean(test_err ** 2)))
    sst = np.sum((cpu[b:, 0] - cpu[b:, 0].mean()) ** 2)
    assert m["r2"] == pytest.approx(1 - np.sum(test_err ** 2) / sst)
    assert m["per_feature"]["cpu"]["mae"] == pytest.approx(2.0 * m["mae"])  # user units
    assert m["seasonal_naive"] is None


def test_seasonal_naive_metrics_use_the_given_season(cpu) -> None:
    fc = np.full_like(cpu, np.nan)
    fc[1:] = cpu[:-1] * 0.5 + cpu[1:] * 0.5  # some forecast better than persistence
    a, b, m_ = 2400, 3000, 288
    m = forecast_metrics([cpu], [fc], [(a, b)], np.array([1.0]), ["cpu"], season=m_)
    seas_test = np.mean(np.abs(cpu[b:, 0] - cpu[b - m_:-m_, 0]))
    seas_train = np.mean(np.abs(cpu[m_:a, 0] - cpu[:a - m_, 0]))
    assert m["seasonal_naive"]["mae"] == pytest.approx(seas_test)
    assert m["mase_seasonal"] == pytest.approx(m["mae"] / seas_train)
    assert m["mae_ratio_seasonal"] == pytest.approx(m["mae"] / seas_test)
    assert m["mase"] < m["persistence"]["mase"]


def test_ecg_season_is_about_one_heartbeat(bundled_data: Path) -> None:
    s = load_wfdb(bundled_data / "mitdb", records=["100"], leads=["MLII"])[0]
    part = s.values[:455_000]
    rr = np.median(np.diff(s.beats.samples[s.beats.samples < 455_000]))
    season = estimate_season([part])
    assert season is not None and abs(season - rr) / rr < 0.1


def test_white_noise_has_no_season() -> None:
    assert estimate_season([np.random.default_rng(0).normal(size=(20_000, 1))]) is None


def test_roc_auc_equals_counting_pairs() -> None:
    rng = np.random.default_rng(1)
    labels = rng.random(300) < 0.2
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding makes ties
    pairs = [1.0 if p > n else 0.5 if p == n else 0.0
             for p, n in product(scores[labels], scores[~labels])]
    assert roc_auc(scores, labels) == pytest.approx(np.mean(pairs))


def test_flag_metrics_and_chance_levels() -> None:
    rng = np.random.default_rng(2)
    labels = rng.random(10_000) < 0.1
    flags = rng.random(10_000) < 0.3  # random flags: chance by construction
    m = flag_metrics(labels, flags, flags.astype(float))
    tp = np.sum(labels & flags)
    assert m["precision"] == pytest.approx(tp / flags.sum())
    assert m["recall"] == pytest.approx(tp / labels.sum())
    assert m["precision"] == pytest.approx(m["prevalence"], abs=0.02)
    assert m["f1"] == pytest.approx(m["f1_chance"], abs=0.03)


def test_beats_take_the_highest_score_of_their_extent() -> None:
    samples = np.array([100, 300, 500, 700])
    labels = np.array([0, 1, -1, 0], dtype=np.int8)
    scores = np.zeros(1000)
    scores[350] = 9.0  # inside beat 1's extent [200, 400)
    scores[450] = 7.0  # beat 2 (unknown label): not counted
    idx, lab, top = beat_outcomes(samples, labels, 1000, 150, 1000, scores)
    assert idx.tolist() == [1, 3] and lab.tolist() == [1, 0]
    assert top.tolist() == [9.0, 0.0]
