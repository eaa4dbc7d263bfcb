"""Scores of every detector on the validation and test series, computed the same way for all.

The network's scores and forecasts come from :func:`stream.offline.replay_many`, which runs the
artifact over each series with the worker's semantics (fresh state at the series' first sample,
each sample scored against the 1-step forecast made at the previous one); the live path checks
that the worker publishes the same numbers. Baselines run series by series, in ``jobs`` worker
processes (River's detectors are pure Python, one sample at a time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from seqstream.evaluation.baselines import Detector
from seqstream.evaluation.dataset import EvalData, EvalSeries

__all__ = ["ENTITY_SCALED", "OURS", "Scores", "entity_scaled_variant", "score_baselines",
           "score_network", "unscaled_network"]

log = logging.getLogger(__name__)
OURS = "seqstream"
ENTITY_SCALED = ("seqstream", "persistence_z", "rolling_z")  # River's detectors adapt already


@dataclass
class Scores:
    """Per-sample scores of one detector on each validation and test series (same order as in
    :class:`EvalData`), with the network's 1-step forecasts of each test sample."""

    name: str
    label: str
    validation: list[np.ndarray]
    test: list[np.ndarray]
    forecasts: list[np.ndarray] | None = None  # [T, F]: forecast of x_t made at t-1 (NaN at 0)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


def score_network(artifact, data: EvalData, entity_scale: bool = True) -> Scores:
    """The artifact's scores and 1-step forecasts, replayed offline (scaled per entity when
    the card says so, as the worker publishes them, unless ``entity_scale`` is False)."""
    from stream.offline import replay_many

    started = time.perf_counter()
    val = [r.scores for r in replay_many(artifact, [s.values for s in data.validation],
                                         entity_scale=entity_scale)]
    test, forecasts = [], []
    # all series in one batch: a recurrent step costs about the same for 1 row or 64, and
    # shorter series only pad at their end (causality keeps their real samples exact)
    for r, s in zip(replay_many(artifact, [s.values for s in data.test],
                                entity_scale=entity_scale), data.test, strict=True):
        test.append(r.scores)
        fc = np.full(s.values.shape, np.nan)
        fc[1:] = r.forecasts[:-1, 0]
        forecasts.append(fc)
    return Scores(OURS, f"seqstream {artifact.card['architecture']['cell'].upper()}-"
                        f"{artifact.card['architecture']['hidden_size']}",
                  val, test, forecasts, time.perf_counter() - started)


def unscaled_network(artifact, data: EvalData) -> Scores:
    """The network without the card's per-entity scale (``<name>_unscaled``): what scaling
    adds, measured on the same model."""
    sc = score_network(artifact, data, entity_scale=False)
    sc.name, sc.label = f"{OURS}_unscaled", f"{sc.label} without per-entity scale (offline)"
    sc.forecasts = None
    return sc


def _run(detector: Detector, values: np.ndarray) -> np.ndarray:
    return detector.scores(values)


def score_baselines(detectors: Sequence[Detector], data: EvalData, jobs: int = 1
                    ) -> list[Scores]:
    """Each fitted detector's scores on every validation and test series."""
    series: list[EvalSeries] = [*data.validation, *data.test]
    nv = len(data.validation)
    out = []
    pool = ProcessPoolExecutor(max_workers=jobs) if jobs > 1 else None
    try:
        for det in detectors:
            started = time.perf_counter()
            det.fit(data.train_parts)
            if pool is None:
                results = [_run(det, s.values) for s in series]
            else:
                results = list(pool.map(_run, [det] * len(series), [s.values for s in series]))
            seconds = time.perf_counter() - started
            log.info("baseline %s: %d series in %.1f s", det.name, len(series), seconds)
            out.append(Scores(det.name, det.label, results[:nv], results[nv:], None, seconds))
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def entity_scaled_variant(sc: Scores, data: EvalData, warmup: int) -> Scores:
    """``sc`` with every series' scores scaled per entity
    (:mod:`seqstream.evaluation.entity_scale`);
    ``μ_0`` from this detector's own normal validation samples past the warm-up."""
    from seqstream.evaluation.dataset import normal_mask
    from seqstream.evaluation.entity_scale import entity_scaled, typical_log_peak

    started = time.perf_counter()
    masks = []
    for s, v in zip(data.validation, sc.validation, strict=True):
        m = normal_mask(s.labels, len(v))
        m[:warmup] = False
        masks.append(m)
    mu0 = typical_log_peak(sc.validation, masks, data.period_s)
    val = [entity_scaled(v, data.period_s, mu0) for v in sc.validation]
    test = [entity_scaled(v, data.period_s, mu0) for v in sc.test]
    return Scores(f"{sc.name}_entity", f"{sc.label} + per-entity scale (offline)", val, test, None,
                  sc.seconds + time.perf_counter() - started, {"log_peak0": mu0})
