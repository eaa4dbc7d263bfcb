"""The PNG written next to an artifact: a stretch of test signal, its forecast, scores and flags.

Top panel: the first feature's signal and 1-step forecast in user units, labelled-anomalous
samples shaded, flagged samples marked. Bottom panel: the score and the threshold. The stretch is
taken around the first labelled anomaly of the test part (or its start), so a reader sees both
normal behaviour and a departure from it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_test_stretch"]


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.nonzero(edges == 1)[0], np.nonzero(edges == -1)[0], strict=True))


def plot_test_stretch(path: str | Path, *, entity: str, feature: tuple[str, str],
                      values: np.ndarray, forecast: np.ndarray, scores: np.ndarray,
                      threshold: float, labels: np.ndarray | None, period_s: float,
                      lo: int, hi: int, length: int) -> dict[str, int]:
    """Plot samples of ``[lo, hi)`` (the test part) of one entity; return the stretch drawn.

    ``values`` and ``forecast`` are one feature ``[T]`` in user units; ``forecast[t]`` is the
    1-step forecast of ``values[t]``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = lo
    if labels is not None:
        hits = np.nonzero(labels[lo:hi] == 1)[0]
        if len(hits):
            start = max(lo, lo + int(hits[0]) - length // 4)
    end = min(hi, start + length)
    t = np.arange(start, end)
    span = (end - start) * period_s
    tunit, per = next((u, d) for u, d, limit in (("s", 1, 600), ("min", 60, 6 * 3600),
                                                ("h", 3600, 5 * 86400), ("d", 86400, np.inf))
                     if span <= limit)
    secs = t * period_s / per
    flags = scores[t] > threshold
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 5.5), sharex=True,
                                      height_ratios=(2, 1))
    if labels is not None:
        for a, b in _spans(labels[t] == 1):
            for ax in (top, bottom):
                ax.axvspan(secs[a], secs[b - 1], color="tab:red", alpha=0.12, lw=0)
    top.plot(secs, values[t], color="black", lw=0.9, label="signal")
    top.plot(secs, forecast[t], color="tab:blue", lw=0.8, alpha=0.8, label="1-step forecast")
    if flags.any():
        top.scatter(secs[flags], values[t][flags], s=10, color="tab:red", zorder=3, label="flag")
    name, unit = feature
    top.set_ylabel(f"{name} ({unit})" if unit else name)
    top.set_title(f"entity {entity}: test samples {start}–{end} (shaded: labelled anomalous)")
    top.legend(loc="upper right", fontsize=8)
    bottom.plot(secs, scores[t], color="tab:purple", lw=0.8, label="score")
    bottom.axhline(threshold, color="tab:red", ls="--", lw=0.9, label=f"threshold {threshold:.3g}")
    bottom.set_yscale("log")
    bottom.set_ylabel("score (rms z)")
    bottom.set_xlabel(f"time since the recording's start ({tunit})")
    bottom.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {"start": int(start), "end": int(end)}
