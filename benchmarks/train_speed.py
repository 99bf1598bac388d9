"""Codec training throughput of a recipe config: codec steps/s with every loss on (quantizer, GAN,
feature matching; ``--no-gan``: without the discriminators), through the same Lightning task as
`vqaudio train-codec`.

    python benchmarks/train_speed.py --config recipes/librispeech/conf/codec_base.yaml --device cuda
    python benchmarks/train_speed.py --config recipes/librispeech/conf/codec_tiny.yaml --steps 5
    python benchmarks/train_speed.py --batch-size 8 --no-gan          # the CPU setting of quality.py

Input: random waveforms at the config's batch size and segment length (speed does not depend on the
audio). The first ``--warmup`` steps (k-means codebook init, CUDA kernel selection) are not timed.
Precision: bf16-mixed on CUDA, 32-true on CPU, unless ``--precision`` says otherwise.
"""

from __future__ import annotations

import argparse
import time

import pytorch_lightning as pl
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from vqaudio.config import from_dict, to_dict
from vqaudio.train.codec_task import CodecTask
from vqaudio.train.config import TrainCodecConfig


class RandomWaves(Dataset):
    def __init__(self, samples: int, length: int) -> None:
        self.samples, self.length = samples, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.randn(1, self.samples) * 0.1


class Timer(pl.Callback):
    """The wall time at the end of every training step (after the GPU finished it)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda, self.times = cuda, []

    def on_train_batch_end(self, trainer, task, outputs, batch, batch_idx) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="recipes/librispeech/conf/codec_base.yaml")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=30, help="timed codec steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--precision", help="Lightning precision (default bf16-mixed on cuda, 32-true on cpu)")
    parser.add_argument("--batch-size", type=int, help="override data.batch_size")
    parser.add_argument("--segment-seconds", type=float, help="override data.segment_seconds")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument(
        "--no-gan", action="store_true", help="discriminators off, as benchmarks/quality.py trains on CPU"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    cfg = to_dict(from_dict(TrainCodecConfig, yaml.safe_load(open(args.config)), where=args.config))
    if args.batch_size:
        cfg["data"]["batch_size"] = args.batch_size
    if args.segment_seconds:
        cfg["data"]["segment_seconds"] = args.segment_seconds
    cfg["loss"].update(quantizer_start=0, adversarial_start=10**12 if args.no_gan else 0)
    cfg["trainer"]["max_steps"] = args.warmup + args.steps
    precision = args.precision or ("bf16-mixed" if cuda else "32-true")
    task = CodecTask(cfg)
    batch, samples = cfg["data"]["batch_size"], int(cfg["data"]["segment_seconds"] * cfg["model"]["sample_rate"])
    loader = DataLoader(RandomWaves(samples, batch * (args.warmup + args.steps)), batch, num_workers=2 if cuda else 0)
    timer = Timer(cuda)
    trainer = pl.Trainer(
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision=precision,
        max_steps=-1,
        max_epochs=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(task, loader)
    timed = timer.times[args.warmup - 1 :] if args.warmup > 0 else timer.times
    rate = (len(timed) - 1) / (timed[-1] - timed[0])
    params = sum(p.numel() for p in task.codec.parameters())
    name = torch.cuda.get_device_name() if cuda else f"CPU, {args.threads} threads"
    print(
        f"{args.config}: {params / 1e6:.1f}M params, batch {batch} x {samples} samples, {precision} on {name}: "
        f"{rate:.2f} codec steps/s ({rate * batch * samples / cfg['model']['sample_rate']:.0f} s of audio per s)"
    )


if __name__ == "__main__":
    main()
