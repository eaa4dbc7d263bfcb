"""The beat stage streamed in any chunks gives what one offline pass gives, and travels in the
artifact.

The worker feeds each entity's ECG to :class:`stream.beats.BeatStage` in whatever chunks arrive,
batched with other entities; evaluation and training run whole records at once. Both must yield
the same beats (positions, RR, decision sample exactly), the same classes and flags, and the same
``p_abnormal`` to 1e-5, or the published beats would depend on network timing.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from stream.artifact import load_artifact, save_artifact
from stream.beatnet import BeatNet
from stream.beats import FEATURES, BeatFeatures, BeatStage, offline_beats, without_sveb
from stream.errors import ArtifactError
from stream.model import Forecaster
from training.sources import BUNDLED_MITDB, load_wfdb

SECONDS = 240


@pytest.fixture(scope="module")
def leads() -> list[np.ndarray]:
    """Four real minutes of MLII from each bundled record (100 normal, 106 and 215 with VEBs)."""
    series = load_wfdb(BUNDLED_MITDB, ["100", "106", "215"], ["MLII"])
    return [s.values[:SECONDS * 360, 0] for s in series]


def _stage(leads: list[np.ndarray]) -> BeatStage:
    """An untrained but seeded network, normalised on these leads, with a threshold at the
    median ``p_abnormal`` so that both flags and non-flags occur."""
    torch.manual_seed(7)
    feats = BeatFeatures(360.0)
    rows = np.concatenate([np.stack([b.features for b in feats.extract(feats.initial(1), [x])[0]])
                           for x in leads])
    net = BeatNet(len(FEATURES), hidden_size=8, embed_size=8)
    stage = BeatStage(feats, net, rows.mean(0), np.maximum(rows.std(0), 1e-6), 0.5)
    ps = [b.p_abnormal for x in leads for b in offline_beats(stage, x)]
    stage.threshold = float(np.median(ps))
    return stage


def test_streamed_in_random_chunks_equals_offline(leads) -> None:
    stage = _stage(leads)
    offline = [offline_beats(stage, x) for x in leads]
    assert all(len(o) > 200 for o in offline)
    assert {b.anomaly for o in offline for b in o} == {True, False}
    rng = np.random.default_rng(11)
    states = stage.initial(len(leads))
    pos = [0] * len(leads)
    streamed: list[list] = [[] for _ in leads]
    while any(p < len(x) for p, x in zip(pos, leads, strict=True)):
        chunks = []
        for i, x in enumerate(leads):
            k = int(rng.choice([0, 1, 7, 36, 360, 1999, 5000]))
            chunks.append(x[pos[i]:pos[i] + k])
            pos[i] += len(chunks[-1])
        res = [np.full(len(c), np.nan) for c in chunks]
        for i, beats in enumerate(stage.process(states, chunks, res)):
            streamed[i].extend(beats)
    for off, got in zip(offline, streamed, strict=True):
        assert [(b.sample, b.rr_s, b.decided, b.cls, b.anomaly) for b in got] == \
            [(b.sample, b.rr_s, b.decided, b.cls, b.anomaly) for b in off]
        diff = np.abs(np.array([b.p_abnormal for b in got]) - [b.p_abnormal for b in off])
        assert diff.max() <= 1e-5


def test_where_the_rhythm_rule_holds_the_stage_takes_the_s_part_out(leads) -> None:
    stage = _stage(leads)
    feats = stage.features
    decided = feats.extract(feats.initial(1), [leads[1]])[0]
    irregular = np.array([d.irregular for d in decided])
    assert 0 < irregular.sum() < len(decided)  # record 106's bigeminy, for part of 4 minutes
    x = stage.normalise(np.stack([d.features for d in decided]))
    with torch.no_grad():
        logits, abn, _ = stage.net(torch.from_numpy(x)[None])
    p, g = torch.sigmoid(abn[0]).numpy().astype(np.float64), logits[0].numpy()
    want, _ = without_sveb(p, g, irregular)
    beats = offline_beats(stage, leads[1])
    assert [b.sample for b in beats] == [d.sample for d in decided]
    np.testing.assert_allclose([b.p_abnormal for b in beats], want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(want[~irregular], p[~irregular], rtol=0, atol=0)
    assert np.all(want[irregular] < p[irregular])
    assert not any(b.cls == "S" for b, irr in zip(beats, irregular, strict=True) if irr)


def test_a_beat_is_decided_after_its_successor_or_the_cap(leads) -> None:
    stage = _stage(leads)
    g = stage.features.geo
    beats = offline_beats(stage, leads[1])
    for b, nxt in itertools.pairwise(beats):
        if nxt.sample - b.sample <= g.cap:
            assert b.decided == max(nxt.sample + g.delay, b.sample + g.half)
        else:
            assert b.decided == b.sample + g.cap + g.delay
        assert nxt.rr_s == pytest.approx((nxt.sample - b.sample) / 360.0)


def test_batched_step_equals_the_full_sequence() -> None:
    torch.manual_seed(1)
    for cell in ("gru", "lstm"):
        net = BeatNet(5, hidden_size=6, cell=cell).eval()
        seq = torch.randn(3, 40, 5)
        with torch.no_grad():
            logits, p, _ = net(seq)
            state = net.initial_state(3)
            for t in range(40):
                lt, pt, state = net(seq[:, t:t + 1], net.unpack_state(net.pack_state(state)))
                assert torch.allclose(lt[:, 0], logits[:, t], atol=1e-5)
                assert torch.allclose(pt[:, 0], p[:, t], atol=1e-5)


def _card() -> dict:
    return {"features": [{"name": "MLII", "unit": "mV"}], "scaler": {"mean": [0.0], "std": [1.0]},
            "period_s": 1 / 360, "score": {"kind": "rms_z", "residual_scale": [0.05]},
            "threshold": {"value": 4.0}, "data": {}, "metrics": {}, "version": "test"}


def test_artifact_round_trip_with_and_without_beats(tmp_path, leads) -> None:
    stage = _stage(leads)
    net = Forecaster("gru", 1, 4).eval()
    save_artifact(net, {**_card(), "beats": {"lead": "MLII", "data": {"train": ["x"]}}},
                  tmp_path / "with", beats=stage)
    art = load_artifact(tmp_path / "with")
    assert art.beats is not None and art.beats.lead == 0 and art.beats.fs == 360.0
    assert art.card["beats"]["data"] == {"train": ["x"]}
    assert art.beats.threshold == stage.threshold
    x = leads[2]
    assert offline_beats(art.beats, x) == offline_beats(stage, x)
    save_artifact(net, _card(), tmp_path / "without")
    assert load_artifact(tmp_path / "without").beats is None
    with pytest.raises(ArtifactError, match=r"beats\.lead"):
        save_artifact(net, {**_card(), "beats": {}}, tmp_path / "bad", beats=stage)


def test_the_shipped_ecg_model_has_a_beat_stage_trained_on_ds1_only(leads) -> None:
    from stream.artifact import DEFAULT_ECG
    from training.beats import DS1, DS2

    art = load_artifact(DEFAULT_ECG)
    assert art.beats is not None and art.beats.fs == 360.0 and art.beats.lead == 0
    data = art.card["beats"]["data"]
    assert set(data["train_records"]) | set(data["val_records"]) <= set(DS1)
    assert not set(art.card["data"]["entities"]) & set(DS2)
    beats = offline_beats(art.beats, leads[1])  # bundled 106: DS1, VEBs in its first minutes
    assert {b.cls for b in beats} <= {"N", "S", "V", "F"} and any(b.anomaly for b in beats)
