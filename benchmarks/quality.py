"""Resynthesis quality at equal training compute: vqaudio's default encoder/decoder against EnCodec's and
DAC's, everything else identical.

    pip install --no-deps encodec einops descript-audio-codec
    python benchmarks/quality.py [--minutes 20] [--archs ours ours_full encodec dac]      # 2 cores: ~90 min
    python benchmarks/quality.py --device cuda --minutes 60 --adversarial-at 0.3          # one GPU

Every architecture trains for the same wall-clock time (data loading included, evaluation excluded) with
the same Lightning task (`vqaudio.train.codec_task.CodecTask`), losses, discriminators, optimiser, seed,
batches and quantizer: recipes/librispeech/conf/codec_base.yaml, whose 8 x 1024 EMA residual quantizer
with quantizer dropout runs at 50 frames/s in every row. Only the encoder and decoder differ:

- ``ours``: the default ``CodecConfig`` as ``codec_base.yaml`` sets it (the mel encoder: log-mel frames and
  ConvNeXt blocks 4 x 256 at the frame rate; a 2-layer 128-unit LSTM after it; the iSTFT decoder: ConvNeXt
  blocks at the frame rate and an inverse STFT, without a decoder-side LSTM; 5.0M parameters in all);
  ``mel_encoder``: the same, named; ``mel_encoder_phase1``: with APNet's anti-wrapping phase losses too
  (``loss.phase: 1``); ``ours_phase1`` and ``ours_phase3``: the default with the phase losses at 1 and 3;
  the rows below that name no encoder have the SEANet encoder (Snake, half width, one residual unit per
  resolution), the default until 2026-12-07: ``istft``: with 512-unit LSTMs (7.2M); ``istft_lstm128``: with
  the 128-unit LSTM (4.0M); ``istft_no_lstm``: without the encoder LSTM;
  ``ours_seanet``: the SEANet encoder with the SEANet decoder and its LSTM, the default until 2026-12-07
  (10.9M); every other ``ours_*`` row has that SEANet decoder too, as when it was measured;
  ``ours_full``: ``ours_seanet`` with a full-width encoder (``encoder_channels: null``);
  (not in the default set:) ``ours_3units``: the default before 2026-11-30, three residual units per
  resolution (dilations 1, 3, 9) and no LSTM (4.3M); ``ours_elu`` and ``ours_full_elu``: that one with
  ELU, the activation before Snake, half- and full-width; ``ours_lstm``: ``ours_3units`` with 2-layer
  LSTMs of 128 units (``lstm_dim: null``); ``ours_lstm512``: with the default's 512-unit LSTMs;
  ``ours_dil13_lstm512``: the default with two residual units (dilations 1, 3) per resolution;
- ``encodec``: EnCodec's SEANet encoder/decoder with its 2-layer LSTM, from the ``encodec`` package, at
  16 kHz with ratios [8, 5, 4, 2] (hop 320), 32 filters and a 128-dim latent as in EnCodec 24 kHz;
- ``dac``: DAC's encoder/decoder (Snake, its residual units) from ``descript-audio-codec`` at hop 320 with
  ``encoder_dim`` 32 and ``decoder_dim`` 512 (``--dac-dims``), a 128-dim latent, initialised as ``DAC``
  does (``init_weights``: zero conv biases). DAC's published 16 kHz widths (64 / 1536, 61M parameters in
  encoder and decoder) take minutes per step on 2 cores;
- ``encodec_zero_bias`` (not in the default set): ``encodec`` with its conv biases zeroed at init, the
  rule ours and DAC's follow. With PyTorch's default uniform biases a fresh SEANet's latents vary over
  time by about 3 % of their size, and the decoder learns to ignore them;
  ``encodec_zero_bias_no_lstm``: the same without the LSTMs, to tell what they bring.

Time-based schedule, the same fraction of the budget for every row: a continuous warm-up for the first
``--warmup-fraction`` of the time (as ``loss.quantizer_start`` does in steps), then quantization with
k-means-initialised codebooks; discriminators switch on at ``--adversarial-at`` of the budget (never by
default: at a few hundred CPU steps the GAN terms only add cost; the GPU run switches them on).

Data: ../shared/data/speech-mini minus the held-out speakers of `speech_mini.py` (LibriSpeech test-other
1688, 2033, 3080, 533; VCTK p226; a LibriVox reader), which are the test set. A validation curve (log-mel
distance on 6 held-out utterances, first 5 s) is taken every ``--eval-minutes`` of training time; after
training, every held-out utterance is encoded at n_q = 2 (1 kbps) and n_q = 8 (4 kbps), decoded and
scored (log-mel distance, STOI, PESQ-WB, SI-SDR), and the trained model's real-time factors are measured
as in benchmarks/codec.py (``--rtf-seconds`` of audio, 10 by default, one thread, best of 3; CPU runs only).

Each architecture's result is written to WORK/<arch>/result.json as soon as it is done; a run skips the
architectures that have one, so a killed run continues with the next, and refuses a WORK filled with other
settings (all options but --archs). WORK/RESULTS.md holds the table and WORK/quality_curves.png the curves
of the run's architectures; --report rewrites both from every result in WORK.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import time

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from codec import import_dac, stub_imports
from speech_mini import ROOT, SHARED, prepare_data
from torch import Tensor, nn

from vqaudio.config import from_dict, to_dict
from vqaudio.data import read_data_dir
from vqaudio.data.audio import load_audio
from vqaudio.features import MelSpectrogram
from vqaudio.metrics import log_mel_distance, pesq_wb, si_sdr, stoi
from vqaudio.quantize.residual import latent_errors
from vqaudio.train.codec_task import CodecTask
from vqaudio.train.config import TrainCodecConfig
from vqaudio.train.run_codec import _loaders

ARCHS = (
    "ours",
    "ours_full",
    "encodec",
    "dac",
    "ours_3units",
    "ours_elu",
    "ours_full_elu",
    "encodec_zero_bias",
    "encodec_zero_bias_no_lstm",
    "ours_lstm",
    "ours_lstm512",
    "ours_dil13_lstm512",
    "ours_dropout_all",
    "ours_no_dropout",
    "ours_adv_early",
    "istft",
    "ours_seanet",
    "istft_lstm128",
    "istft_no_lstm",
    "ours_phase1",
    "ours_phase3",
    "mel_encoder",
    "mel_encoder_phase1",
)
# the SEANet encoder and decoder with its LSTM (and the 512-unit LSTMs of the default until 2026-12-07): the
# default until 2026-12-07, which every row below but ``ours`` and the ``istft``, ``mel`` and phase rows was
# measured with
SEANET = {"encoder": "seanet", "decoder": "seanet", "decoder_lstm": True, "lstm_dim": 512}
THREE_UNITS = {**SEANET, "dilations": [1, 3, 9], "lstm": 0}  # the default before 2026-11-30
OURS = {  # our variants: overrides of codec_base.yaml's model section
    "ours": {},
    "ours_seanet": SEANET,
    "ours_full": {**SEANET, "encoder_channels": None},
    "ours_3units": THREE_UNITS,
    "ours_elu": {**THREE_UNITS, "activation": "elu"},
    "ours_full_elu": {**THREE_UNITS, "encoder_channels": None, "activation": "elu"},
    "ours_lstm": {**THREE_UNITS, "lstm": 2, "lstm_dim": None},
    "ours_lstm512": {**THREE_UNITS, "lstm": 2, "lstm_dim": 512},
    "ours_dil13_lstm512": {**SEANET, "dilations": [1, 3]},
    # training-schedule rows: the SEANet model of their time, another quantizer dropout or discriminator schedule
    "ours_dropout_all": {**SEANET, "quantizer": {"dropout_fraction": 1.0}},  # SoundStream's rule, until 2026-12-02
    "ours_no_dropout": {**SEANET, "quantizer": {"dropout": False}},
    "ours_adv_early": SEANET,
    # the frame-rate iSTFT decoder (vqaudio.models.istft) without a decoder-side LSTM (its ConvNeXt blocks see
    # +-21 frames; the LSTM would cost 5x the decoder's own inference): codec_base's decoder since 2026-12-07
    "istft": {"encoder": "seanet", "decoder": "istft", "decoder_lstm": False, "lstm_dim": 512},
    # what the encoder's latent LSTM buys against its cost in extraction: 128 units (lstm_dim null: latent_dim)
    # instead of 512, and none
    "istft_lstm128": {"encoder": "seanet", "decoder": "istft", "decoder_lstm": False, "lstm_dim": None},
    "istft_no_lstm": {"encoder": "seanet", "decoder": "istft", "decoder_lstm": False, "lstm": 0},
    # the frame-rate mel encoder (vqaudio.models.mel_encoder), named: codec_base's encoder since 2026-12-07
    "mel_encoder": {"encoder": "mel", "encoder_dim": 256, "encoder_blocks": 4, "n_mels": 80},
    # the default with APNet's phase losses (LOSSES)
    "ours_phase1": {},
    "ours_phase3": {},
}
OURS["mel_encoder_phase1"] = OURS["mel_encoder"]
# rows whose loss weights differ from codec_base.yaml's: APNet's anti-wrapping phase losses on the iSTFT decoder's
# phase (vqaudio.train.losses.phase_loss) at two weights
LOSSES = {"ours_phase1": {"phase": 1.0}, "ours_phase3": {"phase": 3.0}, "mel_encoder_phase1": {"phase": 1.0}}
SCHEDULES = {"ours_adv_early": {"adversarial_at": 0.2}}  # rows whose budget schedule differs from the options'
DEPTHS = (1, 2, 4, 8)  # residual depths scored after training: 0.5 to 4 kbps
# Model fields that rows may set differently; the rest of the training config is the same in every row.
ARCH_FIELDS = (
    "channels",
    "encoder_channels",
    "kernel",
    "residual_kernel",
    "residual_out_kernel",
    "dilations",
    "activation",
    "max_channels",
    "weight_norm",
    "lstm",
    "lstm_dim",
    "decoder_lstm",
    "decoder",
    "decoder_dim",
    "decoder_blocks",
    "decoder_hidden",
    "decoder_kernel",
    "encoder",
    "encoder_dim",
    "encoder_blocks",
    "n_mels",
)
PER_RUN = ("archs", "report")  # options that may differ between the runs that fill one work dir
HAVE_PESQ = importlib.util.find_spec("pesq") is not None  # a GPU image may lack it (benchmarks/gpu.sh)
NEVER = 10**12
HOP = 320


class Foreign(nn.Module):
    """A peer's encoder or decoder in the place of ours: ``forward`` as theirs, ``infer`` without autograd.

    ``length_factor`` is output samples (or frames) per input one; outputs that come out short (DAC's
    transposed convs lose a sample at odd strides) are zero-padded to it, longer ones trimmed.
    """

    def __init__(self, net: nn.Module, length_factor: float) -> None:
        super().__init__()
        self.net = net
        self.length_factor = length_factor
        self.hop_length = HOP
        self.receptive_field = 0

    def forward(self, x: Tensor) -> Tensor:
        y = self.net(x)
        n = round(x.shape[-1] * self.length_factor)
        return y[..., :n] if y.shape[-1] >= n else F.pad(y, (0, n - y.shape[-1]))

    @torch.no_grad()
    def infer(self, x: Tensor) -> Tensor:
        return self.forward(x)


def build_task(arch: str, cfg: dict, dac_dims: tuple[int, int]) -> CodecTask:
    cfg = json.loads(json.dumps(cfg))
    # a peer's encoder and decoder replace ours whole, our latent LSTMs included
    overrides = dict(OURS[arch]) if arch in OURS else {"lstm": 0}
    cfg["model"]["quantizer"].update(overrides.pop("quantizer", {}))
    cfg["model"].update(overrides)
    cfg["loss"].update(LOSSES.get(arch, {}))
    task = CodecTask(cfg)
    dim = task.codec.config.latent_dim
    if arch.startswith("encodec"):
        stub_imports()
        from encodec.modules import SEANetDecoder, SEANetEncoder

        seanet = {"dimension": dim, "n_filters": 32, "ratios": [8, 5, 4, 2], "lstm": 0 if "no_lstm" in arch else 2}
        task.codec.encoder = Foreign(SEANetEncoder(**seanet), 1 / HOP)
        task.codec.decoder = Foreign(SEANetDecoder(**seanet), HOP)
        if "zero_bias" in arch:  # the init rule of ours and DAC's: conv biases start at zero
            for m in [*task.codec.encoder.modules(), *task.codec.decoder.modules()]:
                if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                    nn.init.zeros_(m.bias)
    elif arch == "dac":
        dac = import_dac()
        enc_dim, dec_dim = dac_dims
        task.codec.encoder = Foreign(dac.Encoder(enc_dim, [2, 4, 5, 8], dim), 1 / HOP)
        task.codec.decoder = Foreign(dac.Decoder(dim, dec_dim, [8, 5, 4, 2]), HOP)
        task.codec.encoder.apply(dac.init_weights)  # as DAC.__init__ does
        task.codec.decoder.apply(dac.init_weights)
    elif arch not in OURS:
        raise SystemExit(f"unknown architecture {arch!r}; choose from {ARCHS}")
    return task


class Budget(pl.Callback):
    """Stops training after ``seconds`` of training time; switches quantization and the discriminators on
    at fractions of it; takes the validation curve every ``eval_seconds`` (not counted as training time)."""

    def __init__(self, seconds, warmup, adversarial_at, eval_seconds, curve_wavs, device) -> None:
        self.seconds, self.warmup, self.adversarial_at = seconds, warmup, adversarial_at
        self.eval_seconds, self.curve_wavs, self.device = eval_seconds, curve_wavs, device
        self.train_time, self.next_eval, self.curve = 0.0, eval_seconds, []
        self.mel = None

    def _sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def on_train_start(self, trainer, task) -> None:
        self.mel = MelSpectrogram(task.codec.sample_rate, n_fft=1024, hop=256, n_mels=80).to(task.device)
        self.last = time.perf_counter()

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx) -> None:
        self._sync()
        now = time.perf_counter()
        self.train_time += now - self.last
        steps = int(task.gen_steps)
        if self.train_time >= self.warmup * self.seconds and task.cfg.loss.quantizer_start == NEVER:
            task.cfg.loss.quantizer_start = steps
        on_at = self.adversarial_at * self.seconds
        if self.adversarial_at < 1 and self.train_time >= on_at and task.cfg.loss.adversarial_start == NEVER:
            task.cfg.loss.adversarial_start = steps
        if self.train_time >= self.next_eval or self.train_time >= self.seconds:
            quantized = steps > task.cfg.loss.quantizer_start  # a training step has initialised the codebooks
            point = {"minutes": self.train_time / 60, "steps": steps, "quantized": quantized}
            point.update(self.evaluate(task, quantized))
            self.curve.append(point)
            print(
                f"  {point['minutes']:6.1f} min {steps:6d} steps  val log-mel {point['val_mel']:.3f}"
                f"  (1 level {point['val_mel_q1']:.3f}, unquantized {point['val_mel_continuous']:.3f})",
                flush=True,
            )
            self.next_eval += self.eval_seconds
        if self.train_time >= self.seconds:
            trainer.should_stop = True
        self._sync()
        self.last = time.perf_counter()

    @torch.no_grad()
    def evaluate(self, task: CodecTask, quantized: bool) -> dict[str, float]:
        """Validation log-mel distance at full depth (``val_mel``), at one level (``val_mel_q1``) and of the
        unquantized latents (``val_mel_continuous``: the ceiling of any bitrate); the three are equal before
        quantization starts."""
        codec = task.codec.eval()
        totals = {"val_mel": 0.0, "val_mel_q1": 0.0, "val_mel_continuous": 0.0}
        for wav in self.curve_wavs:
            wav = wav.to(task.device)
            outs = {"val_mel_continuous": codec(wav, quantize=False).wav}
            if quantized:
                codes = codec.encode(wav)
                outs["val_mel"] = codec.decode(codes, length=wav.shape[-1])
                outs["val_mel_q1"] = codec.decode(codes[:, :1], length=wav.shape[-1])
            for key in totals:
                out = outs.get(key, outs["val_mel_continuous"])
                totals[key] += float(F.l1_loss(self.mel(out.float()), self.mel(wav)))
        codec.train()
        return {k: v / len(self.curve_wavs) for k, v in totals.items()}


@torch.no_grad()
def score(codec, test_dir: pathlib.Path, device: str, audio: pathlib.Path | None = None) -> dict[str, dict[str, float]]:
    """Mean log-mel distance, STOI, PESQ-WB and SI-SDR over the held-out utterances at every n_q of
    :data:`DEPTHS` and of the unquantized latents (key ``continuous``: what the decoder makes of the encoder's
    own latents, the ceiling of any bitrate), and the mean relative latent error after each level
    (``latent_error``). With ``audio``, each depth's resynthesis goes to ``audio/nq<Q>/wav/<utt>.wav`` with a
    ``wav.scp`` (for listening, and for ``vqaudio evaluate`` or ``intelligibility.py``'s ``audio:`` rows)."""
    codec.eval()
    sr = codec.sample_rate
    rows: dict[str, list[list[float]]] = {str(q): [] for q in DEPTHS if q <= codec.n_q}
    rows["continuous"] = []
    errors = []
    scp: dict[str, list[str]] = {}
    for utt in read_data_dir(test_dir):
        ref = load_audio(utt.source, sr, utt.start, utt.end, name=utt.utt_id)
        wav = torch.from_numpy(ref)[None, None].to(device)
        z = codec.level0(wav, quantize=False)
        codes = codec.quantizer.encode(z)
        errors.append(latent_errors(codec.quantizer, z, codes)[0].cpu().numpy())
        for key in rows:
            if key == "continuous":
                hyp = codec(wav, quantize=False).wav
            else:
                hyp = codec.decode(codes[:, : int(key)], length=len(ref))
            hyp = hyp[0, 0].clamp(-1, 1).float().cpu().numpy()
            if audio is not None and key != "continuous":
                path = audio / f"nq{key}" / "wav" / f"{utt.utt_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(path, hyp, sr, subtype="FLOAT")
                scp.setdefault(key, []).append(f"{utt.utt_id} {path}\n")
            pesq = pesq_wb(ref, hyp, sr) if HAVE_PESQ else math.nan
            rows[key].append([log_mel_distance(ref, hyp, sr), stoi(ref, hyp, sr), pesq, si_sdr(ref, hyp)])
    for key, lines in scp.items():
        (audio / f"nq{key}" / "wav.scp").write_text("".join(lines))
    names = ("log_mel", "stoi", "pesq_wb", "si_sdr")
    means = {key: np.nanmean(np.array(r), axis=0).tolist() for key, r in rows.items()}
    out: dict = {key: dict(zip(names, m, strict=True)) for key, m in means.items()}
    out["latent_error"] = np.mean(errors, axis=0).tolist()
    return out


@torch.no_grad()
def real_time_factors(codec, seconds: float = 10.0, repeats: int = 3) -> dict[str, float]:
    """One-thread encode and decode RTF of a trained model on CPU, as benchmarks/codec.py measures it."""
    codec = codec.cpu().eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    wav = torch.randn(1, 1, int(seconds * codec.sample_rate)) * 0.1
    codes = codec.encode(wav)
    codec.decode(codes)
    best = [math.inf, math.inf]
    for _ in range(repeats):
        for j, (fn, arg) in enumerate(((codec.encode, wav), (codec.decode, codes))):
            t0 = time.perf_counter()
            fn(arg)
            best[j] = min(best[j], time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return {"encode": seconds / best[0], "decode": seconds / best[1]}


def train_one(arch: str, cfg: dict, args, work: pathlib.Path, curve_wavs: list[Tensor]) -> dict:
    pl.seed_everything(args.seed, workers=True)
    task = build_task(arch, cfg, tuple(args.dac_dims))
    train_loader, _ = _loaders(task, str(work / "data" / "train"), str(work / "data" / "dev"))
    adversarial_at = SCHEDULES.get(arch, {}).get("adversarial_at", args.adversarial_at)
    budget = Budget(
        args.minutes * 60, args.warmup_fraction, adversarial_at, args.eval_minutes * 60, curve_wavs, args.device
    )
    cuda = args.device == "cuda"
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if cuda else "32-true",
        max_epochs=-1,
        max_steps=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[budget],
    )
    print(f"{arch}: training for {args.minutes:g} min", flush=True)
    trainer.fit(task, train_loader)
    codec = task.codec.to(args.device)
    steps = int(task.gen_steps)
    result = {
        "arch": arch,
        "params": sum(p.numel() for p in codec.parameters()),
        "encoder_params": sum(p.numel() for p in codec.encoder.parameters()),
        "steps": steps,
        "train_minutes": budget.train_time / 60,
        "steps_per_s": steps / budget.train_time,
        "quantizer_start": task.cfg.loss.quantizer_start,
        "adversarial_start": task.cfg.loss.adversarial_start if task.cfg.loss.adversarial_start != NEVER else None,
        "curve": budget.curve,
        "test": score(codec, work / "data" / "test", args.device, work / arch / "audio"),
        "rtf_1_thread": real_time_factors(codec, args.rtf_seconds) if args.device == "cpu" else None,
        "model": {k: v for k, v in to_dict(task.codec.config).items() if k in ARCH_FIELDS} if arch in OURS else None,
        "quantizer": to_dict(task.codec.config.quantizer),
        "loss": LOSSES.get(arch, {}),
    }
    if arch in OURS:
        codec.save_pretrained(work / arch / "model.pt")
    return result


def write_report(work: pathlib.Path, results: list[dict], args) -> None:
    names = {
        "ours": "vqaudio default (mel encoder, 128-unit LSTM; iSTFT decoder)",
        "ours_seanet": "vqaudio SEANet encoder and decoder, 512-unit LSTMs on both sides (default until 2026-12-07)",
        "ours_full": "vqaudio default, full-width encoder",
        "ours_3units": "vqaudio, Snake, 3 residual units per resolution, no LSTM (default before 2026-11-30)",
        "ours_elu": "vqaudio, ELU, 3 units, no LSTM, half-width encoder",
        "ours_full_elu": "vqaudio, ELU, 3 units, no LSTM, full-width encoder",
        "ours_lstm": "vqaudio, Snake, 3 units + 2-layer 128-unit LSTMs",
        "ours_lstm512": "vqaudio, Snake, 3 units + 2-layer 512-unit LSTMs",
        "ours_dil13_lstm512": "vqaudio, Snake, 2 units + 2-layer 512-unit LSTMs",
        "encodec": "EnCodec SEANet + LSTM",
        "dac": f"DAC ({args.dac_dims[0]} / {args.dac_dims[1]})",
        "encodec_zero_bias": "EnCodec SEANet + LSTM, conv biases zeroed at init",
        "encodec_zero_bias_no_lstm": "EnCodec SEANet without LSTM, conv biases zeroed at init",
        "ours_dropout_all": "vqaudio default, quantizer dropout on every example (SoundStream)",
        "ours_no_dropout": "vqaudio default, no quantizer dropout",
        "ours_adv_early": "vqaudio default, discriminators from 20 % of the budget",
        "istft": "vqaudio SEANet encoder, 512-unit LSTM, iSTFT decoder (ConvNeXt 6 x 256, no decoder LSTM)",
        "istft_lstm128": "`istft` with a 128-unit encoder LSTM (the default on 2026-12-07 before the mel encoder)",
        "istft_no_lstm": "`istft` without the encoder LSTM",
        "ours_phase1": "vqaudio default, APNet phase losses at weight 1",
        "ours_phase3": "vqaudio default, APNet phase losses at weight 3",
        "mel_encoder": "vqaudio mel encoder (log-mel, ConvNeXt 4 x 256), 128-unit LSTM, iSTFT decoder (the default)",
        "mel_encoder_phase1": "`mel_encoder` with APNet phase losses at weight 1",
    }
    lines = [
        "| architecture | params | steps | steps/s | log-mel 1 kbps | STOI 1 kbps | PESQ 1 kbps | SI-SDR 1 kbps "
        "| log-mel 4 kbps | STOI 4 kbps | PESQ 4 kbps | SI-SDR 4 kbps | encode RTF | decode RTF |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        q = [r["test"][n][k] for n in ("2", "8") for k in ("log_mel", "stoi", "pesq_wb", "si_sdr")]
        lines.append(
            f"| {names.get(r['arch'], r['arch'])} | {r['params'] / 1e6:.1f}M | {r['steps']} | {r['steps_per_s']:.3f} | "
            + " | ".join(f"{v:.3f}" if i % 4 != 3 else f"{v:.1f}" for i, v in enumerate(q))
            + (" | {encode:.1f} | {decode:.1f} |".format(**r["rtf_1_thread"]) if r["rtf_1_thread"] else " | | |")
        )
    lines += ["", *depth_table(results, names)]
    (work / "RESULTS.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.2))
    for r in results:
        ax.plot([p["minutes"] for p in r["curve"]], [p["val_mel"] for p in r["curve"]], marker="o", ms=3)
        ax.lines[-1].set_label(names.get(r["arch"], r["arch"]))
    ax.set_xlabel("training time (min)")
    ax.set_ylabel("validation log-mel distance (held-out)")
    ax.set_title(f"equal compute: {args.minutes:g} min each, {args.device}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1, fontsize=8, frameon=False)
    fig.savefig(work / "quality_curves.png", dpi=110, bbox_inches="tight")  # the legend below, uncut
    plt.close(fig)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    for r in results:
        depths = [q for q in DEPTHS if str(q) in r["test"]]
        for ax, key in zip(axes, ("log_mel", "stoi", "pesq_wb"), strict=True):
            (line,) = ax.plot(depths, [r["test"][str(q)][key] for q in depths], marker="o", ms=3)
            line.set_label(names.get(r["arch"], r["arch"]))
            if "continuous" in r["test"]:  # the unquantized latents: the ceiling of any bitrate
                ax.axhline(r["test"]["continuous"][key], color=line.get_color(), ls="--", lw=0.8)
    for ax, label in zip(axes, ("log-mel distance (lower)", "STOI (higher)", "PESQ-WB (higher)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(DEPTHS), [f"{q}\n{q / 2:g} kbps" for q in DEPTHS])
        ax.set_xlabel("residual levels n_q")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title("dashed: unquantized latents", fontsize=9)
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1, fontsize=8, frameon=False)
    fig.savefig(work / "quality_by_n_q.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def depth_table(results: list[dict], names: dict[str, str]) -> list[str]:
    """Markdown rows: log-mel / STOI / PESQ at every scored depth and of the unquantized latents, and the
    relative latent error after levels 1, 2, 4 and 8, for the rows scored at every depth."""
    keys = [*(str(q) for q in DEPTHS), "continuous"]
    head = " | ".join(f"n_q {k}" if k != "continuous" else "unquantized" for k in keys)
    lines = [
        f"| row (log-mel / STOI / PESQ) | {head} | latent error after 1, 2, 4, 8 levels |",
        "|---|" + "---:|" * (len(keys) + 1),
    ]
    for r in results:
        if not all(k in r["test"] for k in keys):
            continue  # scored at 1 and 4 kbps only, before the depth curve
        cells = ["{log_mel:.3f} / {stoi:.3f} / {pesq_wb:.2f}".format(**r["test"][k]) for k in keys]
        errors = r["test"]["latent_error"]
        error = " / ".join(f"{errors[q - 1]:.3f}" for q in DEPTHS if q <= len(errors))
        lines.append(f"| {names.get(r['arch'], r['arch'])} | " + " | ".join(cells) + f" | {error} |")
    return lines


def settings(options: argparse.Namespace) -> dict:
    """The options that every run filling one work dir must share, as its config.yaml records them."""
    return {k: str(v) if isinstance(v, pathlib.Path) else v for k, v in vars(options).items() if k not in PER_RUN}


def common(cfg: dict) -> dict:
    """The training config without the fields an architecture sets (each row records its own model)."""
    return {**cfg, "model": {k: v for k, v in cfg["model"].items() if k not in ARCH_FIELDS}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training time per architecture")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS[:4]), choices=ARCHS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for training")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--segment-seconds", type=float, default=1.0)
    parser.add_argument("--warmup-fraction", type=float, default=0.1, help="continuous warm-up, share of the budget")
    parser.add_argument("--adversarial-at", type=float, default=1.0, help="discriminators on at this share (1: never)")
    parser.add_argument("--eval-minutes", type=float, default=2.0, help="validation curve cadence (training time)")
    parser.add_argument("--dac-dims", type=int, nargs=2, default=[32, 512], metavar=("ENCODER", "DECODER"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rtf-seconds", type=float, default=10.0, help="audio for the real-time factors (CPU runs)")
    parser.add_argument("--work", default="/tmp/vqaudio_quality", help="work dir (resumable)")
    parser.add_argument("--corpus", type=pathlib.Path, default=SHARED, help="speech-mini (default ../shared/...)")
    parser.add_argument(
        "--report", action="store_true", help="only rewrite RESULTS.md and the curves from every result in --work"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "data" / "test" / "wav.scp").is_file():
        prepare_data(work, args.corpus)
    cfg = yaml.safe_load((ROOT / "recipes" / "librispeech" / "conf" / "codec_base.yaml").read_text())
    cfg = to_dict(from_dict(TrainCodecConfig, cfg, where="codec_base.yaml"))
    cfg["data"].update(batch_size=args.batch_size, segment_seconds=args.segment_seconds)
    cfg["data"]["num_workers"] = 4 if args.device == "cuda" else 0
    # 8 x 1 s = 400 frames per batch over 1024 codes: codec_base's restart threshold (0.5, for 1600 frames)
    # would restart live codes every step.
    cfg["model"]["quantizer"]["dead_code_threshold"] = 0.5 * args.batch_size * args.segment_seconds / 32
    cfg["loss"].update(quantizer_start=NEVER, adversarial_start=NEVER)
    cfg["trainer"].update(max_steps=NEVER, seed=args.seed)
    bench = settings(args)
    saved = work / "config.yaml"
    if saved.is_file():
        old = yaml.safe_load(saved.read_text())
        # options added since the work dir was made count with their defaults
        old_bench = {**settings(parser.parse_args([])), **old["benchmark"]}
        old_bench = {k: v for k, v in old_bench.items() if k not in PER_RUN}
        old_train = to_dict(from_dict(TrainCodecConfig, old["train"]))  # keys added since take their defaults
        if (old_bench, common(old_train)) != (bench, common(cfg)):
            raise SystemExit(f"{saved}: the results in {work} come from other settings; use another --work")
    saved.write_text(yaml.safe_dump({"benchmark": bench, "train": cfg}))
    if args.report:
        done = [a for a in ARCHS if (work / a / "result.json").is_file()]
        write_report(work, [json.loads((work / a / "result.json").read_text()) for a in done], args)
        return
    sr = cfg["model"]["sample_rate"]
    test = read_data_dir(work / "data" / "test")
    curve_wavs = [
        torch.from_numpy(load_audio(u.source, sr, u.start, u.end, name=u.utt_id)[: 5 * sr])[None, None]
        for u in test[:: max(1, len(test) // 6)][:6]
    ]
    results = []
    for arch in args.archs:
        path = work / arch / "result.json"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            result = train_one(arch, cfg, args, work, curve_wavs)
            path.write_text(json.dumps(result, indent=2) + "\n")
        results.append(json.loads(path.read_text()))
        write_report(work, results, args)


if __name__ == "__main__":
    main()
