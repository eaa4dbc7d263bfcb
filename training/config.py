"""Training configuration: YAML files in ``training/configs``, every field also a flag.

A config has six sections (``data``, ``model``, ``train``, ``calibration``, ``evaluation``,
``beats``: the optional beat classifier, :mod:`training.beats`) and two top-level fields
(``name``, ``output``). Each field is declared once below with its type, default and help;
:func:`add_flags` turns them into ``--section-field`` flags, and :func:`load_config` applies
defaults < YAML < flags. Unknown keys are errors, so a typo in a config never trains silently
with a default.

>>> cfg = load_config("ecg", {"model_hidden_size": "16", "data_entities": "100,106"})
>>> cfg.name, cfg.model.hidden_size, cfg.data.entities, cfg.output
('ecg', 16, ('100', '106'), 'artifacts/ecg')
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stream.errors import ConfigError

__all__ = [
    "CONFIG_DIR",
    "BeatsConfig",
    "CalibrationConfig",
    "Config",
    "DataConfig",
    "EvaluationConfig",
    "ModelConfig",
    "TrainConfig",
    "add_flags",
    "load_config",
    "resolve_config",
]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def _f(default: Any, help: str, choices: tuple[str, ...] = ()) -> Any:
    if isinstance(default, list):
        default = tuple(default)
    return field(default=default, metadata={"help": help, "choices": choices})


@dataclass(frozen=True)
class DataConfig:
    source: str = _f("mitdb", "where the series come from",
                     ("mitdb", "wfdb", "nab", "skab", "table"))
    path: str = _f("bundled:mitdb", "data directory or file (bundled:mitdb = the shipped "
                   "MIT-BIH subset)")
    entities: tuple[str, ...] = _f((), "records / series / files / entity ids to use "
                                   "(empty = all)")
    features: tuple[str, ...] = _f((), "leads or columns to use as features (empty = all)")
    units: tuple[str, ...] = _f((), "unit of each feature (table source)")
    entity_column: str | None = _f(None, "entity id column (table source; empty = one entity)")
    time_column: str = _f("time", "time column, seconds or date-times (table source)")
    label_column: str | None = _f(None, "0/1 anomaly label column (table source)")
    split: tuple[float, ...] = _f((0.7, 0.15, 0.15), "train, validation, test fractions of "
                                  "each entity, in time order")
    window: int = _f(720, "input samples per training window")
    stride: int = _f(360, "samples between window starts")
    train_on: str = _f("all", "train on all windows or only those labelled normal",
                       ("all", "normal"))
    max_windows: int = _f(0, "cap on training (and validation) windows, sampled with the seed "
                          "(0 = all)")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = _f("gru", "recurrent cell (rnn = textbook tanh RNN)", ("rnn", "lstm", "gru"))
    hidden_size: int = _f(32, "hidden units per layer")
    num_layers: int = _f(1, "stacked recurrent layers")
    horizon: int = _f(1, "samples forecast ahead")
    dropout: float = _f(0.0, "dropout between stacked layers")
    gaussian: bool = _f(False, "also predict a variance (required by loss gaussian_nll)")
    bidirectional: bool = _f(False, "refused: a stream has no future samples")


@dataclass(frozen=True)
class TrainConfig:
    loss: str = _f("mse", "training loss", ("mse", "mae", "gaussian_nll"))
    optimizer: str = _f("adam", "optimizer", ("adam", "sgd", "rmsprop"))
    lr: float = _f(3e-3, "learning rate")
    weight_decay: float = _f(0.0, "L2 weight decay")
    momentum: float = _f(0.9, "momentum (sgd, rmsprop)")
    schedule: str = _f("cosine", "learning-rate schedule over max_epochs",
                       ("none", "cosine", "step", "plateau"))
    step_size: int = _f(10, "epochs between decays (schedule step)")
    gamma: float = _f(0.5, "decay factor (schedule step, plateau)")
    gradient_clip: float = _f(1.0, "clip the gradient norm to this (0 = off)")
    batch_size: int = _f(32, "windows per batch")
    max_epochs: int = _f(20, "most epochs")
    limit_train_batches: int = _f(0, "training batches per epoch (0 = all)")
    limit_val_batches: int = _f(0, "validation batches per epoch (0 = all)")
    patience: int = _f(4, "early stopping: epochs without val_loss improvement")
    burn_in: int = _f(0, "leading samples of each window left out of the loss (state warm-up)")
    seed: int = _f(0, "seed of weights, shuffling and window sampling")
    threads: int = _f(1, "torch CPU threads (1 suits small recurrent nets and a busy machine: "
                      "spinning OpenMP threads slow down badly when oversubscribed)")
    progress_bar: bool = _f(True, "show Lightning's progress bar")


@dataclass(frozen=True)
class CalibrationConfig:
    method: str = _f("pot", "threshold from validation scores: peaks-over-threshold (GPD "
                     "tail fit) or empirical quantile", ("pot", "quantile"))
    risk: float = _f(1e-3, "target share of normal validation samples above the threshold")
    initial_quantile: float = _f(0.98, "pot: quantile above which peaks are fitted")
    warmup: int = _f(360, "leading validation samples left out (state warm-up, as in the "
                     "worker)")
    entity_scale: bool = _f(False, "divide each entity's score by its running typical peak "
                            "(stream.entity_scale: peak hold 0.3 s, log average 10 s); the "
                            "threshold is then calibrated on the scaled scores")
    sensor_warmup: int = _f(0, "samples of each entity's normal start that the sensor score "
                            "learns from (stream.sensor_score: its own level, scale and "
                            "threshold; the card's score.sensor); 0 = the 1-step residual score")
    sensor_mean_shift: bool = _f(False, "sensor score: also the MEWMA of each entity's z vector "
                                 "(a small sustained shift of one sensor's mean)")
    sensor_shrinkage: float = _f(1.0, "sensor score: 1 = sensors independent; below 1 their "
                                 "correlation, shrunk towards the identity by this much")
    sensor_flagged_adapt_half_life: float = _f(0.0, "sensor score: half-life (samples) at "
                                               "which level and scale follow flagged samples "
                                               "too; 0 = never")


@dataclass(frozen=True)
class EvaluationConfig:
    season: str = _f("auto", "season in samples for seasonal-naive (auto = from the training "
                     "parts' autocorrelation, none = not periodic)")
    plot_seconds: float = _f(0.0, "seconds of test signal in the plot (0 = 600 samples)")


@dataclass(frozen=True)
class BeatsConfig:
    enabled: bool = _f(False, "also train the beat classifier (ECG: needs annotated WFDB "
                       "records) and put it in the same artifact")
    path: str = _f("../shared/data/mitdb", "WFDB directory of the beat records")
    lead: str = _f("MLII", "ECG lead, by name (one of data.features)")
    train_records: tuple[str, ...] = _f((), "records to train on (absent ones are skipped "
                                        "with a line)")
    val_records: tuple[str, ...] = _f((), "held-out records: early stopping and the threshold "
                                      "(empty with cv_folds)")
    cv_folds: int = _f(0, "leave-patients-out CV folds over train_records choosing the epoch "
                       "count and the threshold, then a refit on all of them (0 = use "
                       "val_records)")
    window: int = _f(64, "consecutive beats per training window")
    cell: str = _f("gru", "recurrent cell", ("gru", "lstm"))
    hidden_size: int = _f(32, "hidden units")
    embed_size: int = _f(32, "per-beat embedding units")
    epochs: int = _f(30, "most epochs")
    patience: int = _f(6, "early stopping: epochs without val_loss improvement")
    lr: float = _f(3e-3, "learning rate")
    weight_decay: float = _f(1e-4, "L2 weight decay")
    dropout: float = _f(0.0, "dropout on the per-beat embedding (training only)")
    noise: float = _f(0.0, "std of Gaussian noise added to the standardised features in "
                      "training")
    batch_size: int = _f(32, "windows per batch")
    cap_s: float = _f(2.0, "a beat is decided at most this long after its R peak (plus the "
                      "detector's delay) when no next beat comes")


@dataclass(frozen=True)
class Config:
    name: str = _f("custom", "config name (and default output folder)")
    output: str = _f("", "artifact directory (empty = artifacts/<name>)")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    beats: BeatsConfig = field(default_factory=BeatsConfig)

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for section in out.values():
            if isinstance(section, dict):
                for k, v in section.items():
                    if isinstance(v, tuple):
                        section[k] = list(v)
        return out


_SECTION_TYPES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig,
                  "calibration": CalibrationConfig, "evaluation": EvaluationConfig,
                  "beats": BeatsConfig}


def _coerce(value: Any, hint: Any, where: str, choices: tuple[str, ...]) -> Any:
    """A YAML value or a flag's string as the field's type; errors name the field."""
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint, optional = args[0], True
    try:
        if value is None or (optional and isinstance(value, str) and not value.strip()):
            if optional:
                return None
            raise ValueError
        if typing.get_origin(hint) is tuple:
            inner = typing.get_args(hint)[0]
            items = ([v for v in value.split(",") if v.strip()] if isinstance(value, str)
                     else list(value))
            return tuple(inner(str(v).strip()) if inner is str else inner(v) for v in items)
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return text in ("true", "1", "yes")
        if hint is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            out = int(value)
        elif hint is float:
            out = float(value)
        else:
            out = str(value)
    except (TypeError, ValueError) as ex:
        name = getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}: expected {'an optional ' if optional else ''}{name}, got "
                          f"{value!r}") from ex
    if choices and out not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {out!r}")
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def resolve_config(name_or_path: str) -> Path:
    """``NAME`` → ``training/configs/NAME.yaml``; anything with a suffix or slash is a path."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise ConfigError(f"--config: expected a YAML file, got {name_or_path} (not found)")
        return candidate
    path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"--config: expected one of {', '.join(known)} or a YAML path, got "
                          f"{name_or_path!r}")
    return path


