"""PNG plots of a few test records: signal, forecast, flags and labels, with the score below;
for ECG with a beat model, also the detected beats coloured by their class.

Each plot shows ``seconds`` of one series around its densest stretch of labelled anomalies (the
start when it has none), so a reader sees what a flag looks like next to what it should catch.
Matplotlib runs headless (Agg).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqstream.evaluation.dataset import EvalSeries
from seqstream.evaluation.labels import Labels
from seqstream.evaluation.metrics import ABNORMAL

__all__ = ["BEAT_COLOURS", "CLASS_COLOURS", "pick_stretch", "plot_beats", "plot_series"]

CLASS_COLOURS = {"SVEB": "tab:orange", "VEB": "tab:red", "F": "tab:purple"}
# the beat classifier's letters, in the reference classes' colours (N grey)
BEAT_COLOURS = {"N": "tab:gray", "S": "tab:orange", "V": "tab:red", "F": "tab:purple"}


def _anomaly_samples(labels: Labels) -> np.ndarray:
    if labels.kind == "beats":
        return labels.r_peaks[np.isin(labels.classes, ABNORMAL)]
    return np.concatenate([np.arange(a, b) for a, b in labels.windows]) \
        if len(labels.windows) else np.zeros(0, np.int64)


def pick_stretch(labels: Labels, n: int, length: int, start: int = 0) -> tuple[int, int]:
    """``[lo, hi)`` of ``length`` samples (at or after ``start``) holding the most labelled
    anomalies.

    >>> pick_stretch(Labels.from_beats([10, 500, 520, 540], ["N", "VEB", "VEB", "N"]), 1000, 100)
    (450, 550)
    """
    length = min(length, n)
    marks = _anomaly_samples(labels)
    marks = marks[marks >= start]
    if len(marks) == 0:
        lo = min(start, n - length)
        return lo, lo + length
    ends = np.searchsorted(marks, marks + length // 2, side="left")
    starts = np.searchsorted(marks, marks - length // 2, side="left")
    best = int(np.argmax(ends - starts))
    lo = int(np.clip(marks[best] - length // 2, start, n - length))
    return lo, lo + length


def _stretch(series: EvalSeries, period_s: float, seconds: float, warmup: int,
             ratio: float) -> tuple[Any, Any, Any, int, int, np.ndarray]:
    """A signal-over-detail figure of the stretch :func:`pick_stretch` picks: (figure, signal
    axes, detail axes, lo, hi, seconds of each sample)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series.values)
    lo, hi = pick_stretch(series.labels, n, max(2, round(seconds / period_s)), warmup)
    fig, (ax, bx) = plt.subplots(2, 1, figsize=(12, 5.5), sharex=True,
                                 gridspec_kw={"height_ratios": [3, ratio]})
    return fig, ax, bx, lo, hi, np.arange(lo, hi) * period_s


def _reference_beats(ax: Any, labels: Labels, lo: int, hi: int, signal: np.ndarray,
                     period_s: float, size: float, name: str) -> None:
    """Ring the labelled abnormal beats in ``[lo, hi)`` in their class's colour."""
    inside = (labels.r_peaks >= lo) & (labels.r_peaks < hi)
    for cls, colour in CLASS_COLOURS.items():
        r = labels.r_peaks[inside & (labels.classes == cls)]
        if len(r):
            ax.scatter(r * period_s, signal[r], s=size, facecolors="none", edgecolors=colour,
                       lw=1.5, label=name.format(cls), zorder=3)


