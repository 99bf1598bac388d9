"""Lightning glue for ``vqaudio train-ssl``: HuBERT's masked prediction (Hsu et al. 2021) of a unit model's
units with ``transformers.HubertModel``, so the trained model is a transformers model folder that every SSL
feature path (:mod:`vqaudio.units.ssl`) loads as it loads a downloaded HuBERT."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import from_dict, to_dict
from ..units.ssl import require_transformers, zero_mean_unit_var
from .config import TrainSSLConfig

IGNORE = -100  # target of frames past an utterance's end


def span_mask(batch: int, frames: int, prob: float, length: int, generator: torch.Generator | None = None) -> Tensor:
    """``(batch, frames)`` bool: per row, ``round(prob * frames / length)`` spans of ``length`` frames starting at
    distinct uniform frames in ``[0, frames - length]`` (fairseq's ``compute_mask_indices`` with a static
    length and overlaps allowed); at least one span when ``prob > 0``."""
    mask = torch.zeros(batch, frames, dtype=torch.bool)
    if prob <= 0 or frames == 0:
        return mask
    length = min(length, frames)
    starts_max = frames - length + 1
    spans = max(1, min(starts_max, round(prob * frames / length)))
    for b in range(batch):
        starts = torch.randperm(starts_max, generator=generator)[:spans]
        idx = (starts[:, None] + torch.arange(length)[None]).reshape(-1)
        mask[b, idx] = True
    return mask


class _GradScale(torch.autograd.Function):
    """Identity forward, gradient times ``scale`` backward (fairseq's ``GradMultiply``)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def hubert_config(cfg: TrainSSLConfig, sample_rate: int = 16000):
    """The ``transformers.HubertConfig`` of a :class:`TrainSSLConfig`."""
    m = cfg.model
    return require_transformers().HubertConfig(
        hidden_size=m.hidden_size,
        num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads,
        intermediate_size=m.intermediate_size,
        conv_dim=(m.conv_dim,) * 7,
        feat_extract_norm=m.feat_extract_norm,
        do_stable_layer_norm=m.feat_extract_norm == "layer",
        num_conv_pos_embeddings=m.num_conv_pos_embeddings,
        num_conv_pos_embedding_groups=m.num_conv_pos_embedding_groups,
        layerdrop=m.layerdrop,
        hidden_dropout=m.dropout,
        attention_dropout=m.dropout,
        feat_proj_dropout=m.dropout,
        activation_dropout=0.0,
        mask_time_prob=cfg.mask.prob,  # masks come from span_mask; a positive value creates masked_spec_embed
        mask_time_length=cfg.mask.length,
        apply_spec_augment=True,
    )


class SSLTask(pl.LightningModule):
    """Masked prediction: logits are the cosine between a projection of each output frame and an embedding per
    unit, over ``logit_temp``; cross-entropy on masked frames (and ``unmasked_weight`` times on the others).
    Logs ``loss`` and ``accuracy`` on masked frames (``train/``, ``val/``).

    Args:
        config: a :class:`TrainSSLConfig` as a dict.
        num_units: the target unit model's codebook size.
        targets_id: sha256 of the target unit model, recorded with the checkpoints.
    """

    def __init__(self, config: dict, num_units: int, targets_id: str = "") -> None:
        super().__init__()
        self.cfg = from_dict(TrainSSLConfig, config, where="train-ssl config")
        self.save_hyperparameters({"config": to_dict(self.cfg), "num_units": num_units, "targets_id": targets_id})
        self.hubert = require_transformers().HubertModel(hubert_config(self.cfg))
        m = self.cfg.model
        self.final_proj = nn.Linear(m.hidden_size, m.final_dim)
        self.unit_embeddings = nn.Parameter(torch.randn(num_units, m.final_dim) * m.final_dim**-0.5)
        if m.feature_grad_mult < 1.0:
            self.hubert.feature_extractor.register_forward_hook(
                lambda module, args, out: _GradScale.apply(out, m.feature_grad_mult)
            )

    def frames(self, samples: int) -> int:
        return int(self.hubert._get_feat_extract_output_lengths(torch.tensor(samples)))

    def _step(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        wav, targets = batch["wav"][:, 0], batch["targets"]  # (B, T), (B, ceil(T / hop))
        if self.hubert.config.feat_extract_norm == "layer":
            wav = zero_mean_unit_var(wav)
        n = self.frames(wav.shape[-1])
        targets = targets[:, :n].long()
        mask = span_mask(wav.shape[0], n, self.cfg.mask.prob, self.cfg.mask.length, generator).to(wav.device)
        hidden = self.hubert(wav, mask_time_indices=mask).last_hidden_state  # (B, n, H)
        proj = F.normalize(self.final_proj(hidden).float(), dim=-1)
        logits = proj @ F.normalize(self.unit_embeddings.float(), dim=-1).T / self.cfg.model.logit_temp
        valid = targets != IGNORE
        ce = F.cross_entropy(logits.transpose(1, 2), targets.masked_fill(~valid, IGNORE), reduction="none")
        masked, unmasked = mask & valid, ~mask & valid
        loss = ce[masked].sum() / masked.sum().clamp_min(1)
        if self.cfg.mask.unmasked_weight > 0:
            loss = loss + self.cfg.mask.unmasked_weight * ce[unmasked].sum() / unmasked.sum().clamp_min(1)
        accuracy = (logits.argmax(-1) == targets)[masked].float().mean() if masked.any() else loss.new_zeros(())
        return loss, accuracy

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, accuracy = self._step(batch)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/accuracy", accuracy, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        generator = torch.Generator().manual_seed(batch_idx)  # the same masks at every validation
        loss, accuracy = self._step(batch, generator)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True)
        self.log("val/accuracy", accuracy, sync_dist=True)

    def configure_optimizers(self):
        o, total = self.cfg.optim, self.cfg.trainer.max_steps
        opt = torch.optim.AdamW(self.parameters(), o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

        def schedule(step: int) -> float:
            if step < o.warmup_steps:
                return (step + 1) / o.warmup_steps
            return max(0.0, (total - step) / max(1, total - o.warmup_steps))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")
