"""SKAB and NAB under their own protocols: ``seqstream evaluate --test-data DIR`` on a folder in
either benchmark's layout.

- **SKAB** (``DIR/data/<group>/<n>.csv``, ``;``-separated, with ``anomaly`` and ``changepoint``
  columns): every experiment file is one entity, streamed from its first row with a fresh
  state; its first 400 rows are its anomaly-free reference (the warm-up: no flag there), as the
  leaderboard's notebooks use them. ``anomaly-free/`` is left out of the scored files. Scores:
  :mod:`seqstream.evaluation.skab_score`.
- **NAB** (``DIR/data/<category>/<name>.csv`` + ``DIR/labels/combined_windows.json``): every
  series one entity; its warm-up is NAB's probationary period (unscored by NAB); scores:
  :mod:`seqstream.evaluation.nab_score`, the three profiles normalised over the series present.

The detector is :class:`stream.sensor_score.SensorScore` (each entity's own level, scale and
threshold, from its warm-up only; nothing is fitted to any label). It writes, next to the
report, one CSV per series under ``series/`` named after the series' path with ``/`` replaced
by ``__`` (``series/valve1__3.csv``), columns ``row,score,anomaly``: one line per input row,
``row`` 0-based, ``score`` empty while the entity warms up, ``anomaly`` 0/1 what the detector
flagged, in each benchmark's unit: SKAB labels every row of a fault, so every row in an alarm
(from its first flag until ``hold`` samples after its last: flags that flicker through one
fault are one block, one pair of changepoints); NAB scores alerts (each flagged row outside a
window is one more false positive), so the rows where an alarm starts
(:class:`stream.sensor_score.SensorScore`, item 5). Another harness can score the same flags.
The SKAB report also scores, from the same run, the raw flags and the alarm onsets alone as
changepoints.

>>> series_file_name("valve1/3.csv")
'valve1__3.csv'
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from stream.errors import ConfigError

if TYPE_CHECKING:
    from stream.artifact import Artifact
    from stream.sensor_score import SensorScore

__all__ = ["BenchSeries", "Benchmark", "layout_of", "load_benchmark", "network_residuals",
           "pseudo_experiments", "run_benchmark", "series_file_name"]

SKAB_REFERENCE_ROWS = 400
SKAB_LABELS = ("anomaly", "changepoint")
# the leaderboards' published figures (SKAB README v0.9; NAB scoreboard, full corpus)
SKAB_OUTLIER_BOARD = (("Conv-AE", 0.79, 13.69, 17.77), ("MSET", 0.73, 20.82, 20.08),
                      ("LSTM-AE", 0.68, 14.24, 35.56), ("Vanilla LSTM", 0.64, 15.4, 39.93),
                      ("Isolation forest", 0.4, 6.86, 72.09))
SKAB_CP_BOARD = (("Isolation forest", 37.53, 17.09, 45.02), ("MSCRED", 28.74, 23.43, 31.21),
                 ("Vanilla LSTM", 27.09, 11.06, 32.68), ("Conv-AE", 10.09, 8.62, 10.83))
NAB_BOARD = (("ARTime", 74.9), ("Numenta HTM", 70.1), ("Random Cut Forest", 51.7))


@dataclass(frozen=True)
class BenchSeries:
    """One scored series: values in user units, row times and the benchmark's labels."""

    name: str  # path under data/
    values: np.ndarray  # [T, F]
    times_s: np.ndarray  # [T] seconds from the first row
    warmup: int
    anomaly: np.ndarray | None = None  # SKAB: [T] 0/1
    changepoint: np.ndarray | None = None  # SKAB: [T] 0/1
    windows: tuple[tuple[int, int], ...] = ()  # NAB: row windows [l, r]


@dataclass(frozen=True)
class Benchmark:
    kind: str  # "skab" | "nab"
    root: Path
    series: list[BenchSeries]


