"""Windows of recorded series for training, split in time per entity, scaled on training data.

Each entity's samples ``0 .. T`` are cut in time order: ``[0, a)`` train, ``[a, b)`` validation,
``[b, T)`` test, with ``a = round(T·p_train)``, ``b = round(T·(p_train+p_val))``. A training
window covers ``W + H`` samples (W inputs and the H samples the last input forecasts) and lies
wholly inside its part, so no validation or test sample ever reaches a gradient.

The per-feature scaler (mean, std) is fitted on the training parts only (over all entities)::

    z = (x - mean) / std

A window starting at ``s`` gives inputs ``z[s .. s+W)`` and targets
``y[t, k] = z[s+t+k+1]`` for ``t < W, k < H``. With ``train_on: normal``, only windows whose
``W + H`` samples are all labelled normal (label 0) are kept: the network learns normal dynamics
and residuals grow where the signal departs from them.

>>> windows(10, length=4, stride=3, lo=0, hi=10).tolist()
[0, 3, 6]
>>> split_points(1000, (0.7, 0.15, 0.15))
(700, 850)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from stream.errors import ConfigError
from training.sources import Series

__all__ = [
    "Scaler",
    "SeriesDataModule",
    "WindowDataset",
    "split_points",
    "windows",
]

STD_FLOOR = 1e-6


def split_points(n: int, split: Sequence[float]) -> tuple[int, int]:
    """End of the training part and of the validation part for a series of ``n`` samples."""
    if len(split) != 3 or any(p < 0 for p in split) or abs(sum(split) - 1) > 1e-6 \
            or split[0] <= 0:
        raise ConfigError(f"data split: expected three fractions (train, val, test) >= 0 "
                          f"summing to 1 with train > 0, got {list(split)}")
    a = round(n * split[0])
    b = round(n * (split[0] + split[1]))
    return a, b


def windows(n: int, length: int, stride: int, lo: int, hi: int) -> np.ndarray:
    """Start indices ``s`` with ``lo <= s`` and ``s + length <= min(hi, n)``, every ``stride``."""
    hi = min(hi, n)
    if hi - lo < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(lo, hi - length + 1, stride, dtype=np.int64)


@dataclass(frozen=True)
class Scaler:
    """Per-feature mean and std (float64) of the training parts."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, parts: Sequence[np.ndarray]) -> Scaler:
        data = np.concatenate([p for p in parts if len(p)], axis=0)
        std = data.std(axis=0)
        return cls(data.mean(axis=0), np.where(std > STD_FLOOR, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def card(self) -> dict[str, list[float]]:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}


class WindowDataset(Dataset):
    """``(inputs [W, F], targets [W, H, F])`` float32 windows of scaled series."""

    def __init__(self, scaled: Sequence[np.ndarray], starts: Sequence[tuple[int, int]],
                 length: int, horizon: int) -> None:
        self.scaled = [torch.from_numpy(s) for s in scaled]
        self.starts = list(starts)
        self.length, self.horizon = length, horizon

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        entity, s = self.starts[i]
        full = self.scaled[entity][s:s + self.length + self.horizon]
        x = full[:self.length]
        y = torch.stack([full[1 + k:1 + k + self.length] for k in range(self.horizon)], dim=1)
        return x, y


class SeriesDataModule(pl.LightningDataModule):
    """Training and validation windows over a list of :class:`Series` (all of one shape).

    ``parts`` and ``scaler`` are available right after construction: evaluation and calibration
    replay whole series with them, outside the data loaders.
    """

    def __init__(self, series: Sequence[Series], window: int, stride: int, horizon: int,
                 split: Sequence[float] = (0.7, 0.15, 0.15), train_on: str = "all",
                 batch_size: int = 32, seed: int = 0, max_windows: int = 0) -> None:
        super().__init__()
        if not series:
            raise ConfigError("data: expected at least one series, got none")
        shapes = {(s.values.shape[1], s.features) for s in series}
        if len(shapes) != 1:
            raise ConfigError(f"data: expected every entity to have the same features, got "
                              f"{sorted({s.features for s in series})}")
        if train_on not in ("all", "normal"):
            raise ConfigError(f"data train_on: expected all or normal, got {train_on!r}")
        for name, value in (("window", window), ("stride", stride), ("horizon", horizon),
                            ("batch_size", batch_size)):
            if value < 1:
                raise ConfigError(f"data {name}: expected an integer >= 1, got {value}")
        periods = {round(s.period_s, 9) for s in series}
        if len(periods) != 1:
            raise ConfigError(f"data: expected one sampling period for all entities, got "
                              f"{sorted(periods)} s")
        self.series = list(series)
        self.window, self.stride, self.horizon = window, stride, horizon
        self.split, self.train_on = tuple(split), train_on
        self.batch_size, self.seed, self.max_windows = batch_size, seed, max_windows
        self.parts = [split_points(len(s.values), split) for s in self.series]
        self.scaler = Scaler.fit([s.values[:a] for s, (a, _) in zip(self.series, self.parts,
                                                                     strict=True)])
        self.scaled = [self.scaler.transform(s.values) for s in self.series]
        span = window + horizon
        self.train_starts = self._starts(span, lambda p: (0, p[0]))
        self.val_starts = self._starts(span, lambda p: (p[0], p[1]))
        if not self.train_starts:
            raise ConfigError(f"data: no training window of {span} samples fits the training "
                              f"parts (train_on={train_on}); shorten window or add data")
        if not self.val_starts:
            raise ConfigError(f"data: no validation window of {span} samples fits the "
                              f"validation parts; shorten window or change split {list(split)}")

    @property
    def period_s(self) -> float:
        return self.series[0].period_s

    @property
    def n_features(self) -> int:
        return self.series[0].values.shape[1]

    def _starts(self, span: int, bounds) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for e, (s, part) in enumerate(zip(self.series, self.parts, strict=True)):
            lo, hi = bounds(part)
            starts = windows(len(s.values), span, self.stride, lo, hi)
            if self.train_on == "normal" and s.labels is not None and len(starts):
                bad = np.concatenate([[0], np.cumsum(s.labels != 0)])
                starts = starts[bad[starts + span] - bad[starts] == 0]
            out.extend((e, int(i)) for i in starts)
        if self.max_windows and len(out) > self.max_windows:
            rng = np.random.default_rng(self.seed)
            keep = np.sort(rng.choice(len(out), self.max_windows, replace=False))
            out = [out[i] for i in keep]
        return out

    def train_dataloader(self) -> DataLoader:
        gen = torch.Generator().manual_seed(self.seed)
        return DataLoader(WindowDataset(self.scaled, self.train_starts, self.window,
                                        self.horizon),
                          batch_size=self.batch_size, shuffle=True, generator=gen)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(WindowDataset(self.scaled, self.val_starts, self.window, self.horizon),
                          batch_size=self.batch_size, shuffle=False)

    def describe(self) -> dict:
        """What the card's ``data`` section records about the windows and split."""
        return {
            "entities": [s.entity for s in self.series],
            "source": self.series[0].source,
            "split": list(self.split),
            "train_on": self.train_on,
            "window": self.window,
            "stride": self.stride,
            "train_windows": len(self.train_starts),
            "val_windows": len(self.val_starts),
            "samples": int(sum(len(s.values) for s in self.series)),
        }
