"""Lightning glue for unit-vocoder training: the codec's GAN recipe (manual optimisation, discriminators,
reconstruction losses) around a :class:`~vqaudio.models.vocoder.Vocoder`."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import from_dict, to_dict
from ..features import MelSpectrogram
from ..models.vocoder import Vocoder
from .config import TrainVocoderConfig
from .discriminators import Discriminators, discriminator_loss, feature_matching_loss, generator_adversarial_loss
from .losses import MultiResolutionSTFTLoss, MultiScaleMelLoss


class VocoderTask(pl.LightningModule):
    """Trains a :class:`Vocoder` with L1, multi-resolution STFT and multi-scale mel losses, and (from
    ``loss.adversarial_start``) the codec's discriminators with feature matching.

    Batches are dicts: ``units`` ``(B, S, T')``, ``wav`` ``(B, 1, T' * hop)``, and as the config asks
    ``speaker`` (table indices ``(B,)``, reference waveforms ``(B, 1, R)`` or embeddings ``(B, E)``) and
    ``f0`` ``(B, T')`` bins. ``gen_steps`` (a buffer, so it is checkpointed) counts vocoder updates; training
    stops when it reaches ``trainer.max_steps``.
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.cfg = from_dict(TrainVocoderConfig, config, where="train config")
        self.save_hyperparameters({"config": to_dict(self.cfg)})  # plain dict: loads with weights_only=True
        self.automatic_optimization = False
        self.vocoder = Vocoder(self.cfg.model)
        d = self.cfg.discriminator
        self.disc = Discriminators(d.periods, d.period_channels, d.n_ffts, d.stft_channels)
        lc, sr = self.cfg.loss, self.cfg.model.sample_rate
        self.mel_loss = MultiScaleMelLoss(sr, lc.mel_windows, lc.mel_bands)
        self.stft_loss = MultiResolutionSTFTLoss(lc.stft_fft_sizes)
        self.val_mel = MelSpectrogram(sr, n_fft=1024, hop=256, n_mels=80)
        self.register_buffer("gen_steps", torch.zeros((), dtype=torch.long))

    def configure_optimizers(self):
        o = self.cfg.optim
        opt_g = torch.optim.AdamW(self.vocoder.parameters(), o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
        opt_d = torch.optim.AdamW(self.disc.parameters(), o.disc_lr, betas=tuple(o.betas), weight_decay=o.weight_decay)

        def schedule(step: int) -> float:
            warm = min(1.0, (step + 1) / o.warmup_steps) if o.warmup_steps > 0 else 1.0
            return warm * o.lr_decay**step

        return [opt_g, opt_d], [
            torch.optim.lr_scheduler.LambdaLR(opt_g, schedule),
            torch.optim.lr_scheduler.LambdaLR(opt_d, schedule),
        ]

    @property
    def adversarial(self) -> bool:
        return int(self.gen_steps) >= self.cfg.loss.adversarial_start

    def _generate(self, batch: dict) -> Tensor:
        return self.vocoder(batch["units"], batch.get("speaker"), batch.get("f0"))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        wav = batch["wav"]
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        lc, clip = self.cfg.loss, self.cfg.optim.grad_clip
        fake = self._generate(batch)
        logs: dict[str, Tensor] = {}
        if self.adversarial:
            d_loss = discriminator_loss(self.disc(wav), self.disc(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            self.clip_gradients(opt_d, gradient_clip_val=clip, gradient_clip_algorithm="norm")
            opt_d.step()
            sched_d.step()
            logs["train/disc"] = d_loss.detach()
        l1 = F.l1_loss(fake, wav)
        stft = self.stft_loss(fake, wav)
        mel = self.mel_loss(fake, wav)
        g_loss = lc.waveform_l1 * l1 + lc.stft * stft + lc.mel * mel
        if self.adversarial:
            fake_out, real_out = self.disc(fake), self.disc(wav)
            adv, fm = generator_adversarial_loss(fake_out), feature_matching_loss(real_out, fake_out)
            g_loss = g_loss + lc.adversarial * adv + lc.feature_matching * fm
            logs.update({"train/adversarial": adv.detach(), "train/feature_matching": fm.detach()})
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        opt_g.step()
        sched_g.step()
        self.gen_steps += 1
        logs.update(
            {
                "train/loss": g_loss.detach(),
                "train/l1": l1.detach(),
                "train/stft": stft.detach(),
                "train/mel": mel.detach(),
                "train/lr": torch.tensor(sched_g.get_last_lr()[0]),
            }
        )
        self.log_dict(logs, on_step=True, prog_bar=False, batch_size=wav.shape[0])
        self.log("mel", mel.detach(), prog_bar=True, logger=False, batch_size=wav.shape[0])
        if int(self.gen_steps) >= self.cfg.trainer.max_steps:
            self.trainer.should_stop = True

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        wav = batch["wav"]
        fake = self._generate(batch)
        self.log("val/mel_distance", F.l1_loss(self.val_mel(fake), self.val_mel(wav)), prog_bar=True, batch_size=1)
        self.log("val/stft_distance", self.stft_loss(fake, wav), batch_size=1, sync_dist=True)
        if batch_idx < self.cfg.trainer.num_audio_examples and self.global_rank == 0:
            writer = getattr(self.logger, "experiment", None)
            if writer is not None and hasattr(writer, "add_audio"):
                sr, step = self.cfg.model.sample_rate, int(self.gen_steps)
                writer.add_audio(f"audio/{batch_idx}/vocoder", fake[0].float().clamp(-1, 1).cpu(), step, sr)
