"""Readers of recorded series into one shape: :class:`Series`, one per entity.

Every source ends as per-entity arrays of samples at a regular period, with optional per-sample
labels (``0`` normal, ``1`` anomalous, ``-1`` unknown) and, for ECG, the annotated beats:

- ``wfdb``: a WFDB directory (MIT-BIH or a user's own), signals by lead name, beats from the
  reference annotator. Beat labels follow AAMI EC57: N, L, R, e, j are normal; A, a, J, S
  (supraventricular) and V, E (ventricular) and F (fusion) are abnormal; paced and unclassifiable
  beats (/, f, Q, ?) are unknown. Each beat owns the samples from halfway after the previous R
  peak to halfway before the next, so a sample's label is its beat's.
- ``nab``: NAB CSVs (``timestamp,value``) with ``labels/combined_windows.json``; samples inside a
  labelled window are anomalous.
- ``skab``: SKAB's ``;``-separated CSVs; the ``anomaly`` column labels each row.
- ``table``: a user's CSV or Parquet in long form: an entity column, a time column (seconds or
  date-times), feature columns and optionally a 0/1 label column.

>>> s = load_wfdb(BUNDLED_MITDB, records=["100"], leads=["MLII"])[0]
>>> s.entity, s.values.shape, s.period_s, s.features
('100', (650000, 1), 0.002777777777777778, (('MLII', 'mV'),))
>>> int((s.labels == 1).sum()) > 0, len(s.beats.samples)
(True, 2273)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stream.errors import ConfigError

__all__ = [
    "AAMI_ABNORMAL",
    "AAMI_NORMAL",
    "BUNDLED_MITDB",
    "PACED_RECORDS",
    "Beats",
    "Series",
    "load_nab",
    "load_skab",
    "load_source",
    "load_table",
    "load_wfdb",
    "resolve_path",
]

BUNDLED_MITDB = Path(__file__).resolve().parent / "bundled" / "mitdb"
AAMI_NORMAL = frozenset("NLRej")
AAMI_ABNORMAL = frozenset("AaJSVEF")
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
PACED_RECORDS = ("102", "104", "107", "217")


@dataclass(frozen=True)
class Beats:
    """Annotated beats of one ECG record: R-peak sample, and whether the beat is abnormal
    (``1``), normal (``0``) or unknown (``-1``: paced or unclassifiable)."""

    samples: np.ndarray  # int64 [n]
    labels: np.ndarray  # int8 [n]
    symbols: tuple[str, ...]


@dataclass(frozen=True)
class Series:
    """One entity's recording at a regular period, in user units."""

    entity: str
    values: np.ndarray  # float64 [T, F]
    period_s: float
    features: tuple[tuple[str, str], ...]  # (name, unit) per feature
    labels: np.ndarray | None = None  # int8 [T]: 0 normal, 1 anomalous, -1 unknown
    beats: Beats | None = None
    source: str = ""


def resolve_path(raw: str | Path) -> Path:
    """``bundled:mitdb`` → the MIT-BIH subset inside the package; anything else a path."""
    text = str(raw)
    if text.startswith("bundled:"):
        name = text.split(":", 1)[1]
        path = Path(__file__).resolve().parent / "bundled" / name
        if not path.is_dir():
            raise ConfigError(f"data path: expected a bundled data set such as bundled:mitdb, "
                              f"got {text!r}")
        return path
    return Path(text).expanduser()


def _beat_extent_labels(n: int, beats: Beats) -> np.ndarray:
    """Each sample gets its beat's label; a beat owns the samples between the midpoints to its
    neighbours (the first and last beat extend to the record's ends)."""
    labels = np.full(n, -1, dtype=np.int8)
    if len(beats.samples) == 0:
        return labels
    mids = (beats.samples[:-1] + beats.samples[1:]) // 2
    edges = np.concatenate([[0], mids, [n]])
    for lo, hi, lab in zip(edges[:-1], edges[1:], beats.labels, strict=True):
        labels[lo:hi] = lab
    return labels


