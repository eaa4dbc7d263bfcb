"""The simple detectors a user could run instead, scored on the same samples as the network.

Each detector turns one series ``x`` (``[T, F]``, user units) into a causal score per sample (a
score at ``t`` uses samples ``<= t`` only; NaN where it is not defined yet), starting fresh on
every series as the worker does for a new entity. Fixed scales come from the training parts
(:meth:`Detector.fit`); thresholds are chosen afterwards on validation scores, the same way for
every detector (:mod:`seqstream.evaluation.thresholds`). Features are combined by root mean square,
as :mod:`stream.scoring` combines the network's residuals.

- ``persistence_z``: the residual of persistence, ``r_t = x_t - x_{t-1}``, as a z-score with the
  mean and std of training residuals: ``z_t,f = (r_t,f - μ_f) / σ_f``.
- ``rolling_z``: ``z_t,f = (x_t,f - m_t,f) / s_t,f`` with mean and std of the previous ``w``
  samples (``w`` = 1 s of signal by default, at least 30 samples).
- ``hst``: River's ``HalfSpaceTrees`` (Tan et al. 2011) on ``(x_t, x_t - x_{t-1})`` per feature,
  min-max scaled to [0, 1] with the training parts' 0.1 % and 99.9 % quantiles (HST expects
  inputs in the unit cube); ``score_one`` before ``learn_one``.
- ``pad``: River's ``PredictiveAnomalyDetection`` (Laptev et al. 2015) around an online linear
  AR model (River's ``StandardScaler | LinearRegression`` on the last ``lags`` samples, in
  training-scaled units; plain SGD at 0.003: at 0.01 it diverges on 360 Hz ECG, whose lags are
  nearly collinear), one per feature, the largest score over features. River clips its score
  at 1 (squared error at or above ``mean + n_std·std`` of past squared errors); here the ratio is
  kept unclipped so a threshold can be tuned above that point (otherwise every sample past it
  would tie at 1).

River is imported only when a River detector runs (``pip install river``).

>>> x = np.array([[0.0], [1.0], [2.0], [10.0]])
>>> PersistenceZ().fit([np.array([[0.0], [1.0], [3.0]])]).scores(x).round(2).tolist()
[nan, 1.0, 1.0, 13.0]
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from stream.errors import ConfigError

__all__ = ["BASELINES", "Detector", "HalfSpaceTreesDetector", "PersistenceZ",
           "PredictiveDetector", "RollingZ", "make_baselines"]

STD_FLOOR = 1e-9


def _rms(z: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(z * z, axis=-1))


class Detector(ABC):
    """A causal anomaly score per sample, fresh state per series."""

    name: str = ""
    label: str = ""

    def fit(self, train: Sequence[np.ndarray]) -> Detector:
        """Learn fixed scales from the training parts (user units)."""
        return self

    @abstractmethod
    def scores(self, values: np.ndarray) -> np.ndarray:
        """``[T]`` scores of one series ``[T, F]``; NaN where undefined."""


class PersistenceZ(Detector):
    name, label = "persistence_z", "persistence-residual z-score"

    def fit(self, train: Sequence[np.ndarray]) -> PersistenceZ:
        d = np.concatenate([np.diff(np.asarray(p, dtype=np.float64), axis=0) for p in train])
        if len(d) < 2:
            raise ConfigError("persistence_z: expected training parts of 2+ samples")
        self.mean = d.mean(axis=0)
        self.std = np.maximum(d.std(axis=0), STD_FLOOR)
        return self

    def scores(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        out = np.full(len(x), np.nan)
        out[1:] = _rms((np.diff(x, axis=0) - self.mean) / self.std)
        return out


class RollingZ(Detector):
    name, label = "rolling_z", "rolling z-score"

    def __init__(self, window: int = 360) -> None:
        if window < 2:
            raise ConfigError(f"rolling_z window: expected >= 2 samples, got {window}")
        self.window = window

    def fit(self, train: Sequence[np.ndarray]) -> RollingZ:
        data = np.concatenate([np.asarray(p, dtype=np.float64) for p in train])
        self.center = data.mean(axis=0)
        self.floor = np.maximum(data.std(axis=0), 1.0) * 1e-6
        return self

    def scores(self, values: np.ndarray) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64) - self.center  # centred: cumsums stay exact
        w, n = self.window, len(x)
        out = np.full(n, np.nan)
        if n <= w:
            return out
        c1 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        c2 = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x * x, axis=0)])
        s1 = c1[w:n] - c1[:n - w]  # sums over x[t-w .. t-1] for t = w .. n-1
        s2 = c2[w:n] - c2[:n - w]
        m = s1 / w
        var = np.maximum(s2 / w - m * m, 0.0)
        sd = np.maximum(np.sqrt(var * w / (w - 1)), self.floor)
        out[w:] = _rms((x[w:] - m) / sd)
        return out


class HalfSpaceTreesDetector(Detector):
    name, label = "hst", "River HalfSpaceTrees"

    def __init__(self, n_trees: int = 10, height: int = 8, window_size: int = 250,
                 seed: int = 0) -> None:
        self.n_trees, self.height, self.window_size, self.seed = n_trees, height, window_size, seed

    def fit(self, train: Sequence[np.ndarray]) -> HalfSpaceTreesDetector:
        feats = np.concatenate([_features(np.asarray(p, dtype=np.float64)) for p in train])
        self.lo = np.quantile(feats, 0.001, axis=0)
        self.span = np.maximum(np.quantile(feats, 0.999, axis=0) - self.lo, STD_FLOOR)
        return self

    def scores(self, values: np.ndarray) -> np.ndarray:
        anomaly = _river("anomaly")
        x = np.asarray(values, dtype=np.float64)
        feats = np.clip((_features(x) - self.lo) / self.span, 0.0, 1.0)
        keys = [f"f{i}" for i in range(feats.shape[1])]
        model = anomaly.HalfSpaceTrees(n_trees=self.n_trees, height=self.height,
                                       window_size=self.window_size, seed=self.seed)
        out = np.full(len(x), np.nan)
        score, learn = model.score_one, model.learn_one
        for t, row in enumerate(feats.tolist(), start=1):
            sample = dict(zip(keys, row, strict=True))
            out[t] = score(sample)
            learn(sample)
        return out


class PredictiveDetector(Detector):
    name, label = "pad", "River PredictiveAnomalyDetection"

    def __init__(self, lags: int = 8, n_std: float = 3.0, warmup: int = 360,
                 lr: float = 0.003) -> None:
        self.lags, self.n_std, self.warmup, self.lr = lags, n_std, warmup, lr

    def fit(self, train: Sequence[np.ndarray]) -> PredictiveDetector:
        data = np.concatenate([np.asarray(p, dtype=np.float64) for p in train])
        self.mean = data.mean(axis=0)
        self.std = np.maximum(data.std(axis=0), STD_FLOOR)
        return self

    def scores(self, values: np.ndarray) -> np.ndarray:
        z = (np.asarray(values, dtype=np.float64) - self.mean) / self.std
        per_feature = [self._one(z[:, f]) for f in range(z.shape[1])]
        return np.max(np.stack(per_feature), axis=0)

    def _one(self, z: np.ndarray) -> np.ndarray:
        anomaly, linear_model, optim, preprocessing = (
            _river(m) for m in ("anomaly", "linear_model", "optim", "preprocessing"))
        model = _unclipped_pad(anomaly)(
            preprocessing.StandardScaler()
            | linear_model.LinearRegression(optimizer=optim.SGD(self.lr), clip_gradient=100.0),
            horizon=1, n_std=self.n_std, warmup_period=self.warmup)
        k = self.lags
        out = np.full(len(z), np.nan)
        keys = [f"lag{i}" for i in range(1, k + 1)]
        values = z.tolist()
        for t in range(k, len(z)):
            sample = dict(zip(keys, values[t - k:t][::-1], strict=True))
            y = values[t]
            out[t] = model.score_one(sample, y)
            model.learn_one(sample, y)
        return out


def _features(x: np.ndarray) -> np.ndarray:
    """``[x_t, x_t - x_{t-1}]`` for t = 1 .. T-1."""
    return np.concatenate([x[1:], np.diff(x, axis=0)], axis=1)


def _river(module: str):
    import importlib

    try:
        return importlib.import_module(f"river.{module}")
    except ModuleNotFoundError as ex:
        raise ConfigError("River baselines: expected the river package (pip install river), "
                          "it is not installed") from ex


_PAD_CLASS: list[type] = []


def _unclipped_pad(anomaly) -> type:
    """River's PredictiveAnomalyDetection whose score is the squared error over River's own
    dynamic threshold, without River's clip at 1."""
    if _PAD_CLASS:
        return _PAD_CLASS[0]

    class UnclippedPAD(anomaly.PredictiveAnomalyDetection):
        def score_one(self, x: dict, y: float) -> float:
            y_pred = self.predictive_model.predict_one(x)
            squared_error = (y_pred - y) ** 2
            threshold = self.dynamic_mae.get() + self.n_std * math.sqrt(
                self.dynamic_se_variance.get())
            if self.iter < self.warmup_period:
                return 0.0
            self.dynamic_mae.update(squared_error)
            self.dynamic_se_variance.update(squared_error)
            return squared_error / threshold if threshold > 0 else 0.0

    _PAD_CLASS.append(UnclippedPAD)
    return UnclippedPAD


BASELINES = ("persistence_z", "rolling_z", "hst", "pad")


def make_baselines(names: Sequence[str], period_s: float, warmup: int) -> list[Detector]:
    """Detectors by name; windows in samples follow the sampling period (1 s, >= 30 samples)."""
    window = max(30, round(1.0 / period_s))
    makers = {"persistence_z": PersistenceZ, "rolling_z": lambda: RollingZ(window),
              "hst": HalfSpaceTreesDetector, "pad": lambda: PredictiveDetector(warmup=warmup)}
    unknown = [n for n in names if n not in makers]
    if unknown:
        raise ConfigError(f"--baselines: expected some of {', '.join(BASELINES)}, got "
                          f"{', '.join(unknown)}")
    return [makers[n]() for n in names]
