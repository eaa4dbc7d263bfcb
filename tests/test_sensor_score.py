"""The sensor score (stream.sensor_score): streamed event by event with each entity's state kept
in the real Redis between events, it equals the offline replay to 1e-5; and its warm-up, alarm
and state rules on small cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis

from stream.sensor_score import SensorScore
from training.sources import SKAB_FEATURES


def real_series(shared_data) -> dict[str, np.ndarray]:
    """Two SKAB experiments (8 sensors), whole."""
    out = {}
    for name in ("valve1/3.csv", "other/12.csv"):
        frame = pd.read_csv(shared_data / "skab" / "data" / name, sep=";")
        out[name] = frame[[f for f, _ in SKAB_FEATURES]].to_numpy(np.float64)
    return out


@pytest.mark.integration
def test_streamed_through_redis_equals_the_offline_replay(shared_data, settings, unique) -> None:
    series = real_series(shared_data)
    cfg = SensorScore(warmup=400, adapt_half_life=120.0)
    offline = dict(zip(series, cfg.run_many(list(series.values())), strict=True))
    client = redis.Redis.from_url(settings.redis_url)
    rng = np.random.default_rng(0)
    got = {name: ([], [], []) for name in series}
    pos = dict.fromkeys(series, 0)
    try:
        while any(pos[n] < len(v) for n, v in series.items()):
            for name, values in series.items():  # entities' events interleave
                if pos[name] >= len(values):
                    continue
                chunk = values[pos[name]:pos[name] + int(rng.integers(1, 40))]
                key = f"{unique}:{name}"
                blob = client.get(key)
                state = (cfg.empty(1, values.shape[1]) if blob is None
                         else np.frombuffer(blob, dtype=np.float64).reshape(1, -1).copy())
                for row in chunk:
                    s, f, o = cfg.step(state, row[None, :])
                    got[name][0].append(s[0])
                    got[name][1].append(f[0])
                    got[name][2].append(o[0])
                client.set(key, state.tobytes())
                pos[name] += len(chunk)
    finally:
        client.delete(*[f"{unique}:{n}" for n in series])
    for name, run in offline.items():
        scores, flags, onsets = (np.array(x) for x in got[name])
        np.testing.assert_allclose(scores, run.scores, rtol=0, atol=1e-5, equal_nan=True)
        assert np.array_equal(flags, run.flags) and np.array_equal(onsets, run.onsets)
    assert any(run.flags.any() for run in offline.values()), "expected some flags to compare"


def test_no_flag_and_no_score_inside_the_warm_up() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    x[50:60] += 50.0  # a huge fault inside the warm-up
    run = SensorScore(warmup=100).run(x)
    assert np.isnan(run.scores[:100]).all()
    assert not run.flags[:100].any()
    assert np.isfinite(run.scores[100:]).all()


def test_a_sustained_shift_is_one_alarm_flagged_while_it_lasts() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 2))
    x[400:500] += 4.0
    run = SensorScore(warmup=200, adapt_half_life=1e6).run(x)
    assert run.flags[400:500].mean() > 0.95
    starts = np.flatnonzero(run.onsets)
    assert 400 in starts or any(400 <= s < 410 for s in starts)
    assert len([s for s in starts if 400 <= s < 500]) == 1


def test_each_entity_learns_its_own_level_and_scale() -> None:
    # the same pattern at two levels and scales 1e6 apart flags the same rows
    rng = np.random.default_rng(3)
    base = rng.normal(size=(500, 1))
    base[350:400] += 5.0
    low, high = SensorScore(warmup=200).run_many([base, 1e6 + 1e3 * base])
    assert np.array_equal(low.flags, high.flags)
    np.testing.assert_allclose(low.scores, high.scores, rtol=1e-6)


def test_bad_settings_and_state_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="warmup"):
        SensorScore(warmup=2)
    with pytest.raises(ValueError, match="half-lives"):
        SensorScore(warmup=10, half_lives=(0.0,))
    cfg = SensorScore(warmup=10)
    with pytest.raises(ValueError, match="state: expected shape"):
        cfg.step(cfg.empty(1, 3), np.zeros((1, 2)))


def test_batched_rows_of_any_size_equal_the_whole_series(shared_data) -> None:
    # the engine's call: each batch gives every entity a row of its next samples (any length,
    # some entities none), states carried between batches
    series = list(real_series(shared_data).values())
    cfg = SensorScore(warmup=400, adapt_half_life=120.0)
    whole = cfg.run_many(series)
    state = cfg.empty(len(series), series[0].shape[1])
    rng = np.random.default_rng(4)
    pos = [0] * len(series)
    got: list[list[np.ndarray]] = [[] for _ in series]
    while any(p < len(v) for p, v in zip(pos, series, strict=True)):
        take = [int(rng.integers(0, 90)) for _ in series]
        rows = [v[p:p + k] for v, p, k in zip(series, pos, take, strict=True)]
        for i, run in enumerate(cfg.run_rows(state, rows)):
            got[i].append(run.scores)
            pos[i] += len(rows[i])
    for i, run in enumerate(whole):
        np.testing.assert_allclose(np.concatenate(got[i]), run.scores, rtol=0, atol=1e-12,
                                   equal_nan=True)
        np.testing.assert_array_equal(state[i], run.state)
