"""Train the beat classifier on MIT-BIH DS1, calibrate its threshold, and measure it.

The data are the de Chazal et al. (2004) inter-patient split: ``DS1`` trains (some of its patients
held out for validation), ``DS2`` only measures and is never used for any choice. Paced records
are excluded from both; the lead is picked by name (MLII; record 114 has its leads swapped).

1. Each record runs through the streaming feature path (:class:`stream.beats.BeatFeatures`, one
   chunk, the worker's own code): the online QRS detector, then one feature row per decided
   beat. Detected beats are matched to the reference annotations with the EC57 rule
   (:func:`seqstream.evaluation.ec57.match`, 150 ms); a matched beat takes its reference's AAMI
   class, N (N L R e j), S (A a J S), V (V E), F (F); Q beats (/ f Q) and the others, and detections
   matching no reference beat (false detections), are *ignored*: no loss, no score.
2. Features are standardised with the training patients' mean and std; the network trains on
   windows of ``window`` consecutive beats (stride ``window/2``) from a zero state, with the
   weighting of :mod:`training.beatmodule`.
3. Either (``val`` records) early stopping on the validation patients' loss, and the threshold
   on ``p_abnormal`` that maximises the pooled abnormal F1 over their beats; or (``cv_folds``)
   leave-patients-out CV over the training patients: each fold trains ``epochs`` epochs, the
   held-out patients' predictions after every epoch are pooled over the folds, the epoch and
   threshold with the highest pooled abnormal F1 are kept, and the network is refit on every
   training patient for that many epochs of the same cosine schedule. Predictions always replay
   each record from its start, as the worker streams it, and pass through the stage's
   irregular-rhythm rule (:func:`stream.beats.without_sveb`) before any threshold; CV also
   picks an epoch and threshold without the rule, on the same predictions, for comparison.

Scores (:func:`beat_scores`): for class ``c`` in V (VEB), S (SVEB), F, over the reference beats
that are not Q: ``TP`` = matched beats of class ``c`` given ``c``; ``FN`` = beats of class ``c``
not given ``c`` (missed by the detector included); ``FP`` = matched beats of another class given
``c``. ``Se = TP/(TP+FN)``, ``+P = TP/(TP+FP)``, ``F1`` their harmonic mean. *Abnormal* pools
S, V and F against the flag. False flags per hour count flagged beats that are reference N or
match no reference beat.

>>> aami_class("V"), aami_class("j"), aami_class("/")
(2, 0, -1)
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from seqstream.evaluation.ec57 import match
from stream.beatnet import CLASSES, BeatNet
from stream.beats import AF_WINDOW, FEATURES, BeatFeatures, BeatStage, without_sveb
from stream.errors import ConfigError
from training.beatmodule import BeatModule
from training.sources import Series, load_wfdb

__all__ = ["DS1", "DS2", "RecordBeats", "aami_class", "beat_scores", "extract_record", "measure",
           "table", "train_beat_stage"]

DS1 = ("101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122", "124", "201",
       "203", "205", "207", "208", "209", "215", "220", "223", "230")
DS2 = ("100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210", "212", "213",
       "214", "219", "221", "222", "228", "231", "232", "233", "234")
_AAMI = {**dict.fromkeys("NLRej", 0), **dict.fromkeys("AaJS", 1), **dict.fromkeys("VE", 2),
         "F": 3}


def aami_class(symbol: str) -> int:
    """AAMI class index (0 N, 1 S, 2 V, 3 F) of an annotation symbol; -1 = ignored (Q, other)."""
    return _AAMI.get(symbol, -1)


@dataclass(frozen=True)
class RecordBeats:
    """One record through the feature path, with its reference beats."""

    record: str
    fs: float
    n_samples: int
    samples: np.ndarray  # int64 [n] detected R peaks (decided beats)
    features: np.ndarray  # float64 [n, len(FEATURES)]
    labels: np.ndarray  # int64 [n]: AAMI class of the matched reference beat, -1 = ignored
    ref_samples: np.ndarray  # int64 [m]
    ref_classes: np.ndarray  # int64 [m]
    pairs: np.ndarray  # [k, 2] (reference index, detection index)
    irregular: np.ndarray  # bool [n]: the rhythm up to the beat is irregular (AF rule)


def extract_record(series: Series, cap_s: float = 2.0, block_s: float = 1 / 60) -> RecordBeats:
    """Detected beats, their features and their labels for one annotated record (lead 0)."""
    if series.beats is None:
        raise ConfigError(f"beats: record {series.entity} has no reference annotations")
    fs = 1.0 / series.period_s
    feats = BeatFeatures(fs, cap_s, block_s)
    beats = feats.extract(feats.initial(1), [series.values[:, 0]])[0]
    samples = np.array([b.sample for b in beats], dtype=np.int64)
    x = np.stack([b.features for b in beats]) if beats else np.zeros((0, len(FEATURES)))
    ref = series.beats.samples
    ref_cls = np.array([aami_class(s) for s in series.beats.symbols], dtype=np.int64)
    pairs = match(ref, samples, fs)
    labels = np.full(len(samples), -1, dtype=np.int64)
    labels[pairs[:, 1]] = ref_cls[pairs[:, 0]]
    irregular = np.array([b.irregular for b in beats], dtype=bool)
    return RecordBeats(series.entity, fs, len(series.values), samples, x, labels, ref, ref_cls,
                       pairs, irregular)


class BeatWindows(Dataset):
    """``(features [T, F] float32, labels [T] int64)`` windows of consecutive beats."""

    def __init__(self, records: Sequence[tuple[np.ndarray, np.ndarray]], window: int) -> None:
        self.records = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in records]
        self.window = window
        stride = max(1, window // 2)
        self.starts = [(r, s) for r, (x, _) in enumerate(records)
                       for s in range(0, max(1, len(x) - window + 1), stride)]

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        r, s = self.starts[i]
        x, y = self.records[r]
        return x[s:s + self.window], y[s:s + self.window]


def _sequence_probs(net: BeatNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The network's ``p_abnormal`` and class logits of one record's whole normalised sequence,
    before the irregular-rhythm rule (:func:`_as_streamed` adds it)."""
    with torch.no_grad():
        logits, abn, _ = net(torch.from_numpy(x)[None])
    return torch.sigmoid(abn[0]).numpy().astype(np.float64), logits[0].numpy()


