"""The LightningModule that trains :class:`stream.model.Forecaster` (the worker's own network).

Losses over every forecast ``x̂[t, k]`` of a window (past a burn-in of ``b`` leading steps, whose
state is still warming up from zero) against ``y[t, k]``, in scaled units:

- ``mse``: mean (x̂ - y)²;  ``mae``: mean |x̂ - y|;
- ``gaussian_nll``: mean ½(log σ² + (y - x̂)²/σ²), with log σ² from the network's variance head
  (constant ½ log 2π dropped), so the network learns how sure it is of each forecast.

Validation logs ``val_loss`` (same loss) and ``val_mae1`` (1-step MAE), which early stopping and
checkpointing monitor.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from stream.errors import ConfigError
from stream.model import Forecaster
from training.config import ModelConfig, TrainConfig

__all__ = ["ForecastModule", "build_network", "window_loss"]


def build_network(model: ModelConfig, n_features: int, loss: str) -> Forecaster:
    """The Forecaster a config describes; ``gaussian_nll`` needs (and turns on) the variance."""
    if loss == "gaussian_nll" and not model.gaussian:
        raise ConfigError("model.gaussian: expected true with train.loss gaussian_nll (the loss "
                          "needs a predicted variance), got false")
    return Forecaster(model.cell, n_features=n_features, hidden_size=model.hidden_size,
                      num_layers=model.num_layers, horizon=model.horizon,
                      dropout=model.dropout, gaussian=model.gaussian,
                      bidirectional=model.bidirectional)


def window_loss(kind: str, mean: Tensor, logvar: Tensor | None, target: Tensor,
                burn_in: int = 0) -> Tensor:
    """Mean loss over ``[B, W, H, F]`` forecasts after the first ``burn_in`` steps."""
    mean, target = mean[:, burn_in:], target[:, burn_in:]
    err = mean - target
    if kind == "mse":
        return (err * err).mean()
    if kind == "mae":
        return err.abs().mean()
    if kind == "gaussian_nll":
        if logvar is None:
            raise ConfigError("train.loss gaussian_nll: expected a network with a variance head")
        logvar = logvar[:, burn_in:].clamp(-12.0, 12.0)
        return 0.5 * (logvar + err * err * torch.exp(-logvar)).mean()
    raise ConfigError(f"train.loss: expected mse, mae or gaussian_nll, got {kind!r}")


class ForecastModule(pl.LightningModule):
    """Wraps the network; optimisation settings come from :class:`TrainConfig`."""

    def __init__(self, net: Forecaster, train: TrainConfig) -> None:
        super().__init__()
        if train.burn_in < 0:
            raise ConfigError(f"train.burn_in: expected >= 0, got {train.burn_in}")
        self.net = net
        self.cfg = train
        self.save_hyperparameters({"architecture": net.config(), "train": vars(train)})

    def forward(self, seq: Tensor) -> Tensor:
        return self.net(seq)[0]

    def _loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        if x.shape[1] <= self.cfg.burn_in:
            raise ConfigError(f"train.burn_in: expected fewer than the window's {x.shape[1]} "
                              f"samples, got {self.cfg.burn_in}")
        mean, logvar, _ = self.net.forward_dist(x)
        loss = window_loss(self.cfg.loss, mean, logvar, y, self.cfg.burn_in)
        mae1 = (mean[:, self.cfg.burn_in:, 0] - y[:, self.cfg.burn_in:, 0]).abs().mean()
        return loss, mae1

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, mae1 = self._loss(batch)
        self.log("val_loss", loss, prog_bar=True, on_epoch=True)
        self.log("val_mae1", mae1, prog_bar=True, on_epoch=True)

    def configure_optimizers(self):
        c = self.cfg
        params = self.net.parameters()
        if c.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
        elif c.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=c.lr, momentum=c.momentum,
                                  weight_decay=c.weight_decay)
        elif c.optimizer == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=c.lr, momentum=c.momentum,
                                      weight_decay=c.weight_decay)
        else:
            raise ConfigError(f"train.optimizer: expected adam, sgd or rmsprop, got "
                              f"{c.optimizer!r}")
        if c.schedule == "none":
            return opt
        if c.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, c.max_epochs))
        elif c.schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)
        elif c.schedule == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=c.gamma,
                                                               patience=max(1, c.patience // 2))
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}
        else:
            raise ConfigError(f"train.schedule: expected none, cosine, step or plateau, got "
                              f"{c.schedule!r}")
        return {"optimizer": opt, "lr_scheduler": sched}
