"""Lightning glue for the WaveNet prior: cross-entropy training on unit files, NLL and perplexity."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import from_dict, to_dict
from ..models.wavenet import WaveNetPrior
from .config import TrainPriorConfig

IGNORE = -100  # target value of padding frames


class PriorTask(pl.LightningModule):
    """Trains :class:`WaveNetPrior`; logs ``val/nll_bits`` (bits per unit) and ``val/perplexity``."""

    def __init__(self, config: dict, codebook_size: int, num_levels: int) -> None:
        super().__init__()
        self.cfg = from_dict(TrainPriorConfig, config, where="prior config")
        self.save_hyperparameters(
            {"config": to_dict(self.cfg), "codebook_size": codebook_size, "num_levels": num_levels}
        )
        m = self.cfg.model
        self.prior = WaveNetPrior(
            codebook_size, num_levels, m.residual_channels, m.skip_channels, m.layers, m.dilation_cycle
        )

    def _nll(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy in nats over real (non-padding) units, and their count."""
        inputs = tokens.clamp_min(0)
        logits = self.prior(inputs)  # (B, Q, K, T)
        loss = F.cross_entropy(logits.transpose(1, 2), tokens, ignore_index=IGNORE, reduction="sum")
        count = (tokens != IGNORE).sum()
        return loss / count.clamp_min(1), count

    def training_step(self, tokens: Tensor, batch_idx: int) -> Tensor:
        loss, _ = self._nll(tokens)
        self.log("train/nll_bits", loss / math.log(2), prog_bar=True)
        return loss

    def validation_step(self, tokens: Tensor, batch_idx: int) -> None:
        loss, count = self._nll(tokens)
        bits = loss / math.log(2)
        self.log("val/nll_bits", bits, prog_bar=True, sync_dist=True, batch_size=int(count))
        self.log("val/perplexity", torch.exp(loss), sync_dist=True, batch_size=int(count))

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(self.prior.parameters(), o.lr, weight_decay=o.weight_decay)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")
