"""Fit → calibrate → evaluate → export: one config in, an artifact, a report and a plot out.

1. Load the series, cut each entity in time (train | validation | test), fit the scaler on the
   training parts, train on training windows with Lightning (early stopping and checkpointing on
   ``val_loss``), keep the best checkpoint's weights.
2. Replay each entity from the start of its validation part to its end with the network, exactly
   as the worker would stream it (:func:`stream.offline.replay_many`): the validation part warms
   the state and calibrates, the test part is evaluated with a warm state and is never used for
   any choice.
3. Calibrate on validation samples past ``calibration.warmup`` (and labelled normal, where labels
   exist and ``train_on: normal``): ``residual_scale`` = per-feature std of 1-step residuals,
   with ``calibration.entity_scale`` the per-entity scale's ``μ_0`` (:mod:`stream.entity_scale`:
   the mean log peak hold over those samples) and the scores scaled by it as the worker will,
   then the threshold on those scores (:mod:`training.calibrate`). With
   ``calibration.sensor_warmup`` the card carries ``score.sensor`` instead
   (:mod:`stream.sensor_score`): each entity learns its own level, scale and threshold from its
   first ``sensor_warmup`` samples, so the card's threshold is just the score's margin.
4. With ``beats.enabled``, train the beat classifier (:mod:`training.beats`: its own records,
   DS1 patients, with their own validation patients) into the same artifact.
5. Evaluate the test parts (:mod:`training.evaluate`), export the artifact
   (:func:`stream.artifact.save_artifact`), reload it the way the worker does and check that it
   replays to the same forecasts, and write ``report.json`` and ``plot.png`` beside it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch

from stream.artifact import Artifact, load_artifact, save_artifact
from stream.entity_scale import EntityScale, typical_log_peak
from stream.errors import ConfigError
from stream.offline import replay_many
from stream.scoring import score
from stream.sensor_score import SensorScore
from training.calibrate import calibrate_threshold, residual_scale
from training.config import Config
from training.data import SeriesDataModule
from training.evaluate import beat_outcomes, estimate_season, flag_metrics, forecast_metrics
from training.module import ForecastModule, build_network
from training.plot import plot_test_stretch
from training.sources import Series, load_source, resolve_path

__all__ = ["FitResult", "fit"]

log = logging.getLogger(__name__)
REPLAY_CHECK = 5_000


@dataclass(frozen=True)
class FitResult:
    """Where the outputs went and the figures that matter."""

    output: Path
    model_id: str
    metrics: dict[str, Any]
    report: dict[str, Any]


class BestState(pl.Callback):
    """Keeps a copy of the weights at the best ``monitor`` value seen after a validation."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor
        self.best = float("inf")
        self.state: dict[str, torch.Tensor] = {}

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and float(value) < self.best:
            self.best = float(value)
            self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}


def _train(cfg: Config, dm: SeriesDataModule, out: Path) -> tuple[torch.nn.Module, dict]:
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

    tc = cfg.train
    net = build_network(cfg.model, dm.n_features, tc.loss)
    module = ForecastModule(net, tc)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor="val_loss",
                           mode="min", save_top_k=1, save_last=False, enable_version_counter=False)
    early = EarlyStopping(monitor="val_loss", mode="min", patience=tc.patience)
    best = BestState("val_loss")
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=tc.max_epochs, deterministic=True,
        gradient_clip_val=tc.gradient_clip or None,
        limit_train_batches=tc.limit_train_batches or 1.0,
        limit_val_batches=tc.limit_val_batches or 1.0,
        callbacks=[ckpt, early, best], logger=False, default_root_dir=str(out),
        enable_progress_bar=tc.progress_bar, enable_model_summary=tc.progress_bar,
        num_sanity_val_steps=0)
    started = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_s = time.perf_counter() - started
    if not ckpt.best_model_path:
        raise ConfigError("train: no checkpoint was written (no validation epoch ran?)")
    # The best weights come from memory, not from the checkpoint file: that is a pickle, and
    # seqstream never loads one (the checkpoint stays on disk for resuming by hand).
    module.load_state_dict(best.state)
    info = {"epochs": int(trainer.current_epoch), "best_val_loss": float(ckpt.best_model_score),
            "stopped_early": bool(early.stopped_epoch), "train_s": round(train_s, 2),
            "checkpoint": str(Path(ckpt.best_model_path).resolve().relative_to(out.resolve()))}
    return module.net.eval(), info


