"""The LightningModule's losses, optimizers and schedules, and every cell training end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from stream.artifact import load_artifact
from stream.errors import ConfigError
from training.config import ModelConfig, TrainConfig, load_config
from training.fit import fit
from training.module import ForecastModule, build_network, window_loss


def test_losses_match_torch_definitions() -> None:
    gen = torch.Generator().manual_seed(0)
    mean, target = torch.randn(4, 10, 2, 3, generator=gen), torch.randn(4, 10, 2, 3,
                                                                         generator=gen)
    logvar = torch.randn(4, 10, 2, 3, generator=gen) * 0.5
    b = 3
    assert torch.allclose(window_loss("mse", mean, None, target, b),
                          F.mse_loss(mean[:, b:], target[:, b:]))
    assert torch.allclose(window_loss("mae", mean, None, target, b),
                          F.l1_loss(mean[:, b:], target[:, b:]))
    assert torch.allclose(window_loss("gaussian_nll", mean, logvar, target, b),
                          F.gaussian_nll_loss(mean[:, b:], target[:, b:], logvar[:, b:].exp()))
    with pytest.raises(ConfigError, match="variance head"):
        window_loss("gaussian_nll", mean, None, target)


@pytest.mark.parametrize(("optimizer", "schedule", "opt_cls", "sched_cls"), [
    ("adam", "cosine", torch.optim.Adam, torch.optim.lr_scheduler.CosineAnnealingLR),
    ("sgd", "step", torch.optim.SGD, torch.optim.lr_scheduler.StepLR),
    ("rmsprop", "plateau", torch.optim.RMSprop, torch.optim.lr_scheduler.ReduceLROnPlateau),
    ("adam", "none", torch.optim.Adam, None),
])
def test_optimizers_and_schedules(optimizer, schedule, opt_cls, sched_cls) -> None:
    cfg = TrainConfig(optimizer=optimizer, schedule=schedule, lr=0.01)
    module = ForecastModule(build_network(ModelConfig(), 1, "mse"), cfg)
    got = module.configure_optimizers()
    opt = got if sched_cls is None else got["optimizer"]
    assert isinstance(opt, opt_cls) and opt.param_groups[0]["lr"] == 0.01
    if sched_cls is not None:
        sched = got["lr_scheduler"]
        sched = sched["scheduler"] if isinstance(sched, dict) else sched
        assert isinstance(sched, sched_cls)


def test_gaussian_loss_needs_the_variance_head_and_bidirectional_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"model\.gaussian"):
        build_network(ModelConfig(gaussian=False), 1, "gaussian_nll")
    with pytest.raises(ConfigError, match="future samples"):
        build_network(ModelConfig(bidirectional=True), 1, "mse")


@pytest.mark.slow
@pytest.mark.parametrize(("cell", "loss", "optimizer"), [
    ("rnn", "mae", "sgd"), ("lstm", "gaussian_nll", "rmsprop"), ("gru", "mse", "adam")])
def test_every_cell_trains_and_exports(tmp_path: Path, cell: str, loss: str,
                                       optimizer: str) -> None:
    cfg = load_config("ecg-bundled", {
        "data_entities": "106", "data_window": "180", "data_max_windows": "64",
        "model_cell": cell, "model_hidden_size": "8", "model_num_layers": "2",
        "model_horizon": "3", "model_gaussian": str(loss == "gaussian_nll"),
        "train_loss": loss, "train_optimizer": optimizer, "train_lr": "0.01",
        "train_max_epochs": "2", "train_limit_train_batches": "2",
        "train_limit_val_batches": "1", "train_burn_in": "20", "train_progress_bar": "false",
        "train_threads": "1", "output": str(tmp_path / cell)})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, split=(0.8, 0.1, 0.1)))
    result = fit(cfg)
    art = load_artifact(tmp_path / cell)
    assert art.model_id == result.model_id
    assert art.card["architecture"]["cell"] == cell and art.model.horizon == 3
    assert art.card["architecture"]["gaussian"] == (loss == "gaussian_nll")
    report = json.loads((tmp_path / cell / "report.json").read_text())
    assert report["training"]["epochs"] >= 1
    assert (tmp_path / cell / "checkpoints" / "best.ckpt").is_file()
