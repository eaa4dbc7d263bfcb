"""The LightningModule that trains :class:`stream.beatnet.BeatNet` on windows of beat sequences.

Loss per window ``[B, T]`` of beats with AAMI labels ``y ∈ {0:N, 1:S, 2:V, 3:F}`` (``-1`` =
ignored: Q beats and detections that match no reference beat)::

    loss = CE_w(logits, y) + BCE_w(p_abnormal, y > 0)

both averaged over the labelled beats; ``CE_w`` weights class ``c`` by ``w_c`` and ``BCE_w``
weights abnormal beats by ``pos_weight`` (inverse frequency to the power ½ on the training
beats, so the rare S and F classes count without the network flagging everything).
Training adds Gaussian noise of std ``noise`` to the standardised features (a patient the network
never saw is a shifted feature distribution; noise keeps it from relying on fine detail of the
training patients' beats). Validation logs ``val_loss``; the fit keeps the weights of the best
one.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from stream.beatnet import BeatNet

__all__ = ["BeatModule", "beat_loss"]


def beat_loss(logits: Tensor, abn: Tensor, y: Tensor, class_weight: Tensor,
              pos_weight: Tensor) -> Tensor:
    """Weighted class cross-entropy + weighted abnormality BCE over the beats with ``y >= 0``."""
    keep = y >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits[keep], y[keep], weight=class_weight)
    bce = F.binary_cross_entropy_with_logits(abn[keep], (y[keep] > 0).to(abn.dtype),
                                             pos_weight=pos_weight)
    return ce + bce


class BeatModule(pl.LightningModule):
    """Wraps the beat network (the plain ``nn.Module`` the worker runs)."""

    def __init__(self, net: BeatNet, class_weight: list[float], pos_weight: float,
                 lr: float = 3e-3, weight_decay: float = 1e-4, max_epochs: int = 20,
                 noise: float = 0.0) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("class_weight", torch.tensor(class_weight, dtype=torch.float32))
        self.register_buffer("pos_weight", torch.tensor([pos_weight], dtype=torch.float32))
        self.lr, self.weight_decay, self.max_epochs = lr, weight_decay, max_epochs
        self.noise = noise
        self.save_hyperparameters({"architecture": net.config(), "class_weight": class_weight,
                                   "pos_weight": pos_weight, "lr": lr,
                                   "weight_decay": weight_decay, "noise": noise})

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        logits, abn, _ = self.net(x)
        return beat_loss(logits, abn, y, self.class_weight, self.pos_weight)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.noise:
            x = x + self.noise * torch.randn_like(x)
        loss = self._loss((x, y))
        self.log("train_loss", loss, prog_bar=True, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True, on_epoch=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.max_epochs))
        return {"optimizer": opt, "lr_scheduler": sched}
