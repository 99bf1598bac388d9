"""What the codec's and the vocoder's Lightning tasks share: a generator of waveforms trained by manual
optimisation with the reconstruction losses and (from ``loss.adversarial_start``) the discriminators."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .discriminators import Discriminators, discriminator_loss, feature_matching_loss, generator_adversarial_loss
from .losses import MultiResolutionSTFTLoss, MultiScaleMelLoss, phase_loss


class WaveformGANTask(pl.LightningModule):
    """Base of :class:`~vqaudio.train.codec_task.CodecTask` and :class:`~vqaudio.train.vocoder_task.VocoderTask`.

    A subclass sets ``self.cfg`` (with ``loss``, ``discriminator``, ``optim`` sections), calls
    :meth:`setup_gan` with the sample rate, and in ``training_step`` calls :meth:`discriminator_step`,
    :meth:`reconstruction_loss`, :meth:`adversarial_loss` and :meth:`generator_step` in that order.
    ``gen_steps`` (a buffer, so it is checkpointed) counts generator updates; no batch is trained once it has
    reached ``trainer.max_steps`` (a resumed run that is done makes no further update).
    """

    def on_train_batch_start(self, batch, batch_idx: int):
        if int(self.gen_steps) >= self.cfg.trainer.max_steps:
            self.trainer.should_stop = True
            return -1  # Lightning: skip the rest of the epoch
        return None

    def setup_gan(self, sample_rate: int) -> None:
        self.automatic_optimization = False
        d, lc = self.cfg.discriminator, self.cfg.loss
        self.disc = Discriminators(d.periods, d.period_channels, d.n_ffts, d.stft_channels)
        self.mel_loss = MultiScaleMelLoss(sample_rate, lc.mel_windows, lc.mel_bands)
        self.stft_loss = MultiResolutionSTFTLoss(lc.stft_fft_sizes)
        self.register_buffer("gen_steps", torch.zeros((), dtype=torch.long))

    def gan_optimizers(self, generator_params):
        """AdamW for the generator's parameters and the discriminators, each with linear warm-up and decay."""
        o = self.cfg.optim
        opt_g = torch.optim.AdamW(generator_params, o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
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

    def discriminator_step(self, real: Tensor, fake: Tensor, logs: dict[str, Tensor]) -> None:
        """One discriminator update on ``real`` and (detached) ``fake`` waveforms, once the adversarial phase is on."""
        if not self.adversarial:
            return
        _, opt_d = self.optimizers()
        _, sched_d = self.lr_schedulers()
        d_loss = discriminator_loss(self.disc(real), self.disc(fake.detach()))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        self.clip_gradients(opt_d, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")
        opt_d.step()
        sched_d.step()
        logs["train/disc"] = d_loss.detach()

    def reconstruction_loss(
        self, fake: Tensor, real: Tensor, logs: dict[str, Tensor], phase: Tensor | None = None, decoder=None
    ) -> Tensor:
        """The weighted L1, multi-resolution STFT and multi-scale mel losses (each logged unweighted), and with
        ``loss.phase`` the phase losses between ``phase`` (an iSTFT ``decoder``'s, ``(B, K, T')``) and the
        phase of ``real`` over the decoder's frames."""
        lc = self.cfg.loss
        l1, stft, mel = F.l1_loss(fake, real), self.stft_loss(fake, real), self.mel_loss(fake, real)
        logs.update({"train/l1": l1.detach(), "train/stft": stft.detach(), "train/mel": mel.detach()})
        loss = lc.waveform_l1 * l1 + lc.stft * stft + lc.mel * mel
        if lc.phase > 0:
            if phase is None:
                raise UserError("loss.phase needs an iSTFT decoder (model.decoder: istft); set loss.phase: 0")
            ph = phase_loss(phase, decoder.frame_phase(real))
            logs["train/phase"] = ph.detach()
            loss = loss + lc.phase * ph
        return loss

    def adversarial_loss(self, fake: Tensor, real: Tensor, logs: dict[str, Tensor]) -> Tensor | None:
        """The weighted generator and feature-matching terms, or ``None`` before the adversarial phase."""
        if not self.adversarial:
            return None
        lc = self.cfg.loss
        fake_out, real_out = self.disc(fake), self.disc(real)
        adv, fm = generator_adversarial_loss(fake_out), feature_matching_loss(real_out, fake_out)
        logs.update({"train/adversarial": adv.detach(), "train/feature_matching": fm.detach()})
        return lc.adversarial * adv + lc.feature_matching * fm

    def generator_step(self, g_loss: Tensor, logs: dict[str, Tensor]) -> None:
        """One generator update on ``g_loss``; counts it in ``gen_steps`` and logs the loss and learning rate."""
        opt_g, _ = self.optimizers()
        sched_g, _ = self.lr_schedulers()
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_loss)
        self.clip_gradients(opt_g, gradient_clip_val=self.cfg.optim.grad_clip, gradient_clip_algorithm="norm")
        opt_g.step()
        sched_g.step()
        self.gen_steps += 1
        logs.update({"train/loss": g_loss.detach(), "train/lr": torch.tensor(sched_g.get_last_lr()[0])})