def _calibration_mask(s: Series, lo: int, hi: int, cfg: Config) -> np.ndarray:
    """Which validation samples ``[lo, hi)`` calibrate: past the warm-up, and normal when
    training was on normal data."""
    keep = np.zeros(hi - lo, dtype=bool)
    keep[min(cfg.calibration.warmup, hi - lo):] = True
    if cfg.data.train_on == "normal" and s.labels is not None:
        keep &= s.labels[lo:hi] == 0
    return keep


def _flag_section(series: list[Series], bounds: list[tuple[int, int]],
                  scores_full: list[np.ndarray], threshold: float) -> dict[str, Any] | None:
    if all(s.beats is not None for s in series):
        labels, tops, symbols = [], [], []
        for s, (_, b), sc in zip(series, bounds, scores_full, strict=True):
            idx, lab, top = beat_outcomes(s.beats.samples, s.beats.labels, len(s.values), b,
                                          len(s.values), sc)
            labels.append(lab)
            tops.append(top)
            symbols.extend(s.beats.symbols[i] for i in idx)
        lab, top = np.concatenate(labels), np.concatenate(tops)
        out = {"unit": "beat", **flag_metrics(lab, top > threshold, top)}
        sym = np.array(symbols)
        out["recall_by_symbol"] = {
            k: {"beats": int((sym == k).sum()),
                "flagged": int(((sym == k) & (top > threshold)).sum())}
            for k in sorted(set(symbols))}
        return out
    if all(s.labels is not None for s in series):
        labels, flags, tops = [], [], []
        for s, (_, b), sc in zip(series, bounds, scores_full, strict=True):
            t = np.arange(b, len(s.values))
            t = t[(s.labels[t] >= 0) & np.isfinite(sc[t])]
            labels.append(s.labels[t])
            flags.append(sc[t] > threshold)
            tops.append(sc[t])
        return {"unit": "sample", **flag_metrics(np.concatenate(labels), np.concatenate(flags),
                                                 np.concatenate(tops))}
    return None


def _season(cfg: Config, dm: SeriesDataModule) -> int | None:
    raw = cfg.evaluation.season.strip().lower()
    if raw == "none":
        return None
    if raw == "auto":
        return estimate_season([s[:a] for s, (a, _) in zip(dm.scaled, dm.parts, strict=True)])
    try:
        season = int(raw)
    except ValueError as ex:
        raise ConfigError(f"evaluation.season: expected auto, none or a lag in samples, got "
                          f"{cfg.evaluation.season!r}") from ex
    if season < 1:
        raise ConfigError(f"evaluation.season: expected a lag >= 1, got {season}")
    return season


def _beats(cfg: Config, names: list[str]) -> tuple[Any, dict[str, Any] | None]:
    """The beat stage and its card section when ``beats.enabled`` (else None, None)."""
    b = cfg.beats
    if not b.enabled:
        return None, None
    if b.lead not in names:
        raise ConfigError(f"beats.lead: expected one of the features {names}, got {b.lead!r}")
    path = resolve_path(b.path)
    if not path.is_dir():
        raise ConfigError(f"beats.path: expected the WFDB directory of the beat records, got "
                          f"{path} (not found); without ../shared use --config ecg-bundled")
    chosen = []
    for part in (b.train_records, b.val_records):
        there = [r for r in part if (path / f"{r}.hea").is_file()]
        absent = [r for r in part if r not in there]
        if absent:
            log.warning("beats: records %s are not in %s; training without them",
                        " ".join(absent), path)
        chosen.append(there)
    from training.beats import train_beat_stage

    return train_beat_stage(path, chosen[0], chosen[1], lead=b.lead, window=b.window,
                            hidden_size=b.hidden_size, embed_size=b.embed_size, cell=b.cell,
                            epochs=b.epochs, patience=b.patience, lr=b.lr,
                            weight_decay=b.weight_decay, dropout=b.dropout, noise=b.noise,
                            batch_size=b.batch_size, cv_folds=b.cv_folds,
                            seed=cfg.train.seed, cap_s=b.cap_s, progress=cfg.train.progress_bar,
                            log=log.info)