def series_file_name(name: str) -> str:
    """The CSV name of a series under ``series/``: its path with ``/`` → ``__``."""
    return name.replace("\\", "/").replace("/", "__")


def layout_of(root: Path) -> str | None:
    """``nab``, ``skab``, or None when ``root`` is in neither benchmark's layout."""
    if (root / "labels" / "combined_windows.json").is_file() and (root / "data").is_dir():
        return "nab"
    files = sorted((root / "data").glob("*/*.csv")) if (root / "data").is_dir() else []
    for f in files:
        with f.open() as fh:
            head = fh.readline().strip().split(";")
        if all(c in head for c in SKAB_LABELS):
            return "skab"
    return None


def _seconds(stamps: pd.Series, what: str) -> np.ndarray:
    try:
        t = pd.to_datetime(stamps)
    except (ValueError, TypeError) as ex:
        raise ConfigError(f"{what}: expected date-times, got {stamps.iloc[0]!r}") from ex
    secs = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    if np.any(np.diff(secs) < 0):
        raise ConfigError(f"{what}: expected non-decreasing times")
    return secs


def _load_skab(root: Path, names: list[str]) -> list[BenchSeries]:
    from training.sources import SKAB_FEATURES

    features = [f for f, _ in SKAB_FEATURES]
    out = []
    for name in names:
        frame = pd.read_csv(root / "data" / name, sep=";")
        missing = [c for c in (*features, *SKAB_LABELS, "datetime") if c not in frame]
        if missing:
            raise ConfigError(f"--test-data: expected SKAB's columns in {name}, missing {missing}")
        if len(frame) <= SKAB_REFERENCE_ROWS:
            raise ConfigError(f"--test-data: expected more than {SKAB_REFERENCE_ROWS} rows in "
                              f"{name} (its anomaly-free reference), got {len(frame)}")
        out.append(BenchSeries(name, frame[features].to_numpy(np.float64),
                               _seconds(frame["datetime"], name), SKAB_REFERENCE_ROWS,
                               anomaly=frame["anomaly"].to_numpy().astype(np.int8),
                               changepoint=frame["changepoint"].to_numpy().astype(np.int8)))
    return out


def _load_nab(root: Path, names: list[str]) -> list[BenchSeries]:
    from seqstream.evaluation.nab_score import probation_rows, windows_from_stamps

    labels = json.loads((root / "labels" / "combined_windows.json").read_text())
    out = []
    for name in names:
        frame = pd.read_csv(root / "data" / name)
        if "timestamp" not in frame or "value" not in frame:
            raise ConfigError(f"--test-data: expected NAB's columns timestamp,value in {name}, "
                              f"got {list(frame.columns)}")
        if name not in labels:
            raise ConfigError(f"--test-data: {name} has no entry in labels/"
                              "combined_windows.json")
        out.append(BenchSeries(name, frame[["value"]].to_numpy(np.float64),
                               _seconds(frame["timestamp"], name), probation_rows(len(frame)),
                               windows=tuple(windows_from_stamps(frame["timestamp"],
                                                                 labels[name]))))
    return out


def load_benchmark(root: str | Path, entities: list[str] | None = None) -> Benchmark:
    """The scored series of the benchmark folder ``root`` (all, or ``entities``)."""
    root = Path(root).expanduser()
    kind = layout_of(root)
    if kind is None:
        raise ConfigError(f"--test-data: expected SKAB's data/<group>/<n>.csv or NAB's "
                          f"data/<category>/<name>.csv + labels/, got {root}")
    names = sorted(str(p.relative_to(root / "data")).replace("\\", "/")
                   for p in (root / "data").glob("*/*.csv"))
    if kind == "skab":
        names = [n for n in names if not n.startswith("anomaly-free/")]
    if entities:
        unknown = sorted(set(entities) - set(names))
        if unknown:
            raise ConfigError(f"--entities: expected series of {root}, got {unknown}")
        names = [n for n in names if n in set(entities)]
    series = _load_skab(root, names) if kind == "skab" else _load_nab(root, names)
    return Benchmark(kind, root, series)