def _as_streamed(rec: RecordBeats, out: tuple[np.ndarray, np.ndarray]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_sequence_probs`' output with the irregular-rhythm rule, as the stage streams it
    (to 1e-5: ``tests/test_beats_stream.py``)."""
    return without_sveb(out[0], out[1], rec.irregular)


def _predictions(p: np.ndarray, logits: np.ndarray, threshold: float) -> np.ndarray:
    """Predicted class per beat: N unless flagged, then the likeliest of S, V, F."""
    cls = 1 + np.argmax(logits[:, 1:], axis=1)
    return np.where(p >= threshold, cls, 0)


def beat_scores(records: Sequence[RecordBeats], preds: Sequence[np.ndarray]) -> dict[str, Any]:
    """VEB/SVEB/F/abnormal Se, +P, F1 and false flags per hour (see the module docstring)."""
    counts = {k: [0, 0, 0] for k in ("V", "S", "F", "abnormal")}
    false_flags, hours = 0, 0.0
    for rec, pred in zip(records, preds, strict=True):
        ref_pred = np.full(len(rec.ref_samples), -1, dtype=np.int64)  # -1 = missed
        ref_pred[rec.pairs[:, 0]] = pred[rec.pairs[:, 1]]
        scored = rec.ref_classes >= 0
        rc, rp = rec.ref_classes[scored], ref_pred[scored]
        for name, c in (("V", 2), ("S", 1), ("F", 3)):
            counts[name][0] += int(((rc == c) & (rp == c)).sum())
            counts[name][1] += int(((rc == c) & (rp != c)).sum())
            counts[name][2] += int(((rc != c) & (rp == c)).sum())
        counts["abnormal"][0] += int(((rc > 0) & (rp > 0)).sum())
        counts["abnormal"][1] += int(((rc > 0) & (rp <= 0)).sum())
        counts["abnormal"][2] += int(((rc == 0) & (rp > 0)).sum())
        unmatched = np.ones(len(pred), bool)
        unmatched[rec.pairs[:, 1]] = False
        false_flags += int(((rc == 0) & (rp > 0)).sum()) + int((pred[unmatched] > 0).sum())
        hours += rec.n_samples / rec.fs / 3600
    out: dict[str, Any] = {}
    for name, (tp, fn, fp) in counts.items():
        se = tp / (tp + fn) if tp + fn else math.nan
        ppv = tp / (tp + fp) if tp + fp else math.nan
        f1 = 2 * tp / (2 * tp + fn + fp) if tp + fn + fp else math.nan
        out[name] = {"tp": tp, "fn": fn, "fp": fp, "se": se, "ppv": ppv, "f1": f1}
    out["false_flags_per_hour"] = false_flags / hours if hours else math.nan
    out["hours"] = hours
    return out


def _best_threshold(records: Sequence[RecordBeats], probs: Sequence[np.ndarray],
                    logits: Sequence[np.ndarray]) -> tuple[float, float]:
    """The threshold on p_abnormal with the highest pooled abnormal F1 (and that F1)."""
    allp = np.concatenate(probs)
    candidates = np.unique(np.quantile(allp, np.linspace(0.5, 0.999, 400)))
    best = (0.5, -1.0)
    for t in candidates:
        preds = [_predictions(p, g, float(t)) for p, g in zip(probs, logits, strict=True)]
        f1 = beat_scores(records, preds)["abnormal"]["f1"]
        if f1 > best[1]:
            best = (float(t), f1)
    return best


class _EpochLog(pl.Callback):
    """One line per validation: the epoch, its losses and the time so far."""

    def __init__(self, log) -> None:
        self.emit, self.started = log, time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        m = trainer.callback_metrics
        self.emit(f"beats: epoch {trainer.current_epoch} train_loss "
                 f"{float(m.get('train_loss', math.nan)):.4f} val_loss "
                 f"{float(m.get('val_loss', math.nan)):.4f} "
                 f"({time.perf_counter() - self.started:.0f} s)")


class _HeldOut(pl.Callback):
    """After every training epoch, the held-out records' ``(p_abnormal, logits)`` as streamed."""

    def __init__(self, held: Sequence[np.ndarray]) -> None:
        self.held, self.per_epoch = held, []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        net = module.net.eval()
        self.per_epoch.append([_sequence_probs(net, x) for x in self.held])
        net.train()


def _folds(names: Sequence[str], k: int) -> list[list[str]]:
    """``k`` disjoint patient groups: the names sorted, then dealt out in turn (a fixed rule,
    no look at the labels)."""
    if not 2 <= k <= len(names):
        raise ConfigError(f"beats cv_folds: expected 2..{len(names)} (the training records), "
                          f"got {k}")
    ordered = sorted(names)
    return [ordered[i::k] for i in range(k)]


def _fit(tr: Sequence[RecordBeats], va: Sequence[RecordBeats], *, window: int,
         hidden_size: int, embed_size: int, cell: str, epochs: int, schedule_epochs: int,
         patience: int, lr: float, weight_decay: float, dropout: float, noise: float,
         batch_size: int, seed: int, progress: bool, log,
         held: Sequence[RecordBeats] = ()) -> dict[str, Any]:
    """Standardise on ``tr``, train (early stopping on ``va`` when given, else exactly
    ``epochs`` epochs of a cosine schedule over ``schedule_epochs``); the net, its
    normalisation, the weights and, per epoch, ``held``'s predictions."""
    from pytorch_lightning.callbacks import EarlyStopping

    from training.fit import BestState

    rows = np.concatenate([r.features for r in tr])
    mean, std = rows.mean(0), rows.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    counts = np.bincount(np.concatenate([r.labels[r.labels >= 0] for r in tr]),
                         minlength=len(CLASSES)).astype(np.float64)
    if np.any(counts == 0):
        raise ConfigError(f"beats: every class {CLASSES} needs training beats, got counts "
                          f"{counts.tolist()}")
    class_weight = (np.sqrt(counts.sum() / (len(CLASSES) * counts))).tolist()
    pos_weight = float(np.sqrt(counts[0] / counts[1:].sum()))

    def norm(r: RecordBeats) -> np.ndarray:
        return ((r.features - mean) / std).astype(np.float32)

    pl.seed_everything(seed, workers=True, verbose=False)
    net = BeatNet(len(FEATURES), hidden_size, cell, embed_size, dropout)
    module = BeatModule(net, class_weight, pos_weight, lr=lr, weight_decay=weight_decay,
                        max_epochs=schedule_epochs, noise=noise)
    gen = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(BeatWindows([(norm(r), r.labels) for r in tr], window),
                          batch_size=batch_size, shuffle=True, generator=gen)
    watch = _HeldOut([norm(r) for r in held])
    callbacks: list[pl.Callback] = [watch, _EpochLog(log)]
    val_dl = None
    best = None
    early = None
    if va:
        val_dl = DataLoader(BeatWindows([(norm(r), r.labels) for r in va], window),
                            batch_size=batch_size, shuffle=False)
        best = BestState("val_loss")
        early = EarlyStopping(monitor="val_loss", mode="min", patience=patience)
        callbacks += [early, best]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, deterministic=True,
                         gradient_clip_val=1.0, callbacks=callbacks, logger=False,
                         enable_checkpointing=False, enable_progress_bar=progress,
                         enable_model_summary=progress, num_sanity_val_steps=0,
                         limit_val_batches=1.0 if va else 0)
    started = time.perf_counter()
    trainer.fit(module, train_dl, val_dl)
    if best is not None:
        module.load_state_dict(best.state)
    return {"net": module.net.eval(), "mean": mean, "std": std, "counts": counts,
            "class_weight": class_weight, "pos_weight": pos_weight,
            "epochs": int(trainer.current_epoch), "train_s": time.perf_counter() - started,
            "best_val_loss": best.best if best is not None else None,
            "stopped_early": bool(early.stopped_epoch) if early is not None else False,
            "held": watch.per_epoch, "norm": norm}


def cross_validate(records: dict[str, RecordBeats], names: Sequence[str], folds: int,
                   log=print, **fit_args: Any) -> dict[str, Any]:
    """Leave-patients-out CV over ``names``: each fold trains on the others for
    ``fit_args['epochs']`` epochs; the held-out patients' predictions after every epoch are
    pooled over the folds. Returns, per epoch, the pooled scores at the threshold that
    maximises pooled abnormal F1, and the best epoch (the highest such F1; the earliest on
    ties)."""
    groups = _folds(names, folds)
    per_fold = []
    for k, held in enumerate(groups):
        train = [n for n in names if n not in held]
        log(f"beats cv: fold {k + 1}/{folds} holds out {' '.join(held)}")
        out = _fit([records[n] for n in train], [], held=[records[n] for n in held],
                   schedule_epochs=fit_args["epochs"], log=log, **fit_args)
        per_fold.append((held, out["held"]))
    order = [n for held, _ in per_fold for n in held]
    recs = [records[n] for n in order]
    epochs, raw = [], []
    for e in range(len(per_fold[0][1])):
        outs = [o for _, per_epoch in per_fold for o in per_epoch[e]]
        epochs.append(_pooled(e + 1, recs, [_as_streamed(r, o) for r, o in
                                            zip(recs, outs, strict=True)]))
        raw.append(_pooled(e + 1, recs, outs))
        s = epochs[-1]["scores"]
        log(f"beats cv: epoch {e + 1} threshold {epochs[-1]['threshold']:.3f} abnormal F1 "
            f"{s['abnormal']['f1']:.3f} VEB F1 {s['V']['f1']:.3f} SVEB F1 {s['S']['f1']:.3f} "
            f"false flags/h {s['false_flags_per_hour']:.1f} (without the rhythm rule: abnormal "
            f"F1 {raw[-1]['scores']['abnormal']['f1']:.3f})")
    return {"folds": [held for held, _ in per_fold], "per_epoch": epochs, "best": _best(epochs),
            "without_rhythm_rule": _best(raw)}


def _pooled(epoch: int, recs: Sequence[RecordBeats],
            outs: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """One epoch's pooled out-of-fold scores at its best threshold."""
    probs, logits = [p for p, _ in outs], [g for _, g in outs]
    threshold, _ = _best_threshold(recs, probs, logits)
    scores = beat_scores(recs, [_predictions(p, g, threshold)
                                for p, g in zip(probs, logits, strict=True)])
    return {"epoch": epoch, "threshold": threshold, "scores": scores}


def _best(epochs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The epoch with the highest pooled abnormal F1 (the earliest on ties)."""
    return max(epochs, key=lambda r: (r["scores"]["abnormal"]["f1"], -r["epoch"]))


def train_beat_stage(path: str | Path, train: Sequence[str], val: Sequence[str],
                     lead: str = "MLII", window: int = 64, hidden_size: int = 32,
                     embed_size: int = 32, cell: str = "gru", epochs: int = 30,
                     patience: int = 6, lr: float = 3e-3, weight_decay: float = 1e-4,
                     dropout: float = 0.0, noise: float = 0.0,
                     batch_size: int = 32, seed: int = 0, cv_folds: int = 0,
                     cap_s: float = 2.0, block_s: float = 1 / 60, progress: bool = False,
                     log=print) -> tuple[BeatStage, dict[str, Any]]:
    """Train on ``train`` records and return the stage and the card's ``beats`` section (less
    what :meth:`BeatStage.card` adds), all from DS1.

    With ``val`` records: early stopping and the threshold on them. With ``cv_folds`` (and no
    ``val``): leave-patients-out CV over ``train`` picks the epoch count and the threshold
    (:func:`cross_validate`), then the network is refit on every ``train`` record for that
    many epochs of the same schedule."""
    if set(train) & set(val) or not train or bool(val) == bool(cv_folds):
        raise ConfigError(f"beats: expected non-empty training records and either disjoint "
                          f"validation records or cv_folds, got train {list(train)}, val "
                          f"{list(val)}, cv_folds {cv_folds}")
    started = time.perf_counter()
    records = {}
    for s in load_wfdb(path, [*train, *val], [lead]):
        records[s.entity] = extract_record(s, cap_s, block_s)
    extract_s = time.perf_counter() - started
    log(f"beats: {sum(len(r.samples) for r in records.values())} beats detected in "
        f"{len(records)} records ({extract_s:.0f} s)")
    fit_args = {"window": window, "hidden_size": hidden_size, "embed_size": embed_size,
                "cell": cell, "patience": patience, "lr": lr, "weight_decay": weight_decay,
                "dropout": dropout, "noise": noise, "batch_size": batch_size, "seed": seed,
                "progress": progress}
    tr = [records[r] for r in train]
    va = [records[r] for r in val]
    if cv_folds:
        cv = cross_validate(records, list(train), cv_folds, log=log, epochs=epochs, **fit_args)
        chosen = cv["best"]
        out = _fit(tr, [], epochs=chosen["epoch"], schedule_epochs=epochs, log=log, **fit_args)
        threshold = chosen["threshold"]
        plain = cv["without_rhythm_rule"]
        metrics = {"cross_validation": chosen["scores"],
                   "cross_validation_without_rhythm_rule": plain["scores"]}
        method = (f"max pooled abnormal F1 on the out-of-fold predictions of {cv_folds}-fold "
                  f"leave-patients-out CV over the training records")
        cv_section = {"folds": cv["folds"], "epochs_tried": epochs,
                      "chosen_epoch": chosen["epoch"],
                      "per_epoch": [{"epoch": r["epoch"], "threshold": r["threshold"],
                                     "abnormal_f1": r["scores"]["abnormal"]["f1"],
                                     "veb_f1": r["scores"]["V"]["f1"],
                                     "sveb_f1": r["scores"]["S"]["f1"],
                                     "false_flags_per_hour":
                                         r["scores"]["false_flags_per_hour"]}
                                    for r in cv["per_epoch"]],
                      "without_rhythm_rule": {"chosen_epoch": plain["epoch"],
                                              "threshold": plain["threshold"]}}
    else:
        out = _fit(tr, va, epochs=epochs, schedule_epochs=epochs, log=log, **fit_args)
        outs = [_as_streamed(r, _sequence_probs(out["net"], out["norm"](r))) for r in va]
        threshold, _ = _best_threshold(va, [p for p, _ in outs], [g for _, g in outs])
        metrics = {"validation": beat_scores(va, [_predictions(p, g, threshold)
                                                  for p, g in outs])}
        method = ("max pooled abnormal F1 on the validation records (DS1 held-out patients), "
                  "each replayed from its start")
        cv_section = None
    stage = BeatStage(BeatFeatures(records[train[0]].fs, cap_s, block_s, detector=None),
                      out["net"], out["mean"], out["std"], threshold)
    per_class = out["counts"].astype(int).tolist()
    section = {
        "lead": lead,
        "threshold": {"value": threshold, "method": method},
        "labels": "EC57 match (150 ms) of detected to reference beats; unmatched detections "
                  "and Q beats ignored",
        "data": {"path": str(path), "split": "de Chazal 2004 DS1 (inter-patient)",
                 "train_records": list(train), "val_records": list(val),
                 "train_beats_per_class": dict(zip(CLASSES, per_class, strict=True))},
        "training": {"window_beats": window, "epochs": out["epochs"],
                     "best_val_loss": out["best_val_loss"],
                     "stopped_early": out["stopped_early"],
                     "train_s": round(out["train_s"], 1), "extract_s": round(extract_s, 1),
                     "seed": seed, "lr": lr, "weight_decay": weight_decay,
                     "dropout": dropout, "noise": noise,
                     "batch_size": batch_size, "class_weight": out["class_weight"],
                     "pos_weight": out["pos_weight"]},
        "metrics": metrics,
        "rhythm": {"rule": "Dash et al. 2009 atrial fibrillation rule over the last "
                           f"{AF_WINDOW} RRs of beats not premature "
                           "(stream.beats.irregular_rhythm); where it holds, the S part leaves "
                           "p_abnormal (stream.beats.without_sveb)",
                   "irregular_share_of_training_beats": float(np.mean(np.concatenate(
                       [r.irregular for r in tr]))),
                   "irregular_beats_per_training_record": {
                       r.record: int(r.irregular.sum()) for r in tr}},
    }
    if cv_section is not None:
        section["cross_validation"] = cv_section
    return stage, section


def table(scores: dict[str, Any]) -> str:
    """The per-beat figures as a fixed-width text table."""
    lines = [f"{'':9s} {'Se':>6s} {'+P':>6s} {'F1':>6s} {'TP':>6s} {'FN':>6s} {'FP':>6s}"]
    def rate(v: float | None) -> str:  # a card's JSON holds an undefined rate as null
        return f"{v:6.3f}" if v is not None and math.isfinite(v) else f"{'-':>6s}"

    for name, label in (("V", "VEB"), ("S", "SVEB"), ("F", "F"), ("abnormal", "abnormal")):
        s = scores[name]
        lines.append(f"{label:9s} {rate(s['se'])} {rate(s['ppv'])} {rate(s['f1'])} "
                     f"{s['tp']:6d} {s['fn']:6d} {s['fp']:6d}")
    lines.append(f"false flags per hour {scores['false_flags_per_hour']:.1f} over "
                 f"{scores['hours']:.1f} h")
    return "\n".join(lines)


def measure(artifact: str | Path, path: str | Path, records: Sequence[str]) -> dict[str, Any]:
    """An artifact's beat stage over whole records (one chunk each, as streamed)."""
    from stream.artifact import load_artifact
    from stream.beats import offline_beats

    stage = load_artifact(artifact).beats
    if stage is None:
        raise ConfigError(f"artifact {artifact}: expected a beats section, it has none")
    lead = load_artifact(artifact).card["beats"]["lead"]
    recs, preds = [], []
    for s in load_wfdb(path, records, [lead]):
        rec = extract_record(s, stage.features.cap_s, stage.features.block_s)
        outs = offline_beats(stage, s.values[:, 0])
        if [b.sample for b in outs] != rec.samples.tolist():
            raise RuntimeError(f"record {s.entity}: the stage's beats differ from the features'")
        pred = np.array([CLASSES.index(b.cls) for b in outs], dtype=np.int64)
        recs.append(rec)
        preds.append(pred)
    return beat_scores(recs, preds)


def main(argv: Sequence[str] | None = None) -> int:
    """``python3 -m training.beats ARTIFACT --records DS2``: the per-beat table."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("artifact")
    parser.add_argument("--path", default="../shared/data/mitdb")
    parser.add_argument("--records", default="DS2",
                        help="DS1, DS2 or a comma list (those present under --path)")
    args = parser.parse_args(argv)
    named = {"DS1": DS1, "DS2": DS2}.get(args.records)
    wanted = named or tuple(r for r in args.records.split(",") if r)
    present = [r for r in wanted if (Path(args.path) / f"{r}.hea").is_file()]
    print(f"records ({len(present)} of {len(wanted)} present): {' '.join(present)}")
    print(table(measure(args.artifact, args.path, present)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
