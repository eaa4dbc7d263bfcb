"""With ``score.sensor`` in the card, the engine publishes the sensor score (stream.sensor_score)
and its flags; cut into any batches, singles and chunks, they equal ``stream.offline.replay``'s to
1e-5, and each entity's sensor vector travels in its state (with the MEWMA averages and the
correlation matrix too, when the card turns them on)."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest
import torch
from streamkit import make_artifact
from test_batched_steps_match_offline import cut, messages_for, run_batches
from test_entity_scaled_stream_matches_offline import streamed_scores

from stream.artifact import load_artifact
from stream.engine import Engine
from stream.offline import replay
from stream.sensor_score import SensorScore
from stream.state import MemoryStateStore
from training.sources import SKAB_FEATURES

FILES = ("valve1/3.csv", "other/12.csv", "valve1/0.csv")  # two faults flagged, one not
SENSOR = {"warmup": 400, "half_lives": [4.0, 32.0], "adapt_half_life": 120.0, "margin": 4 / 3}
SENSORS = {"plain": SENSOR,
           "mewma-corr-flagged": {**SENSOR, "mean_shift": True, "shrinkage": 0.25,
                                  "flagged_adapt_half_life": 240.0}}


@pytest.mark.parametrize("sensor", SENSORS.values(), ids=SENSORS.keys())
def test_streamed_sensor_scores_and_flags_equal_offline_replay(tmp_path, shared_data, sensor):
    torch.set_num_threads(1)
    rng = np.random.default_rng(5)
    series = {}
    for name in FILES:
        frame = pd.read_csv(shared_data / "skab" / "data" / name, sep=";")
        series[name.replace("/", "-")] = frame[[f for f, _ in SKAB_FEATURES]].to_numpy()
    art_dir = make_artifact(tmp_path / "art", hidden=8, n_features=8, period_s=1.0,
                            sample=np.concatenate(list(series.values())), sensor=sensor)
    art = load_artifact(art_dir)
    engine = Engine(art, warmup_steps=0, max_gap_s=0)
    msgs = messages_for(series, 1_700_000_000.0, 1.0, rng, chunk_p=0.5)
    store = MemoryStateStore()
    sink = run_batches(engine, store, msgs, cut(len(msgs), rng))
    got = streamed_scores(sink, series)
    flagged = 0
    for name, values in series.items():
        want = replay(art, values).scores
        assert len(got[name]) == len(values)
        assert np.isnan(want[:400]).all() and np.isnan(got[name][:400]).all()
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-5, equal_nan=True)
        flagged += int(np.nansum(want > sensor["margin"]))
    assert flagged > 100
    assert len(sink.of("a")) == flagged  # the anomalies topic: exactly the flagged samples
    assert {rec["threshold"] for rec in sink.of("p")} == {sensor["margin"]}

    # each entity's stored sensor vector is the offline run's after its last sample
    states, found = engine.codec.decode(asyncio.run(store.load(list(series))))
    assert found.all()
    cfg = SensorScore.from_card(art.card)
    runs = cfg.run_many([art.scale(v) for v in series.values()])
    for k, run in enumerate(runs):
        np.testing.assert_allclose(states["sensor"][k], run.state, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("sensor", SENSORS.values(), ids=SENSORS.keys())
def test_a_gap_restarts_the_sensor_score_with_the_rest_of_the_state(tmp_path, shared_data,
                                                                     sensor):
    torch.set_num_threads(1)
    rng = np.random.default_rng(6)
    frames = [pd.read_csv(shared_data / "skab" / "data" / n, sep=";") for n in FILES[:2]]
    first, second = (f[[c for c, _ in SKAB_FEATURES]].to_numpy()[:700] for f in frames)
    art_dir = make_artifact(tmp_path / "art", hidden=8, n_features=8, period_s=1.0,
                            sample=np.concatenate([first, second]), sensor=sensor)
    art = load_artifact(art_dir)
    engine = Engine(art, warmup_steps=0, max_gap_s=60.0)
    t0 = 1_700_000_000.0
    msgs = (messages_for({"pump": first}, t0, 1.0, rng, chunk_p=0.5)
            + messages_for({"pump": second}, t0 + 700 + 3600, 1.0, rng, chunk_p=0.5))
    msgs = [m._replace(offset=i) for i, m in enumerate(msgs)]
    sink = run_batches(engine, MemoryStateStore(), msgs, cut(len(msgs), rng))
    got = streamed_scores(sink, ["pump"])["pump"]
    # after the hour's gap the entity starts afresh: its own warm-up again, then the scores of
    # the second stretch streamed alone
    np.testing.assert_allclose(got[:700], replay(art, first).scores, rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    np.testing.assert_allclose(got[700:], replay(art, second).scores, rtol=1e-5, atol=1e-5,
                               equal_nan=True)
    assert np.isnan(got[700:1100]).all()
