"""The benchmark's model artifact and the network's step time against batch size.

Speed does not depend on what the weights learned, so by default the benchmark does not train:
it exports a freshly initialised (seeded) 2-layer GRU of 64 — the size the issue's figures use —
with the scaler and residual scale measured on the same real ECG it streams, and a threshold at
the 99.9th percentile of those scores. The card says so (``data.note``). ``--model`` swaps in a
trained artifact from ``seqstream train``.

Step time: one no-grad ``Forecaster.forward`` over ``B`` entities with ``T`` samples each (``T = 1``
for single-sample events, 36 for a chunk), the call the worker makes per batch, median of repeats
on one thread::

    per_sample_us(B, T) = median_time(B, T) / (B * T) * 1e6
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from stream.artifact import save_artifact
from stream.model import Forecaster

__all__ = ["make_artifact", "step_times"]


def make_artifact(directory: Path, series: list[tuple[str, np.ndarray, float]],
                  cell: str = "gru", hidden: int = 64, layers: int = 2) -> str:
    """Export the benchmark's artifact to ``directory``; return its model id."""
    torch.manual_seed(0)
    net = Forecaster(cell, n_features=1, hidden_size=hidden, num_layers=layers).eval()
    values = np.concatenate([v[:20_000] for _, v, _ in series])
    mean, std = values.mean(axis=0), values.std(axis=0)
    x = torch.from_numpy(((values[:20_000] - mean) / std).astype(np.float32))[None]
    with torch.inference_mode():
        y, _ = net(x)
    residual = (x[0, 1:] - y[0, :-1, 0]).numpy().astype(np.float64)
    scale = residual.std(axis=0)
    scores = np.sqrt(np.mean((residual / scale) ** 2, axis=-1))
    card = {
        "features": [{"name": "MLII", "unit": "mV"}],
        "scaler": {"mean": mean.tolist(), "std": std.tolist()},
        "period_s": series[0][2],
        "score": {"kind": "rms_z", "residual_scale": scale.tolist()},
        "threshold": {"value": float(np.quantile(scores, 0.999)), "quantile": 0.999},
        "data": {"records": [name for name, _, _ in series],
                 "note": "bench: untrained seeded weights; for speed measurements only"},
        "metrics": {},
    }
    return save_artifact(net, card, directory)


def step_times(net: Forecaster, shapes: list[tuple[int, int]], repeats: int = 10) -> list[dict]:
    """Median seconds of one no-grad call over ``B`` entities with ``T`` samples each, for each
    ``(B, T)`` of ``shapes`` (torch on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for b, t in shapes:
            x = torch.randn(b, t, net.n_features)
            state = net.initial_state(b)
            times = []
            with torch.inference_mode():
                net(x, state)  # warm-up
                for _ in range(repeats):
                    began = time.perf_counter()
                    net(x, state)
                    times.append(time.perf_counter() - began)
            median = float(np.median(times))
            rows.append({"batch": b, "steps": t, "seconds": median,
                         "per_sample_us": median / (b * t) * 1e6})
    finally:
        torch.set_num_threads(threads)
    return rows