def fit(cfg: Config) -> FitResult:
    """Run the whole pipeline for ``cfg``; outputs go to ``cfg.output``."""

    started = time.perf_counter()
    torch.set_num_threads(max(1, cfg.train.threads))
    pl.seed_everything(cfg.train.seed, workers=True, verbose=False)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    d = cfg.data
    series = load_source(d.source, d.path, d.entities, d.features, d.entity_column,
                         d.time_column, d.label_column, d.units)
    dm = SeriesDataModule(series, d.window, d.stride, cfg.model.horizon, d.split, d.train_on,
                          cfg.train.batch_size, cfg.train.seed, d.max_windows)
    log.info("data: %d entities, %d training and %d validation windows", len(series),
             len(dm.train_starts), len(dm.val_starts))
    net, training = _train(cfg, dm, out)

    # Replay from each validation start, with the scaler exactly as the card will hold it.
    scaler = dm.scaler.card()
    mean32 = np.asarray(scaler["mean"], dtype=np.float32)
    std32 = np.asarray(scaler["std"], dtype=np.float32)
    ones = {"score": {"kind": "rms_z", "residual_scale": [1.0] * dm.n_features}}
    probe = Artifact(net, ones, "", mean32, std32)
    replays = replay_many(probe, [s.values[a:] for s, (a, _) in zip(series, dm.parts,
                                                                    strict=True)])
    cal_res, keeps = [], []
    for s, (a, b), r in zip(series, dm.parts, replays, strict=True):
        keep = _calibration_mask(s, a, b, cfg)
        cal_res.append(r.residuals[:b - a][keep])
        keeps.append(keep)
    rs = residual_scale(np.concatenate(cal_res))
    # scores from each validation start on, as the worker publishes them
    published = []
    for r in replays:
        sc = np.full(len(r.residuals), np.nan)
        sc[1:] = score(r.residuals[1:], rs)
        published.append(sc)
    c = cfg.calibration
    entity_scale = None
    if c.entity_scale:
        mu0 = typical_log_peak([p[:b - a] for p, (a, b) in zip(published, dm.parts, strict=True)],
                               keeps, dm.period_s)
        entity_scale = EntityScale(mu0)
        published = [entity_scale.apply(p[None], dm.period_s).scaled[0] for p in published]
    sensor = None
    if c.sensor_warmup > 0:
        if entity_scale is not None:
            raise ConfigError("calibration: expected entity_scale or sensor_warmup, got both")
        # each entity's own threshold comes from its own warm-up; the card's is the margin
        sensor = SensorScore(warmup=c.sensor_warmup, mean_shift=c.sensor_mean_shift,
                             shrinkage=c.sensor_shrinkage,
                             flagged_adapt_half_life=c.sensor_flagged_adapt_half_life or None)
        published = [r.scores for r in sensor.run_many([x[a:] for x, (a, _) in
                                                         zip(dm.scaled, dm.parts, strict=True)])]
        threshold = {"value": sensor.margin, "method": "sensor",
                     "samples": "none: each entity's threshold is the margin times the largest "
                                "averages of its own warm-up (stream.sensor_score)"}
    else:
        val_scores = np.concatenate([p[:b - a][k] for p, (a, b), k in
                                     zip(published, dm.parts, keeps, strict=True)])
        threshold = calibrate_threshold(val_scores, c.method, c.risk, c.initial_quantile)
        threshold["samples"] = "validation, past warm-up" + (
            ", labelled normal" if d.train_on == "normal" and series[0].labels is not None
            else "") + (", scaled per entity" if entity_scale is not None else "")

    # Whole-length arrays (NaN before the validation start) for evaluation and plotting.
    scaled_fc, scores_full = [], []
    for (a, _), r, x, p in zip(dm.parts, replays, dm.scaled, published, strict=True):
        fc = np.full((len(x), dm.n_features), np.nan)
        fc[a + 1:] = probe.scale(r.forecasts[:-1, 0]).astype(np.float64)
        scaled_fc.append(fc)
        sc = np.full(len(x), np.nan)
        sc[a:] = p
        scores_full.append(sc)
    season = _season(cfg, dm)
    names = [name for name, _ in series[0].features]
    scaled64 = [x.astype(np.float64) for x in dm.scaled]
    metrics: dict[str, Any] = {"forecast": forecast_metrics(
        scaled64, scaled_fc, dm.parts, dm.scaler.std, names, season)}
    flags = _flag_section(series, dm.parts, scores_full, threshold["value"])
    if flags is not None:
        metrics["flags"] = flags

    card = {
        "features": [{"name": n, "unit": u} for n, u in series[0].features],
        "scaler": scaler,
        "period_s": dm.period_s,
        "score": {"kind": "rms_z", "residual_scale": [float(v) for v in rs],
                  **({"entity_scale": entity_scale.card()} if entity_scale else {}),
                  **({"sensor": sensor.card()} if sensor else {})},
        "threshold": threshold,
        "data": {**dm.describe(), "path": str(d.path), "features": names,
                 "config": cfg.name},
        "metrics": metrics,
        "training": {**training, "config": cfg.as_dict()},
        "version": version("seqstream"),  # the installed distribution's
    }
    stage, beats_section = _beats(cfg, names)
    if stage is not None:
        card["beats"] = beats_section
        report_beats = {"beats": beats_section}
    else:
        report_beats = {}
    model_id = save_artifact(net, _finite(card), out, beats=stage)
    loaded = load_artifact(out)
    check = replay_many(loaded, [s.values[a:a + REPLAY_CHECK] for s, (a, _) in
                                 zip(series, dm.parts, strict=True)])
    drift = max(float(np.nanmax(np.abs(c_.forecasts - r.forecasts[:len(c_.forecasts)])))
                for c_, r in zip(check, replays, strict=True))
    if drift > 1e-5:
        raise ConfigError(f"export: expected the reloaded artifact to replay the trained "
                          f"network, forecasts differ by {drift:.3g}")

    target = max(range(len(series)), key=lambda e: int(
        (series[e].labels[dm.parts[e][1]:] == 1).sum()) if series[e].labels is not None else 0)
    s, (a, b) = series[target], dm.parts[target]
    length = (round(cfg.evaluation.plot_seconds / dm.period_s) if cfg.evaluation.plot_seconds
              else 2000)
    fc_user = np.full(len(s.values), np.nan)
    fc_user[a + 1:] = replays[target].forecasts[:-1, 0, 0]
    drawn = plot_test_stretch(out / "plot.png", entity=s.entity, feature=s.features[0],
                              values=s.values[:, 0], forecast=fc_user,
                              scores=scores_full[target], threshold=threshold["value"],
                              labels=s.labels, period_s=dm.period_s, lo=b, hi=len(s.values),
                              length=length)
    report = {
        "config": cfg.as_dict(),
        "artifact": str(out),
        "model_id": model_id,
        "created_at": loaded.card["created_at"],
        "metrics": metrics,
        "threshold": threshold,
        "residual_scale": card["score"]["residual_scale"],
        "training": training,
        "data": card["data"],
        "plot": {"file": "plot.png", "entity": s.entity, **drawn},
        "replay_check_max_abs_diff": drift,
        **report_beats,
        "wall_s": round(time.perf_counter() - started, 2),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
    }
    (out / "report.json").write_text(json.dumps(_finite(report), indent=2) + "\n")
    return FitResult(out, model_id, metrics, report)


def _finite(value: Any) -> Any:
    """JSON has no NaN: write it as null."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if dataclasses.is_dataclass(value):
        return _finite(dataclasses.asdict(value))
    return value
