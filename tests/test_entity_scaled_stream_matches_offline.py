"""With ``score.entity_scale`` in the card, the engine's published scores, cut into any batches
and chunks, equal ``stream.offline.replay``'s (the evaluation's and calibration's numbers) to
1e-5 as residuals; the pair (p, μ) travels in the entity's state; a state of the previous
layout is a counted ``version`` reset; a card without the section scores as before."""

from __future__ import annotations

import asyncio

import numpy as np
import torch
from streamkit import ecg, make_artifact, offline_forecasts
from test_batched_steps_match_offline import cut, messages_for, run_batches

from stream.artifact import load_artifact
from stream.engine import Engine, RawMessage
from stream.entity_scale import EntityScale
from stream.metrics import CollectorRegistry, Metrics
from stream.offline import replay
from stream.state import HEADER_BYTES, MemoryStateStore, StateCodec

RESIDUAL_SCALE = 0.05  # small, as a trained card's: float32 noise in scores is 20x a residual's


def streamed_scores(sink, names) -> dict[str, np.ndarray]:
    out: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for rec in sink.of("p"):
        if "period" in rec:
            for i, sc in enumerate(rec["score"]):
                out[rec["entity_id"]].append((rec["ts"] + i * rec["period"], sc))
        else:
            out[rec["entity_id"]].append((rec["ts"], rec["score"]))
    return {n: np.array([np.nan if s is None else s for _, s in sorted(v)])
            for n, v in out.items()}


def test_streamed_entity_scaled_scores_equal_offline_replay(tmp_path, bundled_data):
    torch.set_num_threads(1)
    rng = np.random.default_rng(11)
    series = {f"rec{r}@{start}": ecg(bundled_data, r, start, int(rng.integers(300, 700)))
              for r, start in (("100", 3000), ("106", 3000), ("215", 3000), ("106", 60000))}
    section = {"peak_hold_s": 0.3, "average_s": 0.5, "mu0": 0.3}  # μ moves within the test
    art_dir = make_artifact(tmp_path / "art", hidden=12, sample=np.concatenate(
        list(series.values())), residual_scale=[RESIDUAL_SCALE] * 2, entity_scale=section,
        threshold=1.5)
    art = load_artifact(art_dir)
    engine = Engine(art, warmup_steps=0, max_gap_s=0)
    msgs = messages_for(series, 1_700_000_000.0, 1 / 360, rng, chunk_p=0.5)
    store = MemoryStateStore()
    sink = run_batches(engine, store, msgs, cut(len(msgs), rng))
    got = streamed_scores(sink, series)
    flagged = 0
    for name, values in series.items():
        want = replay(art, values).scores
        _, raw = offline_forecasts(art_dir, values)
        assert len(got[name]) == len(values)
        # the scaled score is a residual / (residual_scale · exp(μ)): compare residuals
        np.testing.assert_allclose(got[name] * RESIDUAL_SCALE, want * RESIDUAL_SCALE,
                                   rtol=1e-5, atol=1e-5)
        # and it really is scaled: not the unscaled score
        assert np.nanmax(np.abs(want - raw)) > 0.1 * np.nanmax(raw)
        flagged += int(np.nansum(want > 1.5))
    assert flagged > 0
    assert len(sink.of("a")) == flagged  # flags follow the scaled score

    # the stored (p, μ) are the offline run's after the last sample
    codec = StateCodec(engine.model.state_size, 2)
    states, found = codec.decode(asyncio.run(store.load(list(series))))
    assert found.all()
    es = EntityScale.from_card(art.card)
    for k, values in enumerate(series.values()):
        _, raw = offline_forecasts(art_dir, values)
        done = es.apply(raw[None], 1 / 360)
        np.testing.assert_allclose(states["log_mu"][k], done.log_mu[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(states["peak"][k], done.peak[0], rtol=1e-4, atol=1e-4)


def test_a_previous_version_state_is_a_counted_reset_and_never_read(tmp_path, bundled_data):
    values = ecg(bundled_data, "100", 0, 20)
    art_dir = make_artifact(tmp_path / "art", sample=values,
                            entity_scale={"mu0": 0.2, "peak_hold_s": 0.3, "average_s": 10.0})
    art = load_artifact(art_dir)
    engine = Engine(art, warmup_steps=0, max_gap_s=0)
    codec = StateCodec(engine.model.state_size, 2)
    # a version-1 value: 24-byte header, no (p, μ), watermark far in the future
    old = codec.empty(1)
    old["wm_ts"] = 1e12
    old["steps"] = 999
    blob = old.tobytes()
    v1 = bytes([1]) + blob[1:24] + blob[HEADER_BYTES:]
    assert len(v1) == codec.size - 8
    store = MemoryStateStore()
    asyncio.run(store.save({"e": v1}))
    msgs = [RawMessage(f'{{"entity_id":"e","ts":{100 + i},"values":{values[i].tolist()}}}'
                       .encode(), b"e", "ev", 0, i) for i in range(20)]
    metrics = Metrics(CollectorRegistry())
    sink = run_batches(engine, store, msgs, [20], metrics)
    reg = metrics.registry
    assert reg.get_sample_value("seqstream_resets_total", {"reason": "version"}) == 1
    assert reg.get_sample_value("seqstream_resets_total", {"reason": "corrupt"}) == 0
    # treated as absent: every sample applied (not skipped by the old watermark), from zero
    scores = streamed_scores(sink, ["e"])["e"]
    np.testing.assert_allclose(scores, replay(art, values).scores, rtol=1e-5, atol=1e-5)
    states, found = codec.decode(asyncio.run(store.load(["e"])))
    assert found.all() and int(states["steps"][0]) == 20


def test_a_card_without_the_section_publishes_unscaled_scores(tmp_path, bundled_data):
    values = ecg(bundled_data, "215", 0, 80)
    art_dir = make_artifact(tmp_path / "art", sample=values)
    art = load_artifact(art_dir)
    engine = Engine(art, warmup_steps=0, max_gap_s=0)
    msgs = [RawMessage(f'{{"entity_id":"u","ts":{100 + i},"values":{values[i].tolist()}}}'
                       .encode(), b"u", "ev", 0, i) for i in range(80)]
    store = MemoryStateStore()
    sink = run_batches(engine, store, msgs, [30, 50])
    _, raw = offline_forecasts(art_dir, values)
    np.testing.assert_allclose(streamed_scores(sink, ["u"])["u"], raw, rtol=1e-4, atol=1e-5)
    states, _ = StateCodec(engine.model.state_size, 2).decode(
        asyncio.run(store.load(["u"])))
    assert states["peak"][0] == 0.0 and states["log_mu"][0] == 0.0