def _write_series(out: Path, s: BenchSeries, scores: np.ndarray, flags: np.ndarray) -> None:
    frame = pd.DataFrame({"row": np.arange(len(scores)), "score": scores,
                          "anomaly": flags.astype(np.int8)})
    frame.to_csv(out / series_file_name(s.name), index=False, float_format="%.6g")


def _skab_metrics(bench: Benchmark, flags: list[np.ndarray], alarms: list[np.ndarray],
                  onsets: list[np.ndarray]) -> dict[str, Any]:
    """The headline: outliers from the rows in an alarm, changepoints from the alarms' edges
    (one pair per alarm); beside it, from the same run, the raw flags (outliers and their
    edges) and the alarm onsets alone as changepoints."""
    from seqstream.evaluation.skab_score import changepoint_score, outlier_counts

    truth = [s.anomaly for s in bench.series]
    times, cps = [s.times_s for s in bench.series], [s.changepoint for s in bench.series]
    return {"outlier": outlier_counts(truth, alarms).summary(),
            "changepoint_nab": changepoint_score(times, cps, alarms),
            "outlier_flags": outlier_counts(truth, flags).summary(),
            "changepoint_nab_flags": changepoint_score(times, cps, flags),
            "changepoint_nab_onsets": changepoint_score(times, cps, onsets, given=True)}


def _nab_metrics(bench: Benchmark, flags: list[np.ndarray]) -> dict[str, Any]:
    from seqstream.evaluation.nab_score import PROFILES, normalised, score_series

    out: dict[str, Any] = {}
    for profile in PROFILES:
        per = [score_series(f, s.windows, profile) for s, f in zip(bench.series, flags,
                                                                    strict=True)]
        out[profile.name] = normalised(per)
        if profile is PROFILES[0]:
            out["windows"] = sum(p.tp + p.fn for p in per)
            out["detected"] = sum(p.tp for p in per)
            out["false_positive_rows"] = sum(p.fp for p in per)
    return out


def markdown(results: dict[str, Any]) -> str:
    """The report's tables, leaderboard figures beside ours."""
    m = results["metrics"]
    lines = [f"Detector: {results['detector']}. Data: {results['series']} series of "
             f"{results['root']} ({results['kind'].upper()}), {results['rows']} rows.", ""]
    if results["kind"] == "skab":
        o = m["outlier"]
        lines += ["Outlier detection (pooled over all files, every row):", "",
                  "| detector | F1 | FAR, % | MAR, % |", "|---|---:|---:|---:|",
                  f"| **seqstream** | **{o['f1']:.2f}** | **{o['far_pct']:.2f}** | "
                  f"**{o['mar_pct']:.2f}** |"]
        lines += [f"| {n} (leaderboard) | {f1} | {far} | {mar} |"
                  for n, f1, far, mar in SKAB_OUTLIER_BOARD]
        cp = m["changepoint_nab"]
        lines += ["", "Changepoint detection (NAB score, 30 s window):", "",
                  "| detector | NAB (standard) | NAB (low FP) | NAB (low FN) |",
                  "|---|---:|---:|---:|",
                  f"| **seqstream** | **{cp['standard']:.2f}** | "
                  f"**{cp['reward_low_FP_rate']:.2f}** | **{cp['reward_low_FN_rate']:.2f}** |"]
        lines += [f"| {n} (leaderboard) | {a} | {b} | {c} |" for n, a, b, c in SKAB_CP_BOARD]
        f, fc, on = m["outlier_flags"], m["changepoint_nab_flags"], m["changepoint_nab_onsets"]
        lines += ["", "The same run scored otherwise: the raw flags as outliers F1 "
                  f"{f['f1']:.2f}, FAR {f['far_pct']:.2f} %, MAR {f['mar_pct']:.2f} %; their "
                  f"edges as changepoints NAB {fc['standard']:.2f} / "
                  f"{fc['reward_low_FP_rate']:.2f} / {fc['reward_low_FN_rate']:.2f}; the alarm "
                  f"onsets alone {on['standard']:.2f} / {on['reward_low_FP_rate']:.2f} / "
                  f"{on['reward_low_FN_rate']:.2f} (standard / low FP / low FN)."]
    else:
        lines += ["| detector | standard | low FP | low FN |", "|---|---:|---:|---:|",
                  f"| **seqstream** ({results['series']} series here) | "
                  f"**{m['standard']:.1f}** | **{m['reward_low_FP_rate']:.1f}** | "
                  f"**{m['reward_low_FN_rate']:.1f}** |"]
        lines += [f"| {n} (NAB scoreboard, 58 series, threshold tuned on them) | {v} | | |"
                  for n, v in NAB_BOARD]
        lines += ["", f"Windows detected: {m['detected']} of {m['windows']}; flagged rows "
                  f"outside every window (after the probation): {m['false_positive_rows']}."]
    return "\n".join(lines) + "\n"


