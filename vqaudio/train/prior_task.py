"""Lightning glue for the WaveNet prior: cross-entropy training on unit files, NLL and perplexity."""

from __future__ import annotations

import dataclasses
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
    """Trains :class:`WaveNetPrior`; logs ``val/nll_bits`` (bits per unit) and ``val/perplexity``.

    Args:
        config: a :class:`TrainPriorConfig` as a dict.
        codebook_size, n_q: of the units.
        speakers: speaker names by id (id 0 the unseen speaker) when ``data.speakers`` is on.
        unit_model: the checksum of the model that made the units (``units.json``), recorded in the prior.
    """

    def __init__(
        self,
        config: dict,
        codebook_size: int,
        n_q: int,
        speakers: list[str] | None = None,
        unit_model: str | None = None,
    ) -> None:
        super().__init__()
        self.cfg = from_dict(TrainPriorConfig, config, where="prior config")
        speakers = list(speakers or [])
        self.save_hyperparameters(
            {
                "config": to_dict(self.cfg),
                "codebook_size": codebook_size,
                "n_q": n_q,
                "speakers": speakers,
                "unit_model": unit_model,
            }
        )
        model = dataclasses.replace(
            self.cfg.model,
            codebook_size=codebook_size,
            n_q=n_q,
            num_speakers=len(speakers),
            speakers=speakers,
            unit_model=unit_model,
        )
        self.prior = WaveNetPrior(model)

    def _nll(self, tokens: Tensor, speakers: Tensor) -> tuple[Tensor, Tensor]:
        """Mean cross-entropy in nats over real (non-padding) units, and their count."""
        inputs = tokens.clamp_min(0)
        logits = self.prior(inputs, speakers if self.prior.speaker is not None else None)  # (B, Q, K, T)
        loss = F.cross_entropy(logits.transpose(1, 2), tokens, ignore_index=IGNORE, reduction="sum")
        count = (tokens != IGNORE).sum()
        return loss / count.clamp_min(1), count

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        tokens, speakers = batch
        if self.prior.speaker is not None and self.cfg.data.speaker_dropout > 0:
            # Speaker dropout: id 0 learns to stand for any speaker, so unseen ones have an embedding.
            drop = torch.rand(speakers.shape, device=speakers.device) < self.cfg.data.speaker_dropout
            speakers = speakers.masked_fill(drop, 0)
        loss, _ = self._nll(tokens, speakers)
        self.log("train/nll_bits", loss / math.log(2), prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        loss, count = self._nll(*batch)
        bits = loss / math.log(2)
        self.log("val/nll_bits", bits, prog_bar=True, sync_dist=True, batch_size=int(count))
        self.log("val/perplexity", torch.exp(loss), sync_dist=True, batch_size=int(count))

    def configure_optimizers(self):
        o = self.cfg.optim
        return torch.optim.AdamW(self.prior.parameters(), o.lr, weight_decay=o.weight_decay)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")