def _save(fig: Any, ax: Any, title: str, path: Path, loc: str, ncol: int) -> None:
    """One legend entry per label, the title, and the PNG."""
    import matplotlib.pyplot as plt

    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc=loc, fontsize=8, ncol=ncol)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_series(path: Path, series: EvalSeries, forecast: np.ndarray | None,
                scores: np.ndarray, flags: np.ndarray, threshold: float, period_s: float,
                features: Sequence[str], seconds: float, warmup: int, title: str) -> dict:
    """Draw one series' stretch to ``path``; returns what was drawn."""
    fig, ax, bx, lo, hi, t = _stretch(series, period_s, seconds, warmup, 1.4)
    ax.plot(t, series.values[lo:hi, 0], lw=0.9, color="black", label=f"signal ({features[0]})")
    if forecast is not None:
        ax.plot(t, forecast[lo:hi, 0], lw=0.8, color="tab:blue", alpha=0.8,
                label="1-step forecast")
    lab = series.labels
    if lab.kind == "beats":
        _reference_beats(ax, lab, lo, hi, series.values[:, 0], period_s, 60, "{} beat (label)")
    else:
        for a, b in lab.windows:
            if b > lo and a < hi:
                ax.axvspan(max(a, lo) * period_s, min(b, hi) * period_s, color="tab:orange",
                           alpha=0.15, label="anomaly window (label)")
    f = np.flatnonzero(flags[lo:hi]) + lo
    if len(f):
        ax.scatter(f * period_s, series.values[f, 0], s=8, color="tab:red", marker="x",
                   label="flag", zorder=4)
    bx.plot(t, scores[lo:hi], lw=0.8, color="tab:green", label="score")
    bx.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold:.3g}")
    bx.set_yscale("symlog", linthresh=1.0)
    bx.set_xlabel("seconds from the series' first streamed sample")
    bx.legend(loc="upper right", fontsize=8)
    _save(fig, ax, title, path, "upper right", 3)
    return {"file": path.name, "entity": series.entity, "from_s": lo * period_s,
            "to_s": hi * period_s, "flags": len(f)}


def plot_beats(path: Path, series: EvalSeries, beats, period_s: float, lead: int,
               lead_name: str, threshold: float, seconds: float, warmup: int,
               title: str) -> dict:
    """Draw one series' stretch with every detected beat coloured by the class the beat
    classifier gave it (``beats``: :class:`seqstream.evaluation.beateval.RecordBeats`), the
    reference abnormal beats ringed in their class's colour, flagged beats crossed, and each beat's
    ``p_abnormal`` against the threshold below; returns what was drawn."""
    fig, ax, bx, lo, hi, t = _stretch(series, period_s, seconds, warmup, 1.2)
    signal = series.values[:, lead]
    ax.plot(t, signal[lo:hi], lw=0.9, color="black", label=f"ECG ({lead_name}, mV)")
    _reference_beats(ax, series.labels, lo, hi, signal, period_s, 150, "{} (reference)")
    shown = (beats.samples >= lo) & (beats.samples < hi)
    for cls, colour in BEAT_COLOURS.items():
        r = beats.samples[shown & (beats.classes == cls)]
        if len(r):
            ax.scatter(r * period_s, signal[r], s=30, color=colour, zorder=4,
                       label=f"called {cls}")
    flagged = beats.samples[shown & beats.anomaly]
    if len(flagged):
        top = float(np.max(signal[lo:hi]))
        ax.scatter(flagged * period_s, np.full(len(flagged), top + 0.15), marker="x", s=30,
                   color="tab:red", label="flag", zorder=4)
    bx.vlines(beats.samples[shown] * period_s, 0, beats.p_abnormal[shown], color="tab:blue",
              lw=2, label="p_abnormal")
    bx.axhline(threshold, color="tab:red", lw=0.8, ls="--", label=f"threshold {threshold:.3g}")
    bx.set_ylim(0, 1.02)
    bx.set_xlabel("seconds from the record's start")
    bx.legend(loc="upper right", fontsize=8)
    _save(fig, ax, title, path, "lower right", 4)
    return {"file": path.name, "entity": series.entity, "from_s": lo * period_s,
            "to_s": hi * period_s, "beats": int(shown.sum()), "flags": len(flagged)}
