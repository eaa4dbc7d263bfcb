"""``stream.offline.replay`` gives what a worker stepping sample by sample would give.

Evaluation, calibration and the streamed-vs-offline checks all lean on this: one forward over a
whole record must equal stepping it, forecast for forecast and score for score.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from stream.artifact import load_artifact, save_artifact
from stream.errors import ArtifactError
from stream.model import Forecaster
from stream.offline import replay, replay_many
from stream.scoring import score
from training.sources import load_wfdb

TOL = 1e-5


@pytest.fixture(scope="module")
def ecg(bundled_data: Path) -> np.ndarray:
    """Two real leads of MIT-BIH record 100 (first 3,000 samples, 8.3 s)."""
    return load_wfdb(bundled_data / "mitdb", records=["100"])[0].values[:3000]


def _artifact(tmp_path: Path, cell: str, values: np.ndarray, horizon: int = 2):
    torch.manual_seed(5)
    net = Forecaster(cell, n_features=values.shape[1], hidden_size=8, num_layers=2,
                     horizon=horizon)
    card = {"features": [{"name": f"lead{i}", "unit": "mV"} for i in range(values.shape[1])],
            "scaler": {"mean": values.mean(0).tolist(), "std": values.std(0).tolist()},
            "period_s": 1 / 360,
            "score": {"kind": "rms_z", "residual_scale": [0.1] * values.shape[1]},
            "threshold": {"value": 5.0, "method": "quantile"}, "data": {}, "metrics": {},
            "version": "test"}
    save_artifact(net, card, tmp_path / cell)
    return load_artifact(tmp_path / cell)


def _stepped(art, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the worker does: scale, step, score against the previous 1-step forecast."""
    rs = np.asarray(art.card["score"]["residual_scale"])
    state, previous = None, None
    forecasts, scores = [], []
    with torch.no_grad():
        for x in values:
            z = art.scale(x[None, :])
            y, state = art.model.step(torch.from_numpy(z), state)
            y = y.numpy()[0]
            scores.append(np.nan if previous is None else
                          float(score(z[0].astype(np.float64) - previous[0], rs)))
            previous = y.astype(np.float64)
            forecasts.append(art.unscale(y.astype(np.float64)))
    return np.array(forecasts), np.array(scores)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_replay_equals_stepping_sample_by_sample(tmp_path, ecg, cell) -> None:
    art = _artifact(tmp_path, cell, ecg)
    out = replay(art, ecg, chunk=700)  # chunk edges inside the record, state carried over
    fc, sc = _stepped(art, ecg)
    assert out.forecasts.shape == fc.shape == (len(ecg), 2, 2)
    assert np.isnan(out.scores[0]) and np.isnan(sc[0])
    assert np.max(np.abs(out.forecasts - fc)) <= TOL
    assert np.max(np.abs(out.scores[1:] - sc[1:])) <= TOL * max(1.0, float(np.max(sc[1:])))


def test_chunking_does_not_change_results(tmp_path, ecg) -> None:
    art = _artifact(tmp_path, "gru", ecg)
    whole = replay(art, ecg, chunk=len(ecg))
    pieces = replay(art, ecg, chunk=333)
    assert np.max(np.abs(whole.forecasts - pieces.forecasts)) <= TOL
    assert np.nanmax(np.abs(whole.scores - pieces.scores)) <= TOL


def test_batched_entities_of_different_lengths_equal_one_at_a_time(tmp_path, ecg) -> None:
    art = _artifact(tmp_path, "lstm", ecg)
    series = [ecg[:3000], ecg[500:1700], ecg[2000:2100]]
    together = replay_many(art, series, chunk=1000)
    for got, values in zip(together, series, strict=True):
        alone = replay(art, values)
        assert got.forecasts.shape == alone.forecasts.shape
        assert np.max(np.abs(got.forecasts - alone.forecasts)) <= TOL
        assert np.nanmax(np.abs(got.scores - alone.scores)) <= TOL


def test_bad_inputs_are_refused_with_what_was_expected(tmp_path, ecg) -> None:
    art = _artifact(tmp_path, "gru", ecg)
    with pytest.raises(ValueError, match=r"expected finite values \[time, 2\]"):
        replay(art, ecg[:, :1])
    broken = ecg.copy()
    broken[10, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        replay(art, broken)
    # the card is checked once, where the artifact is made: a wrong scale never reaches replay
    card = {**art.card, "score": {**art.card["score"], "residual_scale": [0.1]}}
    with pytest.raises(ArtifactError, match="residual_scale"):
        dataclasses.replace(art, card=card)
