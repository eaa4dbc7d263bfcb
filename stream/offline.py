"""Run an artifact over whole recorded series with the worker's semantics, without Kafka.

The worker, for each entity, steps the network once per sample and scores each new sample
against the 1-step forecast it made at the previous sample. Because the network is causal, the
same numbers come from one ``forward`` over the whole series (``stream.model`` tests that stepping
equals ``forward``), which is thousands of times faster: this is what offline evaluation and
calibration use, and what a streamed run is checked against::

    forecasts[t]  = unscale(net(x_0..x_t)[t])          # [H, F], for samples t+1 .. t+H
    scores[t]     = score(scale(x_t) - net(x_0..x_{t-1})[t-1, 0], residual_scale)
    scores[0]     = NaN                                 # no forecast precedes the first sample

With a ``score.entity_scale`` section in the card the scores are divided by each entity's
running typical peak (:mod:`stream.entity_scale`, from ``0``, ``μ_0`` at the first sample), as
the worker publishes them; with a ``score.sensor`` section they are the sensor score over the
scaled samples (:mod:`stream.sensor_score`, a fresh entity at the first sample), as the worker
publishes it; ``entity_scale=False`` gives the 1-step residual scores themselves.

For an artifact with a beat model, :func:`replay_beats` gives the beat records the worker
publishes for a series: the beat stage over the whole lead in ONE call from its initial state,
fed the replay's published scores, each beat timed from its deciding sample as the worker does
(:func:`stream.records.beat_record`).

Series are processed in time chunks with the recurrent state carried across, so memory stays
bounded on 30-minute, 360 Hz records; several entities are batched by padding the shorter ones at
their end, which causality makes harmless to their real samples.

>>> import numpy as np, torch
>>> from stream.model import Forecaster
>>> from stream.artifact import Artifact
>>> torch.manual_seed(0) and None
>>> net = Forecaster("gru", 1, 4).eval()
>>> card = {"score": {"kind": "rms_z", "residual_scale": [0.5]}}
>>> art = Artifact(net, card, "id", np.zeros(1, np.float32), np.ones(1, np.float32))
>>> out = replay(art, np.sin(np.arange(6.0))[:, None])
>>> out.forecasts.shape, bool(np.isnan(out.scores[0])), bool(np.all(out.scores[1:] >= 0))
((6, 1, 1), True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from stream.beats import offline_beats
from stream.records import beat_record
from stream.scoring import score

if TYPE_CHECKING:
    from collections.abc import Sequence

    from stream.artifact import Artifact

__all__ = ["Replay", "replay", "replay_beats", "replay_many"]

CHUNK = 32_768


@dataclass(frozen=True)
class Replay:
    """Per-sample results of one series: forecasts in user units and anomaly scores."""

    forecasts: np.ndarray  # [T, H, F] float64, made after sample t for t+1 .. t+H
    scores: np.ndarray  # [T] float64, NaN at t = 0
    residuals: np.ndarray  # [T, F] scaled units, x_t - 1-step forecast of x_t (NaN at t = 0)


def replay(artifact: Artifact, values: np.ndarray, chunk: int = CHUNK,
           entity_scale: bool = True) -> Replay:
    """Forecasts and scores for one series ``values`` ``[T, F]`` in user units."""
    return replay_many(artifact, [values], chunk, entity_scale)[0]


def replay_many(artifact: Artifact, series: Sequence[np.ndarray], chunk: int = CHUNK,
                entity_scale: bool = True) -> list[Replay]:
    """:func:`replay` for several entities at once (one batched network call per chunk);
    ``entity_scale=False`` leaves out the card's per-entity scaling and sensor score (the
    1-step residual scores themselves)."""
    f = artifact.n_features
    arrays = [np.asarray(v, dtype=np.float64) for v in series]
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape[1] != f or a.shape[0] < 1 or not np.all(np.isfinite(a)):
            raise ValueError(f"series {i}: expected finite values [time, {f}], got shape "
                             f"{list(a.shape)}")
    if not arrays:
        return []
    rs = artifact.residual_scale
    longest = max(len(a) for a in arrays)
    scaled = np.zeros((len(arrays), longest, f), dtype=np.float32)
    for i, a in enumerate(arrays):
        scaled[i, :len(a)] = artifact.scale(a)
    net = artifact.model
    out = np.empty((len(arrays), longest, net.horizon, f), dtype=np.float32)
    state = None
    with torch.no_grad():
        for lo in range(0, longest, chunk):
            y, state = net(torch.from_numpy(scaled[:, lo:lo + chunk]), state)
            out[:, lo:lo + chunk] = y.numpy()
    all_residuals, all_scores = [], np.full((len(arrays), longest), np.nan)
    for i, a in enumerate(arrays):
        n = len(a)
        residuals = np.full((n, f), np.nan)
        residuals[1:] = scaled[i, 1:n].astype(np.float64) - out[i, :n - 1, 0].astype(np.float64)
        all_scores[i, 1:n] = score(residuals[1:], rs)
        all_residuals.append(residuals)
    es = artifact.entity_scale if entity_scale else None
    if es is not None:
        peak, log_mu = None, None
        for lo in range(0, longest, chunk):
            done = es.apply(all_scores[:, lo:lo + chunk], artifact.period_s, peak, log_mu)
            all_scores[:, lo:lo + chunk] = done.scaled
            peak, log_mu = done.peak, done.log_mu
    sensor = artifact.sensor if entity_scale else None
    if sensor is not None:  # what the worker publishes: over the scaled float32 samples
        runs = sensor.run_many([scaled[i, :len(a)] for i, a in enumerate(arrays)])
        for i, run in enumerate(runs):
            all_scores[i, :len(run.scores)] = run.scores
    return [Replay(artifact.unscale(out[i, :len(a)].astype(np.float64)),
                   all_scores[i, :len(a)].copy(), all_residuals[i])
            for i, a in enumerate(arrays)]


def replay_beats(artifact: Artifact, entity_id: str, values: np.ndarray,
                 ts: np.ndarray) -> list[dict]:
    """The beat records (``stream/schemas/beat.json``) of one series ``values`` ``[T, F]`` (user
    units) whose sample ``t`` is at ``ts[t]``, as the worker writes them when no reset
    intervenes; ``[]`` for an artifact without a beat model."""
    stage = artifact.beats
    if stage is None:
        return []
    values = np.asarray(values, dtype=np.float64)
    ts = np.asarray(ts, dtype=np.float64)
    if ts.shape != (len(values),):
        raise ValueError(f"ts: expected one time per sample ({len(values)}), got shape "
                         f"{list(ts.shape)}")
    scores = replay(artifact, values).scores
    beats = offline_beats(stage, values[:, stage.lead], scores)
    return [beat_record(entity_id, b, float(ts[b.decided]), artifact.period_s, stage.threshold,
                        artifact.model_id) for b in beats]