def load_wfdb(directory: str | Path, records: Sequence[str] | None = None,
              leads: Sequence[str] | None = None, annotator: str = "atr",
              exclude: Sequence[str] = ()) -> list[Series]:
    """WFDB records of ``directory`` (all with a ``.hea`` when ``records`` is None), signals
    picked by lead name (all when ``leads`` is None); beats and labels when the annotator's
    file is there."""
    import wfdb  # imported here: only the ECG sources need it

    directory = resolve_path(directory)
    if not directory.is_dir():
        raise ConfigError(f"data path: expected a WFDB directory, got {directory} (not found)")
    names = [str(r) for r in records] if records else sorted(
        p.stem for p in directory.glob("*.hea"))
    names = [r for r in names if r not in set(exclude)]
    if not names:
        raise ConfigError(f"data records: expected WFDB records (.hea) in {directory}, found none")
    out = []
    for name in names:
        base = directory / name
        try:
            rec = wfdb.rdrecord(str(base))
        except (FileNotFoundError, ValueError) as ex:
            raise ConfigError(f"data records: cannot read WFDB record {base} ({ex})") from ex
        want = list(leads) if leads else list(rec.sig_name)
        missing = [lead for lead in want if lead not in rec.sig_name]
        if missing:
            raise ConfigError(f"data features: record {name} has leads {rec.sig_name}, "
                              f"expected {want}")
        cols = [rec.sig_name.index(lead) for lead in want]
        values = np.asarray(rec.p_signal[:, cols], dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"data: record {name} has missing samples in {want}")
        beats, labels = None, None
        if (directory / f"{name}.{annotator}").is_file():
            ann = wfdb.rdann(str(base), annotator)
            keep = [i for i, s in enumerate(ann.symbol) if s in BEAT_SYMBOLS]
            symbols = tuple(ann.symbol[i] for i in keep)
            lab = np.array([0 if s in AAMI_NORMAL else 1 if s in AAMI_ABNORMAL else -1
                            for s in symbols], dtype=np.int8)
            beats = Beats(np.asarray(ann.sample, dtype=np.int64)[keep], lab, symbols)
            labels = _beat_extent_labels(len(values), beats)
        units = [rec.units[c] for c in cols]
        out.append(Series(name, values, 1.0 / float(rec.fs), tuple(zip(want, units, strict=True)),
                          labels, beats, f"wfdb:{directory}"))
    return out


def _regular_period(times: pd.Series, what: str) -> float:
    """The nominal sampling period (median positive step, seconds) of a time column.

    Rows are taken as consecutive samples at that period, as NAB's own detectors take them:
    recorded series have gaps and repeated stamps (NAB's traffic and ad-exchange series do),
    which are neither filled nor dropped. Times must not decrease.
    """
    if pd.api.types.is_numeric_dtype(times):
        secs = times.to_numpy(dtype=np.float64)
    else:
        try:
            stamps = pd.to_datetime(times)
        except (ValueError, TypeError) as ex:
            raise ConfigError(f"{what}: expected seconds or date-times, got {times.iloc[0]!r}"
                              ) from ex
        secs = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy()
    steps = np.diff(secs)
    if np.any(steps < 0) or not np.any(steps > 0):
        raise ConfigError(f"{what}: expected non-decreasing times spanning more than one instant")
    return float(np.median(steps[steps > 0]))


def load_nab(root: str | Path, series: Sequence[str] | None = None) -> list[Series]:
    """NAB series (``category/name.csv`` under ``root/data``; all when None) with labels from
    the windows in ``root/labels/combined_windows.json``."""
    root = resolve_path(root)
    windows_file = root / "labels" / "combined_windows.json"
    if not windows_file.is_file():
        raise ConfigError(f"data path: expected NAB's folder with labels/combined_windows.json,"
                          f" got {root}")
    windows = json.loads(windows_file.read_text())
    names = list(series) if series else sorted(
        str(p.relative_to(root / "data")) for p in (root / "data").glob("*/*.csv"))
    out = []
    for name in names:
        path = root / "data" / name
        if not path.is_file():
            raise ConfigError(f"data entities: expected a NAB series under {root / 'data'}, "
                              f"got {name!r}")
        frame = pd.read_csv(path)
        stamps = pd.to_datetime(frame["timestamp"])
        labels = np.zeros(len(frame), dtype=np.int8)
        for lo, hi in windows.get(name, []):
            labels[((stamps >= pd.Timestamp(lo)) & (stamps <= pd.Timestamp(hi))).to_numpy()] = 1
        values = frame[["value"]].to_numpy(dtype=np.float64)
        out.append(Series(name, values, _regular_period(frame["timestamp"], name),
                          (("value", ""),), labels, None, f"nab:{root}"))
    return out


SKAB_FEATURES = (("Accelerometer1RMS", "g"), ("Accelerometer2RMS", "g"), ("Current", "A"),
                 ("Pressure", "bar"), ("Temperature", "°C"), ("Thermocouple", "°C"),
                 ("Voltage", "V"), ("Volume Flow RateRMS", "L/min"))


