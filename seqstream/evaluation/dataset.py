"""Which samples an evaluation uses: validation parts for thresholds, unseen series for the test.

The artifact's card says what the network was trained on (source, path, entities, features and
the time split). From it:

- **training parts** ``[0, a)`` of the training entities fit the baselines' fixed scales;
- **validation parts** ``[a, b)`` of the same entities set every detector's threshold, as they
  set the network's;
- **test series** are the labelled series of the test data set that the network never saw:
  every record (series, file) not among the training entities, paced ECG records left out, and
  for MIT-BIH the DS1 records too (de Chazal's inter-patient split: tests are on DS2 only). Each
  is streamed from its first sample with a fresh state, exactly as the worker meets a new
  entity, and cut to its first ``minutes`` (0 = whole). Where the test data set has no unseen
  series, the test parts ``[b, T)`` of the training entities are used instead (also never seen in
  training, nor used for any choice), and the report says so.

>>> split_bounds(1000, (0.7, 0.15, 0.15))
(700, 850)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqstream.evaluation.labels import (
    DS1,
    PACED_RECORDS,
    Labels,
    ecg_labels,
    ecg_records,
    nab_labels,
    skab_labels,
)
from seqstream.evaluation.metrics import beat_windows
from stream.errors import ConfigError

__all__ = ["EvalData", "EvalSeries", "load_eval_data", "normal_mask", "split_bounds"]


@dataclass(frozen=True)
class EvalSeries:
    """One entity's stretch of signal, streamed from its first sample with a fresh state."""

    entity: str
    values: np.ndarray  # [T, F] user units
    labels: Labels
    offset: int = 0  # where the stretch starts in the recording
    start: int = 0  # first sample that counts in the metrics (the ones before only warm up)


@dataclass(frozen=True)
class EvalData:
    kind: str  # "beats" (ECG) | "windows" (NAB, SKAB)
    period_s: float
    features: tuple[str, ...]
    train_parts: list[np.ndarray]
    validation: list[EvalSeries]
    test: list[EvalSeries]
    test_source: str  # what the test series are, in words
    test_dir: str


def split_bounds(n: int, split: Sequence[float]) -> tuple[int, int]:
    """End of the training and of the validation part (the rule ``training.data`` uses)."""
    from training.data import split_points

    return split_points(n, split)


def normal_mask(labels: Labels, n: int) -> np.ndarray:
    """Samples labelled normal: inside a normal (N) beat's window, or outside every window."""
    if labels.kind == "beats":
        mask = np.zeros(n, dtype=bool)
        if len(labels.r_peaks) == 0:
            return mask
        lo, hi = beat_windows(labels.r_peaks, n)
        for a, b, c in zip(lo, hi, labels.classes, strict=True):
            if c == "N":
                mask[a:b] = True
        return mask
    mask = np.ones(n, dtype=bool)
    for a, b in labels.windows:
        mask[a:b] = False
    return mask


def _labels_of(source: str, directory: Path, entity: str, n: int) -> Labels:
    if source in ("mitdb", "wfdb"):
        return ecg_labels(directory, entity)
    import pandas as pd

    if source == "nab":
        stamps = pd.read_csv(directory / "data" / entity, usecols=["timestamp"])["timestamp"]
        return nab_labels(directory, entity, stamps)
    if source == "skab":
        frame = pd.read_csv(directory / "data" / entity, sep=";")
        if "anomaly" not in frame:
            return Labels.from_windows(np.zeros((0, 2), np.int64))
        return skab_labels(frame["anomaly"].to_numpy())
    raise ConfigError(f"evaluate: expected a labelled source (mitdb, wfdb, nab, skab), the "
                      f"artifact was trained on {source!r}")


def _all_entities(source: str, directory: Path) -> list[str]:
    if source in ("mitdb", "wfdb"):
        return ecg_records(directory, (*PACED_RECORDS, *DS1) if source == "mitdb" else ())
    files = sorted(str(p.relative_to(directory / "data"))
                   for p in (directory / "data").glob("*/*.csv"))
    if source == "skab":  # the anomaly-free run has no labels to score against
        files = [f for f in files if not f.startswith("anomaly-free")]
    return files


def load_eval_data(card: dict[str, Any], test_dir: str | Path | None = None,
                   entities: Sequence[str] = (), minutes: float = 0.0) -> EvalData:
    """Validation and test series for the artifact whose card is ``card``."""
    from training.sources import load_source, resolve_path

    try:
        cfg = card["training"]["config"]["data"]
        trained = list(card["data"]["entities"])
        split = card["data"]["split"]
        features = list(card["data"]["features"])
    except (KeyError, TypeError) as ex:
        raise ConfigError(f"evaluate: expected a card written by seqstream train (with data and "
                          f"training.config sections), missing {ex}") from ex
    source = cfg["source"]
    kind = "beats" if source in ("mitdb", "wfdb") else "windows"
    train_dir = resolve_path(cfg["path"])
    train_series = load_source(source, train_dir, trained, features)
    period = train_series[0].period_s
    train_parts, validation, fallback = [], [], []
    for s in train_series:
        a, b = split_bounds(len(s.values), split)
        labels = _labels_of(source, train_dir, s.entity, len(s.values))
        train_parts.append(s.values[:a])
        validation.append(EvalSeries(s.entity, s.values[a:b], labels.part(a, b), a))
        # streamed from the validation start, as calibration replayed it, so the state is warm
        # when the test part begins; only the test part [b, T) counts
        fallback.append(EvalSeries(s.entity, s.values[a:], labels.part(a, len(s.values)), a,
                                   b - a))

    directory = Path(test_dir).expanduser() if test_dir else train_dir
    if not directory.is_dir():
        raise ConfigError(f"--test-data: expected a directory of the {source} data set, got "
                          f"{directory}")
    chosen = list(entities) or [e for e in _all_entities(source, directory) if e not in trained]
    if entities and (set(entities) & set(trained)):
        raise ConfigError(f"--entities: expected series the network never saw, got "
                          f"{sorted(set(entities) & set(trained))} (trained on them)")
    if entities and source == "mitdb" and set(entities) & set(DS1):
        raise ConfigError(f"--entities: expected MIT-BIH DS2 records (tests never use DS1, the "
                          f"records beat models learn from), got "
                          f"{sorted(set(entities) & set(DS1))}")
    if chosen:
        loaded = load_source(source, directory, chosen, features)
        test = [EvalSeries(s.entity, s.values, _labels_of(source, directory, s.entity,
                                                          len(s.values)), 0) for s in loaded]
        if any(abs(s.period_s - period) > 1e-9 * period for s in loaded):
            raise ConfigError(f"test data: expected the training period {period} s, got "
                              f"{sorted({s.period_s for s in loaded})}")
        what = f"{len(test)} series never seen in training, from {directory}"
    else:
        test = fallback
        what = (f"the test parts (last {split[2]:.0%}) of the training series: {directory} "
                "holds no other labelled series")
    if minutes > 0:
        n = round(minutes * 60 / period)
        test = [EvalSeries(t.entity, t.values[:t.start + n],
                           t.labels.part(0, min(t.start + n, len(t.values))), t.offset, t.start)
                for t in test]
        what += f", the first {minutes:g} min scored of each"
    return EvalData(kind, period, tuple(features), train_parts, validation, test, what,
                    str(directory))
