"""What the units_*.py examples share: a codec (trained, or codec_tiny.yaml's architecture with random weights),
a Kaldi data dir of a speech-mini split, and ``vqaudio extract-units`` run with its command printed."""

from __future__ import annotations

import argparse
import os
import pathlib
import shlex
import subprocess
import sys
import tempfile

import torch
import yaml

from vqaudio import Codec, CodecConfig
from vqaudio.cli.main import main as vqaudio
from vqaudio.config import from_dict

ROOT = pathlib.Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "data" / "speech-mini"
TINY = ROOT / "recipes" / "librispeech" / "conf" / "codec_tiny.yaml"


def parse_args(doc: str, prefix: str) -> tuple[argparse.Namespace, pathlib.Path]:
    """The examples' options (``--corpus``, ``--model``, ``--work``) and the work folder (created; a temporary
    one named ``prefix...`` without ``--work``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(CORPUS), help="speech-mini, or a corpus in LibriSpeech layout")
    parser.add_argument("--model", help="a codec's model.pt (default: an untrained tiny codec)")
    parser.add_argument("--work", help="folder for the data and the units (default: a temporary one)")
    args = parser.parse_args()
    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    return args, work


def codec_file(model: str | None, work: pathlib.Path) -> pathlib.Path:
    """``model``, or a codec of codec_tiny.yaml's architecture with random weights saved under ``work``."""
    if model:
        return pathlib.Path(model)
    torch.manual_seed(0)
    codec = Codec(from_dict(CodecConfig, yaml.safe_load(TINY.read_text())["model"], where=str(TINY))).eval()
    return codec.save_pretrained(work / "codec_untrained.pt")


def split_dir(corpus: pathlib.Path, split: str) -> pathlib.Path:
    """``corpus/LibriSpeech/<split>``, or exit with a message saying where speech-mini should be."""
    src = corpus / "LibriSpeech" / split
    if not src.is_dir():
        raise SystemExit(f"no {src}: pass --corpus (speech-mini, or any corpus in LibriSpeech layout)")
    return src


def kaldi_data_dir(corpus: pathlib.Path, split: str, work: pathlib.Path) -> pathlib.Path:
    """A Kaldi data dir of ``corpus/LibriSpeech/<split>`` made by the LibriSpeech recipe's data_prep.sh."""
    dst = work / "data" / split.replace("-", "_")
    env = {**os.environ, "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        ["bash", str(ROOT / "recipes/librispeech/local/data_prep.sh"), str(split_dir(corpus, split)), str(dst)],
        check=True,
        env=env,
    )
    return dst


def extract_units(*args: str) -> None:
    """Run ``vqaudio extract-units ARGS`` (printing the command); exit when it fails."""
    print("$ vqaudio extract-units " + shlex.join(args))
    if vqaudio(["extract-units", *args]) != 0:
        raise SystemExit("extract-units failed")