def load_skab(root: str | Path, files: Sequence[str] | None = None,
              features: Sequence[str] | None = None) -> list[Series]:
    """SKAB experiments (``group/name.csv`` under ``root/data``; all when None)."""
    root = resolve_path(root)
    if not (root / "data").is_dir():
        raise ConfigError(f"data path: expected SKAB's folder with data/, got {root}")
    names = list(files) if files else sorted(
        str(p.relative_to(root / "data")) for p in (root / "data").glob("*/*.csv"))
    units = dict(SKAB_FEATURES)
    want = list(features) if features else list(units)
    unknown = [f for f in want if f not in units]
    if unknown:
        raise ConfigError(f"data features: expected SKAB sensors {', '.join(units)}, got "
                          f"{unknown}")
    out = []
    for name in names:
        path = root / "data" / name
        if not path.is_file():
            raise ConfigError(f"data entities: expected a SKAB file under {root / 'data'}, "
                              f"got {name!r}")
        frame = pd.read_csv(path, sep=";")
        labels = (frame["anomaly"].to_numpy().astype(np.int8) if "anomaly" in frame
                  else np.zeros(len(frame), dtype=np.int8))
        out.append(Series(name, frame[want].to_numpy(dtype=np.float64),
                          _regular_period(frame["datetime"], name),
                          tuple((f, units[f]) for f in want), labels, None, f"skab:{root}"))
    return out


def load_table(path: str | Path, entity: str | None, time: str, features: Sequence[str],
               label: str | None = None, units: Sequence[str] | None = None) -> list[Series]:
    """A user's long-form CSV or Parquet: one row per (entity, time) with feature columns.

    ``entity`` None means one entity named after the file. Rows are sorted by time within each
    entity; the period is the median time step (see :func:`_regular_period`).
    """
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"data path: expected a CSV or Parquet file, got {path} (not found)")
    try:
        frame = (pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq")
                 else pd.read_csv(path))
    except (ValueError, OSError, ImportError) as ex:
        raise ConfigError(f"data path: cannot read {path} as "
                          f"{'Parquet' if path.suffix.lower() in ('.parquet', '.pq') else 'CSV'}"
                          f" ({ex})") from ex
    needed = [c for c in (entity, time, *features, label) if c]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ConfigError(f"data columns: expected {needed} in {path}, missing {missing} "
                          f"(it has {list(frame.columns)})")
    if not features:
        raise ConfigError("data features: expected at least one feature column, got none")
    units = list(units) if units else [""] * len(features)
    if len(units) != len(features):
        raise ConfigError(f"data units: expected one per feature ({len(features)}), got {units}")
    groups = frame.groupby(entity, sort=True) if entity else [(path.stem, frame)]
    out = []
    for key, group in groups:
        group = group.sort_values(time, kind="stable")
        values = group[list(features)].to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)):
            raise ConfigError(f"data: entity {key} of {path} has missing or non-finite values "
                              f"in {list(features)}")
        labels = group[label].to_numpy().astype(np.int8) if label else None
        out.append(Series(str(key), values, _regular_period(group[time], f"{path} {key}"),
                          tuple(zip(features, units, strict=True)), labels, None,
                          f"table:{path}"))
    return out


def load_source(source: str, path: str | Path, entities: Sequence[str] = (),
                features: Sequence[str] = (), entity_column: str | None = None,
                time_column: str = "time", label_column: str | None = None,
                units: Sequence[str] = ()) -> list[Series]:
    """Dispatch on ``source`` (wfdb | mitdb | nab | skab | table). ``mitdb`` is ``wfdb`` with
    the paced records left out (their beats are neither normal nor abnormal under AAMI)."""
    if source in ("wfdb", "mitdb"):
        return load_wfdb(path, entities or None, features or None,
                         exclude=PACED_RECORDS if source == "mitdb" else ())
    if source == "nab":
        return load_nab(path, entities or None)
    if source == "skab":
        return load_skab(path, entities or None, features or None)
    if source == "table":
        series = load_table(path, entity_column, time_column, features, label_column,
                            units or None)
        chosen = [s for s in series if not entities or s.entity in set(entities)]
        if not chosen:
            raise ConfigError(f"data entities: expected some of {[s.entity for s in series]},"
                              f" got {list(entities)}")
        return chosen
    raise ConfigError(f"data source: expected one of wfdb, mitdb, nab, skab, table, got "
                      f"{source!r}")
