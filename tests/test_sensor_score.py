"""The sensor score (stream.sensor_score): streamed event by event with each entity's state kept
in the real Redis between events, it equals the offline replay to 1e-5 (with and without the
MEWMA, correlation and flagged-adaptation options and their state); and its warm-up, alarm,
option and state rules on small cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import redis

from stream.sensor_score import SensorScore
from training.sources import SKAB_FEATURES

# every option on: the MEWMA averages and the correlation matrix in the state
OPTIONS = {"plain": {}, "mewma-corr-flagged": {"mean_shift": True, "shrinkage": 0.25,
                                                "flagged_adapt_half_life": 240.0}}


def real_series(shared_data) -> dict[str, np.ndarray]:
    """Two SKAB experiments (8 sensors), whole."""
    out = {}
    for name in ("valve1/3.csv", "other/12.csv"):
        frame = pd.read_csv(shared_data / "skab" / "data" / name, sep=";")
        out[name] = frame[[f for f, _ in SKAB_FEATURES]].to_numpy(np.float64)
    return out


@pytest.mark.integration
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_streamed_through_redis_equals_the_offline_replay(shared_data, settings, unique,
                                                          options) -> None:
    series = real_series(shared_data)
    cfg = SensorScore(warmup=400, adapt_half_life=120.0, **options)
    offline = dict(zip(series, cfg.run_many(list(series.values())), strict=True))
    client = redis.Redis.from_url(settings.redis_url)
    rng = np.random.default_rng(0)
    got = {name: ([], [], [], []) for name in series}
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
                    for out, v in zip(got[name], cfg.step(state, row[None, :]), strict=True):
                        out.append(v[0])
                client.set(key, state.tobytes())
                pos[name] += len(chunk)
    finally:
        client.delete(*[f"{unique}:{n}" for n in series])
    for name, run in offline.items():
        scores, flags, onsets, alarms = (np.array(x) for x in got[name])
        np.testing.assert_allclose(scores, run.scores, rtol=0, atol=1e-5, equal_nan=True)
        assert np.array_equal(flags, run.flags) and np.array_equal(onsets, run.onsets)
        assert np.array_equal(alarms, run.alarms)
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
    with pytest.raises(ValueError, match="shrinkage"):
        SensorScore(warmup=10, shrinkage=0.0)
    with pytest.raises(ValueError, match="half-lives"):
        SensorScore(warmup=10, flagged_adapt_half_life=0.0)
    cfg = SensorScore(warmup=10)
    with pytest.raises(ValueError, match="state: expected shape"):
        cfg.step(cfg.empty(1, 3), np.zeros((1, 2)))


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_batched_rows_of_any_size_equal_the_whole_series(shared_data, options) -> None:
    # the engine's call: each batch gives every entity a row of its next samples (any length,
    # some entities none), states carried between batches
    series = list(real_series(shared_data).values())
    cfg = SensorScore(warmup=400, adapt_half_life=120.0, **options)
    whole = cfg.run_many(series)
    state = cfg.empty(len(series), series[0].shape[1])
    rng = np.random.default_rng(4)
    pos = [0] * len(series)
    got: list[list[np.ndarray]] = [[] for _ in series]
    alarms: list[list[np.ndarray]] = [[] for _ in series]
    while any(p < len(v) for p, v in zip(pos, series, strict=True)):
        take = [int(rng.integers(0, 90)) for _ in series]
        rows = [v[p:p + k] for v, p, k in zip(series, pos, take, strict=True)]
        for i, run in enumerate(cfg.run_rows(state, rows)):
            got[i].append(run.scores)
            alarms[i].append(run.alarms)
            pos[i] += len(rows[i])
    for i, run in enumerate(whole):
        np.testing.assert_allclose(np.concatenate(got[i]), run.scores, rtol=0, atol=1e-12,
                                   equal_nan=True)
        np.testing.assert_array_equal(np.concatenate(alarms[i]), run.alarms)
        np.testing.assert_array_equal(state[i], run.state)
    assert any(run.alarms.any() for run in whole), "expected some alarms to compare"


def test_alarms_are_the_flags_held_for_hold_samples(shared_data) -> None:
    # a sample is in an alarm when a flag fell in the last ``hold`` samples: the flags alone
    # decide it, so a consumer of the worker's flags gets the same alarms
    cfg = SensorScore(warmup=400, mean_shift=True, shrinkage=0.25)
    runs = cfg.run_many(list(real_series(shared_data).values()))
    for run in runs:
        recent = np.convolve(run.flags, np.ones(int(cfg.hold)), mode="full")[:len(run.flags)]
        np.testing.assert_array_equal(run.alarms, recent > 0)
        assert np.array_equal(run.onsets, run.alarms & ~np.r_[False, run.alarms[:-1]])
    assert sum(int((r.alarms & ~r.flags).sum()) for r in runs) > 0


def test_the_mean_shift_statistic_sees_a_small_shift_in_one_of_eight_sensors() -> None:
    # one scale in one of 8 sensors adds 1/8 to the mean of z²: lost in its noise, while the
    # MEWMA's average of z moves by a whole scale against its averaged noise
    rng = np.random.default_rng(7)
    x = rng.normal(size=(1200, 8))
    x[600:1000, 3] += 1.0
    plain = SensorScore(warmup=400).run(x)
    mewma = SensorScore(warmup=400, mean_shift=True).run(x)
    assert plain.flags[600:1000].mean() < 0.1
    assert mewma.flags[650:1000].mean() > 0.9
    assert mewma.flags[400:600].mean() < 0.05


def test_the_correlation_sees_two_sensors_that_stop_moving_together() -> None:
    # each sensor keeps its level and spread; only their bond breaks
    rng = np.random.default_rng(8)
    common = rng.normal(size=1200)
    x = np.c_[common + 0.1 * rng.normal(size=1200), common + 0.1 * rng.normal(size=1200)]
    x[700:900, 1] = rng.normal(size=200)
    independent = SensorScore(warmup=400).run(x)
    shrunk = SensorScore(warmup=400, shrinkage=0.25).run(x)
    assert independent.flags[700:900].mean() < 0.2
    assert shrunk.flags[710:900].mean() > 0.8 and shrunk.alarms[710:900].mean() > 0.95
    assert shrunk.flags[400:700].mean() < 0.05


def test_the_learnt_matrix_is_the_inverse_of_the_shrunk_correlation() -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=(300, 3)) @ np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 2.0]])
    cfg = SensorScore(warmup=200, shrinkage=0.25)
    state = cfg.empty(1, 3)
    cfg.run_rows(state, [x[:100]])  # exactly the learning
    want = np.linalg.inv(0.75 * np.corrcoef(x[:100].T) + 0.25 * np.eye(3))
    np.testing.assert_allclose(state[0, -9:].reshape(3, 3), want, rtol=1e-10)


def test_flagged_adaptation_ends_a_flag_that_a_lasting_shift_would_hold_for_ever() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2000, 2))
    x[600:] += 3.0
    frozen = SensorScore(warmup=400).run(x)
    follows = SensorScore(warmup=400, flagged_adapt_half_life=60.0).run(x)
    assert frozen.flags[1500:].all()
    assert follows.flags[600:620].all() and not follows.flags[700:].any()


def test_the_mean_shift_flag_ends_soon_after_the_shift() -> None:
    # held while the shortest average of z is at least halfway to the longest, not until the
    # longest has decayed (half-life 32): the shift's run of flags ends within 20 samples,
    # as the default score's does
    for seed in range(11, 16):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(1200, 8))
        x[600:800] += 2.0
        run = SensorScore(warmup=400, mean_shift=True).run(x)
        assert run.flags[600:800].mean() > 0.95
        plain = SensorScore(warmup=400).run(x)
        assert not run.flags[800:820].all()
        assert np.argmin(run.flags[800:]) == np.argmin(plain.flags[800:])


def test_the_card_carries_every_setting_and_older_cards_read_as_before() -> None:
    cfg = SensorScore(warmup=400, mean_shift=True, shrinkage=0.25, flagged_adapt_half_life=240.0)
    assert SensorScore.from_card({"score": {"sensor": cfg.card()}}) == cfg
    old = {"warmup": 400, "half_lives": [4.0, 32.0], "adapt_half_life": 120.0, "margin": 4 / 3}
    assert SensorScore.from_card({"score": {"sensor": old}}) == SensorScore(warmup=400)
    assert SensorScore(warmup=400).layout(8) == 2 + 2 * 2 + 2 * 8  # the layout older states have