def load_config(name_or_path: str | None, flags: Mapping[str, Any] | None = None) -> Config:
    """Defaults, then the YAML file (if any), then ``flags`` (``section_field`` keys; None =
    not given)."""
    raw: dict[str, Any] = {}
    if name_or_path:
        path = resolve_config(name_or_path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as ex:
            raise ConfigError(f"{path}: expected YAML, got a parse error ({ex})") from ex
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
        raw.setdefault("name", path.stem)
    unknown = sorted(set(raw) - {"name", "output", *_SECTION_TYPES})
    if unknown:
        raise ConfigError(f"config: unknown keys {unknown}; expected name, output, "
                          f"{', '.join(_SECTION_TYPES)}")
    top_hints = _hints(Config)
    top = {k: _coerce(raw[k], top_hints[k], k, ()) for k in ("name", "output") if k in raw}
    sections = {}
    for sec, cls in _SECTION_TYPES.items():
        given = raw.get(sec) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"config {sec}: expected a mapping, got {given!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(given) - set(fields))
        if bad:
            raise ConfigError(f"config {sec}: unknown keys {bad}; expected "
                              f"{', '.join(fields)}")
        hints = _hints(cls)
        values = {k: _coerce(v, hints[k], f"{sec}.{k}", fields[k].metadata["choices"])
                  for k, v in given.items()}
        for k, f in fields.items():
            flag = (flags or {}).get(f"{sec}_{k}")
            if flag is not None:
                values[k] = _coerce(flag, hints[k], f"--{sec}-{k.replace('_', '-')}",
                                    f.metadata["choices"])
        sections[sec] = cls(**values)
    for k in ("name", "output"):
        if (flags or {}).get(k) is not None:
            top[k] = _coerce(flags[k], top_hints[k], f"--{k}", ())
    cfg = Config(**top, **sections)
    if not cfg.output:
        cfg = dataclasses.replace(cfg, output=f"artifacts/{cfg.name}")
    return cfg


def add_flags(parser: argparse.ArgumentParser) -> None:
    """``--name``, ``--output`` and one ``--section-field`` flag per config field."""
    for f in dataclasses.fields(Config):
        if f.name in ("name", "output"):
            parser.add_argument(f"--{f.name}", dest=f.name, default=None,
                                help=f.metadata["help"])
    for sec, cls in _SECTION_TYPES.items():
        group = parser.add_argument_group(f"{sec} (overrides the config's {sec}: section)")
        defaults = cls()
        for f in dataclasses.fields(cls):
            default = getattr(defaults, f.name)
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            choices = f" ({'|'.join(f.metadata['choices'])})" if f.metadata["choices"] else ""
            group.add_argument(f"--{sec}-{f.name.replace('_', '-')}", dest=f"{sec}_{f.name}",
                               default=None, metavar=f.name.upper(),
                               help=f"{f.metadata['help']}{choices}; default {shown}")