def network_residuals(artifact: Artifact, series: list[BenchSeries], scale_input: bool
                      ) -> list[np.ndarray]:
    """Each series' 1-step forecast residuals (the network's scaled units) from the end of the
    first half of its warm-up on: the network sees the series re-centred on its own level (and,
    with ``scale_input``, re-scaled by its own spread) learnt on that first half, in the
    artifact's units, so one artifact serves entities of any level. Row ``i`` of the result is
    the residual of input row ``warmup // 2 + 1 + i``."""
    from stream.offline import replay_many

    mean = np.asarray(artifact.card["scaler"]["mean"], dtype=np.float64)
    std = np.asarray(artifact.card["scaler"]["std"], dtype=np.float64)
    inputs = []
    for s in series:
        head = s.values[:s.warmup // 2]
        level = head.mean(axis=0)
        spread = np.maximum(head.std(axis=0, ddof=1), 1e-9) if scale_input else std
        inputs.append((s.values[s.warmup // 2:] - level) / spread * std + mean)
    return [r.residuals[1:] for r in replay_many(artifact, inputs, entity_scale=False)]


PSEUDO_ROWS = 1150  # about one SKAB experiment


def pseudo_experiments(root: str | Path, score: SensorScore | None = None) -> dict[str, Any]:
    """The share of rows the score flags after the warm-up in SKAB's anomaly-free run, cut into
    ``PSEUDO_ROWS``-row pseudo-experiments every ``PSEUDO_ROWS // 2`` rows, each a fresh
    entity: every flag there is false, the one figure a choice may look at (the scored files'
    labels stay unseen)."""
    from stream.sensor_score import SensorScore
    from training.sources import SKAB_FEATURES

    path = Path(root).expanduser() / "data" / "anomaly-free" / "anomaly-free.csv"
    if not path.is_file():
        raise ConfigError(f"--pseudo-experiments: expected SKAB's {path}")
    values = pd.read_csv(path, sep=";")[[f for f, _ in SKAB_FEATURES]].to_numpy(np.float64)
    score = score or SensorScore(warmup=SKAB_REFERENCE_ROWS)
    step = PSEUDO_ROWS // 2
    pieces = [values[s:s + PSEUDO_ROWS] for s in range(0, len(values) - PSEUDO_ROWS + 1, step)]
    shares = [float(r.flags[score.warmup:].mean()) for r in score.run_many(pieces)]
    return {"pieces": len(pieces), "flagged_pct": 100 * float(np.mean(shares)),
            "max_pct": 100 * max(shares)}


def run_benchmark(root: str | Path, out: str | Path, entities: list[str] | None = None,
                  model: str | Path | None = None, score: SensorScore | None = None
                  ) -> dict[str, Any]:
    """Stream every series of the benchmark folder ``root`` through the sensor score, write
    ``series/*.csv``, ``report.json`` and ``report.md`` under ``out``; return the results.

    The score reads the values (``score``: its settings, or the defaults); with ``model``
    whose card has ``score.sensor``, exactly as the worker serving it does; with another
    ``model``, its 1-step residuals beside the values."""
    from stream.artifact import load_artifact
    from stream.sensor_score import SensorScore

    started = time.perf_counter()
    bench = load_benchmark(root, entities)
    detector = score or SensorScore(warmup=SKAB_REFERENCE_ROWS)
    artifact = None if model is None else load_artifact(model)
    served = None if artifact is None else SensorScore.from_card(artifact.card)
    if served is not None and score is not None:
        raise ConfigError("--sensor-score: expected none with a model whose card has "
                          "score.sensor (the card's settings are what its worker flags with)")
    width = bench.series[0].values.shape[1] if bench.series else 0
    if artifact is not None and artifact.n_features != width:
        raise ConfigError(f"--model: expected a network of the benchmark's {width} features, "
                          f"got one of {artifact.n_features}")
    if artifact is None:
        inputs, skip, what = [s.values for s in bench.series], [0] * len(bench.series), "values"
    elif served is not None:
        # what the worker serving this card flags: its score over the scaled samples, its
        # warm-up for every entity
        detector, skip = served, [0] * len(bench.series)
        inputs = [artifact.scale(s.values) for s in bench.series]
        what = f"values, as the worker serving {artifact.model_id[:12]} scores them"
        bench = Benchmark(bench.kind, bench.root, [dataclasses.replace(s, warmup=served.warmup)
                                                   for s in bench.series])
    else:
        residuals = network_residuals(artifact, bench.series, scale_input=bench.kind == "nab")
        skip = [s.warmup // 2 + 1 for s in bench.series]
        # residuals see what breaks the network's normal dynamics, the values themselves
        # (on the entity's own adapting level) a sustained shift the network soon follows
        inputs = [np.c_[r, s.values[k:]] for r, s, k in zip(residuals, bench.series, skip,
                                                             strict=True)]
        what = f"1-step residuals of network {artifact.model_id[:12]} and the values"
    runs = detector.run_many(inputs, [s.warmup - k for s, k in zip(bench.series, skip,
                                                                     strict=True)])
    scores, flags, alarms, onsets = [], [], [], []
    for r, k in zip(runs, skip, strict=True):
        scores.append(np.r_[np.full(k, np.nan), r.scores])
        flags.append(np.r_[np.zeros(k, dtype=bool), r.flags])
        alarms.append(np.r_[np.zeros(k, dtype=bool), r.alarms])
        onsets.append(np.r_[np.zeros(k, dtype=bool), r.onsets])
    # what the CSVs carry and the headline figures score: SKAB's rows in an alarm, NAB's
    # alarm onsets
    predictions = alarms if bench.kind == "skab" else onsets
    out = Path(out)
    (out / "series").mkdir(parents=True, exist_ok=True)
    for s, sc, p in zip(bench.series, scores, predictions, strict=True):
        _write_series(out / "series", s, sc, p)
    metrics = (_skab_metrics(bench, flags, alarms, onsets) if bench.kind == "skab"
               else _nab_metrics(bench, onsets))
    results = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": bench.kind, "root": str(root), "series": len(bench.series),
        "rows": int(sum(len(s.values) for s in bench.series)),
        "model": None if model is None else str(model),
        "detector": (f"seqstream sensor score over the {what} (stream.sensor_score: half-lives "
                     f"{detector.half_lives} samples, margin {detector.margin:.3g}, "
                     f"MEWMA {'on' if detector.mean_shift else 'off'}, correlation shrinkage "
                     f"{detector.shrinkage:g}, level/scale adapting with half-life "
                     f"{detector.adapt_half_life:g} samples (flagged: "
                     f"{detector.flagged_adapt_half_life or 'never'}); warm-up "
                     + ("400 rows per file" if bench.kind == "skab" else "NAB's probation")
                     + ")"),
        "metrics": metrics,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "report.md").write_text(markdown(results))
    return results
