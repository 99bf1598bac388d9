"""Lightning glue for unit-vocoder training: the codec's GAN recipe (manual optimisation, discriminators,
reconstruction losses) around a :class:`~vqaudio.models.vocoder.Vocoder`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..config import from_dict, to_dict
from ..features import MelSpectrogram
from ..models.vocoder import Vocoder
from .config import TrainVocoderConfig
from .gan import WaveformGANTask


class VocoderTask(WaveformGANTask):
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
        self.vocoder = Vocoder(self.cfg.model)
        self.setup_gan(self.cfg.model.sample_rate)
        self.val_mel = MelSpectrogram(self.cfg.model.sample_rate, n_fft=1024, hop=256, n_mels=80)

    def configure_optimizers(self):
        return self.gan_optimizers(self.vocoder.parameters())

    def _generate(self, batch: dict) -> Tensor:
        return self.vocoder(batch["units"], batch.get("speaker"), batch.get("f0"))

    def training_step(self, batch: dict, batch_idx: int) -> None:
        wav = batch["wav"]
        fake, phase = self.vocoder.forward_with_phase(batch["units"], batch.get("speaker"), batch.get("f0"))
        logs: dict[str, Tensor] = {}
        self.discriminator_step(wav, fake, logs)
        g_loss = self.reconstruction_loss(fake, wav, logs, phase, self.vocoder.decoder)
        adversarial = self.adversarial_loss(fake, wav, logs)
        if adversarial is not None:
            g_loss = g_loss + adversarial
        self.generator_step(g_loss, logs)
        self.log_dict(logs, on_step=True, prog_bar=False, batch_size=wav.shape[0])
        self.log("mel", logs["train/mel"], prog_bar=True, logger=False, batch_size=wav.shape[0])
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
