"""Lightning glue for codec training: GAN training with manual optimisation, validation, logging.

The models know nothing of this module; it only wires them to Lightning.
"""

from __future__ import annotations

import logging

import torch.nn.functional as F
from torch import Tensor

from ..config import from_dict, to_dict
from ..data.dataset import IGNORE
from ..errors import UserError
from ..features import MelSpectrogram
from ..models.codec import Codec
from .config import TrainCodecConfig
from .content import DISTILL_FORMS, OBJECTIVES, VOCAB, ContentHead, FeatureTeacher, ctc_loss, distill_loss, load_teacher
from .gan import WaveformGANTask

log = logging.getLogger(__name__)


class CodecTask(WaveformGANTask):
    """Trains a :class:`Codec` with reconstruction, quantizer (from ``quantizer_start``) and (from
    ``adversarial_start``) GAN losses.

    ``gen_steps`` (a buffer, so it is checkpointed) counts codec updates; training stops when it reaches
    ``trainer.max_steps`` regardless of how many optimizer steps the discriminators add.
    """

    def __init__(self, config: dict) -> None:
        super().__init__()
        self.cfg = from_dict(TrainCodecConfig, config, where="train config")
        content = self.cfg.content
        if content.objective not in OBJECTIVES:
            raise UserError(f"content.objective must be one of {OBJECTIVES}, got {content.objective!r}")
        if content.head_kernel % 2 == 0:
            raise UserError(f"content.head_kernel must be odd (frames centred on each one), got {content.head_kernel}")
        self.cfg.model.content_objective = content.objective  # recorded in the exported model
        self.save_hyperparameters({"config": to_dict(self.cfg)})  # plain dict: loads with weights_only=True
        self.codec = Codec(self.cfg.model)
        self.content_head = None
        self.__dict__["teacher"] = None  # not a submodule: never trained, never in checkpoints
        if content.objective == "ctc":
            self.content_head = ContentHead(
                self.cfg.model.latent_dim, len(VOCAB), kernel=content.head_kernel, lstm=content.head_lstm
            )
        elif content.objective == "kmeans":
            # The training data loader computes the targets from it (whole utterances, see run_codec._loaders).
            teacher = load_teacher(content.targets, self.codec.sample_rate, self.codec.hop_length)
            self.__dict__["teacher"] = teacher
            self.content_head = ContentHead(
                self.cfg.model.latent_dim, teacher.codebook_size, kernel=content.head_kernel, lstm=content.head_lstm
            )
        elif content.objective == "distill":
            if content.distill_form not in DISTILL_FORMS:
                raise UserError(f"content.distill_form must be one of {DISTILL_FORMS}, got {content.distill_form!r}")
            teacher = FeatureTeacher(
                content.teacher,
                self.codec.sample_rate,
                self.codec.hop_length,
                layers=content.teacher_layers,
                deltas=content.teacher_deltas,
                cmvn=content.teacher_cmvn,
                context=content.teacher_context,
                cache_dir=content.cache_dir,
            )
            self.__dict__["teacher"] = teacher
            self.content_head = ContentHead(
                self.cfg.model.latent_dim, teacher.dim, kernel=content.head_kernel, lstm=content.head_lstm
            )
        self.setup_gan(self.cfg.model.sample_rate)
        self.val_mel = MelSpectrogram(self.cfg.model.sample_rate, n_fft=1024, hop=256, n_mels=80)
        self._logged_references: set[int] = set()

    def configure_optimizers(self):
        head = list(self.content_head.parameters()) if self.content_head is not None else []
        return self.gan_optimizers(list(self.codec.parameters()) + head)

    @property
    def quantizing(self) -> bool:
        return int(self.gen_steps) >= self.cfg.loss.quantizer_start

    def _content_loss(self, batch, out) -> Tensor | None:
        """The level-0 content loss of this step, or ``None`` without an objective."""
        objective = self.cfg.content.objective
        if objective == "kmeans":
            targets = batch["targets"]  # (B, T'), IGNORE past each utterance's end
            logits = self.content_head(out.level0)
            frames = min(logits.shape[-1], targets.shape[-1])
            return F.cross_entropy(logits[..., :frames].float(), targets[:, :frames], ignore_index=IGNORE)
        if objective == "distill":  # batch["targets"]: (B, T', D) teacher frames, NaN past each utterance's end
            return distill_loss(self.content_head(out.level0), batch["targets"], self.cfg.content.distill_form)
        if objective == "ctc":
            wav, lengths, targets, target_lengths = batch["text"]
            level0 = self.codec.level0(wav, quantize=self.quantizing)
            return ctc_loss(self.content_head(level0), lengths, targets, target_lengths, self.codec.hop_length)
        return None

    def training_step(self, batch, batch_idx: int) -> None:
        batch = batch if isinstance(batch, dict) else {"wav": batch}
        wav = batch["wav"]
        out = self.codec(wav, quantize=self.quantizing)
        logs: dict[str, Tensor] = {}
        self.discriminator_step(wav, out.wav, logs)
        g_loss = self.reconstruction_loss(out.wav, wav, logs, out.phase, self.codec.decoder)
        g_loss = g_loss + self.cfg.loss.quantizer * out.quantizer_loss
        content = self._content_loss(batch, out)
        if content is not None:
            g_loss = g_loss + self.cfg.content.weight * content
            logs[f"train/content_{self.cfg.content.objective}"] = content.detach()
        adversarial = self.adversarial_loss(out.wav, wav, logs)
        if adversarial is not None:
            g_loss = g_loss + adversarial
        self.generator_step(g_loss, logs)
        logs.update(
            {
                "train/quantizer": out.quantizer_loss.detach(),
                "train/commitment": out.commitment.detach(),
                "train/codebook": out.codebook.detach(),
            }
        )
        logs.update({f"codebook/{k}": v.detach() for k, v in out.metrics.items() if not k.startswith("latent_error")})
        logs.update(self._level_logs("train", out.metrics))
        self.log_dict(logs, on_step=True, prog_bar=False)
        self.log("mel", logs["train/mel"], prog_bar=True, logger=False)
        if int(self.gen_steps) >= self.cfg.trainer.max_steps:
            self.trainer.should_stop = True

    def validation_step(self, wav: Tensor, batch_idx: int) -> None:
        out = self.codec(wav)
        mel_distance = F.l1_loss(self.val_mel(out.wav), self.val_mel(wav))
        self.log("val/mel_distance", mel_distance, prog_bar=True, sync_dist=True, batch_size=wav.shape[0])
        self.log("val/stft_distance", self.stft_loss(out.wav, wav), sync_dist=True, batch_size=wav.shape[0])
        self.log("val/perplexity", out.metrics["perplexity"], sync_dist=True, batch_size=wav.shape[0])
        self.log("val/usage", out.metrics["usage"], sync_dist=True, batch_size=wav.shape[0])
        self.log_dict(self._level_logs("val", out.metrics), sync_dist=True, batch_size=wav.shape[0])
        if batch_idx < self.cfg.trainer.num_audio_examples and self.global_rank == 0:
            self._log_example(batch_idx, wav[0], out.wav[0])

    def _level_logs(self, prefix: str, metrics: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per residual level: ``{prefix}/usage_l{i}`` and ``perplexity_l{i}`` of level i (from 0) and
        ``latent_error_q{q}``, the relative latent error after the first q levels (from 1, residual stacks only);
        nothing while the quantizer is off."""
        if not metrics:
            return {}
        logs = {}
        for i in range(self.codec.n_q):
            for name in ("usage", "perplexity"):
                logs[f"{prefix}/{name}_l{i}"] = metrics[f"{name}_q{i}" if self.codec.n_q > 1 else name].detach()
            error = metrics.get(f"latent_error_q{i + 1}")
            if error is not None:
                logs[f"{prefix}/latent_error_q{i + 1}"] = error.detach()
        return logs

    def _log_example(self, index: int, ref: Tensor, hyp: Tensor) -> None:
        writer = getattr(self.logger, "experiment", None)
        if writer is None or not hasattr(writer, "add_audio"):
            return
        from ..plots import spectrogram_figure

        step, sr = int(self.gen_steps), self.cfg.model.sample_rate
        writer.add_audio(f"audio/{index}/resynthesis", hyp.float().clamp(-1, 1).cpu(), step, sr)
        if index not in self._logged_references:
            writer.add_audio(f"audio/{index}/reference", ref.float().cpu(), step, sr)
            self._logged_references.add(index)
        mels = [self.val_mel(x[None]).squeeze(0).float().cpu().numpy() for x in (ref, hyp)]
        writer.add_figure(f"spectrogram/{index}", spectrogram_figure(mels, ["reference", "resynthesis"]), step)
