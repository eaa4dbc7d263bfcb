"""The model card is read and checked once, where the Artifact is made: the engine and the
offline replay take its typed fields, so a card one of them refuses the other cannot accept."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from stream.artifact import Artifact
from stream.engine import Engine
from stream.errors import ArtifactError
from stream.model import Forecaster
from stream.offline import replay
from stream.sensor_score import SensorScore

CARD = {"score": {"kind": "rms_z", "residual_scale": [0.5, 2.0]}, "threshold": {"value": 3.0},
        "period_s": 0.25, "version": "9.9"}


def _artifact(card: dict) -> Artifact:
    torch.manual_seed(0)
    return Artifact(Forecaster("gru", 2, 4).eval(), card, "m" * 64,
                    np.zeros(2, np.float32), np.ones(2, np.float32))


def test_the_card_becomes_typed_fields() -> None:
    art = _artifact(CARD)
    np.testing.assert_array_equal(art.residual_scale, [0.5, 2.0])
    assert (art.score_kind, art.period_s, art.threshold, art.version) == ("rms_z", 0.25, 3.0,
                                                                          "9.9")
    assert art.entity_scale is None and art.sensor is None and art.flag_threshold == 3.0
    sensor = {"warmup": 5, "half_lives": [1.0], "adapt_half_life": 10.0, "margin": 1.5}
    art = _artifact({**CARD, "score": {**CARD["score"], "sensor": sensor}})
    assert art.sensor == SensorScore.from_card({"score": {"sensor": sensor}})
    assert art.flag_threshold == 1.5  # a sensor score is flagged against its own margin
    assert Engine(art).threshold == 1.5


@pytest.mark.parametrize(("change", "says"), [
    ({"score": {"kind": "mahalanobis", "residual_scale": [0.5, 2.0]}}, "expected kind 'rms_z'"),
    ({"score": {"residual_scale": [0.5, 2.0]}}, "expected kind 'rms_z', got None"),
    ({"score": {"kind": "rms_z", "residual_scale": [0.5]}}, "expected 2 positive numbers"),
    ({"score": {"kind": "rms_z", "residual_scale": [0.5, 0.0]}}, "expected 2 positive numbers"),
    ({"threshold": {"value": float("nan")}}, "threshold.value: expected a finite number"),
    ({"score": {"kind": "rms_z", "residual_scale": [1, 1], "entity_scale": {"mu0": 0.0},
                "sensor": {"warmup": 5, "half_lives": [1], "adapt_half_life": 1,
                           "margin": 1}}}, "expected entity_scale or sensor, got both"),
    ({"period_s": None, "score": {"kind": "rms_z", "residual_scale": [1, 1],
                                  "entity_scale": {"mu0": 0.0}}}, "per-entity scale decays"),
])
def test_a_bad_card_is_refused_for_the_engine_and_the_replay_alike(change: dict,
                                                                   says: str) -> None:
    good = _artifact(CARD)
    with pytest.raises(ArtifactError, match=says):
        dataclasses.replace(good, card={**CARD, **change})
    # the same artifact serves both: neither can be handed a card the other refused
    Engine(good)
    assert replay(good, np.zeros((3, 2))).forecasts.shape == (3, 1, 2)


def test_the_engine_needs_a_threshold_the_offline_replay_does_not() -> None:
    probe = _artifact({"score": CARD["score"]})  # training's calibration probe has none
    assert probe.threshold is None and probe.period_s == 0.0
    assert replay(probe, np.ones((4, 2))).scores.shape == (4,)
    with pytest.raises(ArtifactError, match="threshold: expected"):
        Engine(probe)
