"""Phonetic quality of units at equal K, training steps and bitrate: k-means baselines (over spectra, and over
the layers of HuBERTs trained here from scratch with `vqaudio train-ssl`) against the codec's level 0 trained
for reconstruction only, with a CTC content objective, a k-means one, and a distill one.

    python benchmarks/unit_quality.py [--steps 800] [--work /tmp/vqaudio_unit_quality]   # about 1 h on 2 cores

Data: ../shared/data/speech-mini. Held out (the test set, never trained on): the test-other speakers 1688,
2033, 3080 and 533, the VCTK speaker 9926 (p226) and the LibriVox reader 9905: 55 utterances, all with
pocketsphinx phone alignments. Everything else (253 utterances, 111 speakers, 153 with transcripts) trains
the k-means models and the codecs; 8 of its utterances pick the codecs' best checkpoints.

Every codec is recipes/librispeech/conf/codec_tiny.yaml (2 x 256 EMA RVQ, 800 bit/s) trained for --steps
steps; only the content objective (and, where a row says so, the speaker normalisation of level 0's input,
the encoder's width or LSTMs on the latents) differs. Every row uses K = 256 for its units. Units are scored with
`vqaudio evaluate-units` on the held-out speakers (the probe trains on the training speakers' units of
the same model), and resynthesis with `vqaudio evaluate` with all levels and with level 0 only.
The HuBERT iterations (`--ssl-steps` steps of recipes/librispeech/conf/ssl_tiny.yaml each) are trained when a
row needs them: iteration 1 predicts the CMVN 5-frame MFCC k-means units, iteration 2 the k-means units of
iteration 1's layer SSL_TARGET_LAYER.
Each step is skipped when its output exists, so a killed run continues.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from dataclasses import dataclass, field

import yaml
from speech_mini import CTM, ROOT, SHARED, prepare_data, vqaudio

KM = "km/mfcc.pt"
KM_CTX = "km/mfcc_ctx2.pt"  # 13 MFCCs, per-utterance CMVN, 5 frames spliced
KMEANS = {  # k-means baselines: file stem -> (row label, train-kmeans options)
    "mfcc": ("MFCC k-means", ["--feature", "mfcc"]),
    "logmel": ("log-mel k-means", ["--feature", "logmel"]),
    "mfcc_ctx2": ("MFCC k-means, CMVN, 5 frames", ["--feature", "mfcc", "--no-deltas", "--cmvn", "--context", "2"]),
}
SSL_TARGET_LAYER = 3  # the layer of iteration 1 whose k-means units iteration 2 predicts, and the distill teacher
SSL_MODELS = {  # HuBERT trained here -> (label, the k-means stem of the units it predicts)
    "ssl_it1": ("train-ssl iteration 1", "mfcc_ctx2"),
    "ssl_it2": ("train-ssl iteration 2", f"ssl_it1_l{SSL_TARGET_LAYER}"),
}
for _name, (_label, _) in SSL_MODELS.items():
    for _layer in (1, 2, 3, 4):
        KMEANS[f"{_name}_l{_layer}"] = (
            f"k-means of {_label}, layer {_layer}",
            ["--feature", "ssl", "--ssl-model", f"exp/{_name}", "--layer", str(_layer)],
        )
LSTM = {"lstm": 2, "lstm_dim": 64}  # level 0 quantizes latents with the encoder's long context


@dataclass(frozen=True)
class Row:
    """One codec row: its label, content config, level-0 speaker normalisation, model overrides and seed."""

    label: str
    content: dict
    normalize: bool = False
    model: dict = field(default_factory=dict)  # over codec_tiny.yaml's model section
    seed: int = 0


CODECS = {
    "recon": Row("codec, reconstruction only", {"objective": "none"}),
    "ctc1": Row("codec, ctc (weight 1)", {"objective": "ctc", "batch_size": 2, "max_seconds": 8.0}),
    "ctc10_norm": Row(
        "codec, ctc (weight 10), level 0 speaker-normalised",
        {"objective": "ctc", "batch_size": 2, "max_seconds": 8.0, "weight": 10.0},
        normalize=True,
    ),
    "km1": Row("codec, kmeans on MFCC k-means (weight 1)", {"objective": "kmeans", "targets": KM}),
    "km3_norm": Row(
        "codec, kmeans (weight 3), speaker-normalised",
        {"objective": "kmeans", "targets": KM, "weight": 3.0},
        normalize=True,
    ),
    "km10": Row("codec, kmeans (weight 10)", {"objective": "kmeans", "targets": KM, "weight": 10.0}),
    "km10_norm": Row(
        "codec, kmeans (weight 10), speaker-normalised",
        {"objective": "kmeans", "targets": KM, "weight": 10.0},
        normalize=True,
    ),
    "km30": Row("codec, kmeans (weight 30)", {"objective": "kmeans", "targets": KM, "weight": 30.0}),
    "km10_logmel": Row(
        "codec, kmeans on log-mel k-means (weight 10)",
        {"objective": "kmeans", "targets": "km/logmel.pt", "weight": 10.0},
    ),
    "km10_wide_head": Row(
        "codec, kmeans (weight 10), 5-frame head",
        {"objective": "kmeans", "targets": KM, "weight": 10.0, "head_kernel": 5},
    ),
    "recon_enc32": Row(
        "codec, reconstruction only, 32-channel encoder", {"objective": "none"}, model={"encoder_channels": 32}
    ),
    "km10_enc32": Row(
        "codec, kmeans (weight 10), 32-channel encoder",
        {"objective": "kmeans", "targets": KM, "weight": 10.0},
        model={"encoder_channels": 32},
    ),
    "km5_enc32": Row(
        "codec, kmeans (weight 5), 32-channel encoder",
        {"objective": "kmeans", "targets": KM, "weight": 5.0},
        model={"encoder_channels": 32},
    ),
    "km10_frame": Row(
        "codec, kmeans (weight 10), per-frame head",
        {"objective": "kmeans", "targets": KM, "weight": 10.0, "head_kernel": 1},
    ),
    "km30_frame": Row(
        "codec, kmeans (weight 30), per-frame head",
        {"objective": "kmeans", "targets": KM, "weight": 30.0, "head_kernel": 1},
    ),
    "recon_lstm": Row("codec, reconstruction only, 64-unit LSTMs", {"objective": "none"}, model=LSTM),
    "km10_lstm": Row(
        "codec, kmeans (weight 10), 64-unit LSTMs", {"objective": "kmeans", "targets": KM, "weight": 10.0}, model=LSTM
    ),
    "km3_lstm": Row(
        "codec, kmeans (weight 3), 64-unit LSTMs", {"objective": "kmeans", "targets": KM, "weight": 3.0}, model=LSTM
    ),
    "km3_ctx_lstm": Row(
        "codec, kmeans on CMVN 5-frame MFCC k-means (weight 3), 64-unit LSTMs",
        {"objective": "kmeans", "targets": KM_CTX, "weight": 3.0},
        model=LSTM,
    ),
    "km1_ctx_lstm": Row(
        "codec, kmeans on CMVN 5-frame MFCC k-means (weight 1), 64-unit LSTMs",
        {"objective": "kmeans", "targets": KM_CTX, "weight": 1.0},
        model=LSTM,
    ),
    "ctc3_bilstm_lstm": Row(
        "codec, ctc (weight 3), 2-layer BiLSTM head, 64-unit LSTMs",
        {"objective": "ctc", "batch_size": 2, "max_seconds": 8.0, "weight": 3.0, "head_lstm": 2},
        model=LSTM,
    ),
    "recon_enc32_lstm": Row(
        "codec, reconstruction only, 32-channel encoder, 64-unit LSTMs",
        {"objective": "none"},
        model={"encoder_channels": 32, **LSTM},
    ),
    "km3_ctx_enc32_lstm": Row(
        "codec, kmeans on CMVN 5-frame MFCC k-means (weight 3), 32-channel encoder, 64-unit LSTMs",
        {"objective": "kmeans", "targets": KM_CTX, "weight": 3.0},
        model={"encoder_channels": 32, **LSTM},
    ),
    "km10_ctx_enc32_lstm": Row(
        "codec, kmeans on CMVN 5-frame MFCC k-means (weight 10), 32-channel encoder, 64-unit LSTMs",
        {"objective": "kmeans", "targets": KM_CTX, "weight": 10.0},
        model={"encoder_channels": 32, **LSTM},
    ),
    "recon_enc32_lstm_seed1": Row(
        "codec, reconstruction only, 32-channel encoder, 64-unit LSTMs, seed 1",
        {"objective": "none"},
        model={"encoder_channels": 32, **LSTM},
        seed=1,
    ),
    "km3_ctx_enc32_lstm_seed1": Row(
        "codec, kmeans on CMVN 5-frame MFCC k-means (weight 3), 32-channel encoder, 64-unit LSTMs, seed 1",
        {"objective": "kmeans", "targets": KM_CTX, "weight": 3.0},
        model={"encoder_channels": 32, **LSTM},
        seed=1,
    ),
    "distill10_ctx_enc32_lstm": Row(
        "codec, distill from CMVN 5-frame MFCCs (weight 10), 32-channel encoder, 64-unit LSTMs",
        {"objective": "distill", "teacher": "mfcc", "weight": 10.0},
        model={"encoder_channels": 32, **LSTM},
    ),
    "distill10_ssl_enc32_lstm": Row(
        f"codec, distill from train-ssl iteration 1, layer {SSL_TARGET_LAYER} (weight 10), 32-channel encoder, "
        "64-unit LSTMs",
        {"objective": "distill", "teacher": "exp/ssl_it1", "teacher_layers": [SSL_TARGET_LAYER], "weight": 10.0},
        model={"encoder_channels": 32, **LSTM},
    ),
    "km10_ctx_lstm": Row(
        "codec, kmeans on CMVN 5-frame MFCC k-means (weight 10), 64-unit LSTMs",
        {"objective": "kmeans", "targets": KM_CTX, "weight": 10.0},
        model=LSTM,
    ),
}


def cell(row: dict, key: str, fmt: str) -> str:
    """A table cell: blank where the measure was not taken or is undefined (ABX without enough items)."""
    return "" if row.get(key) is None else format(row[key], fmt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=800, help="codec training steps (every codec)")
    parser.add_argument("--work", default="/tmp/vqaudio_unit_quality", help="work dir (resumable)")
    parser.add_argument("--rows", nargs="*", choices=list(CODECS), default=list(CODECS), help="codec rows to run")
    parser.add_argument(
        "--kmeans",
        nargs="+",
        choices=list(KMEANS),
        default=[k for k in KMEANS if not k.startswith("ssl_")],
        help="k-means baselines (default the spectral ones; ssl_itN_lL trains HuBERT iteration N first)",
    )
    parser.add_argument("--corpus", type=pathlib.Path, default=SHARED, help="speech-mini (default ../shared/...)")
    parser.add_argument("--no-probe", action="store_true", help="leave out the phone-recogniser probe (probe PER)")
    parser.add_argument("--ssl-steps", type=int, default=2000, help="train-ssl steps of each HuBERT iteration")
    args = parser.parse_args()
    for name in args.rows:
        stem = pathlib.Path(CODECS[name].content.get("targets", "")).stem
        if stem and stem not in args.kmeans:
            raise SystemExit(f"row {name} trains on the k-means baseline {stem}: add it to --kmeans")
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if not (work / "data" / "test" / "wav.scp").is_file():
        prepare_data(work, args.corpus)
    ssl_conf = yaml.safe_load((ROOT / "recipes" / "librispeech" / "conf" / "ssl_tiny.yaml").read_text())
    ssl_conf["trainer"].update(max_steps=args.ssl_steps, val_every=max(1, args.ssl_steps // 8))
    ssl_conf["trainer"]["checkpoint_every"] = max(1, args.ssl_steps // 8)
    ssl_conf["optim"]["warmup_steps"] = args.ssl_steps // 10

    def train(command: str, conf: pathlib.Path, exp: pathlib.Path, *options: str) -> None:
        """Run a training command on data/train (validated on data/dev), resuming a killed run."""
        resume = ["--resume"] if (exp / "checkpoints" / "last.ckpt").is_file() else []
        vqaudio(
            command,
            "--config",
            str(conf),
            *options,
            "--train-data",
            "data/train",
            "--valid-data",
            "data/dev",
            "--exp-dir",
            str(exp),
            *resume,
            cwd=work,
        )

    def ssl_model(name: str) -> None:
        """Train the HuBERT iteration ``name`` (and what it needs) unless it is there."""
        exp = work / "exp" / name
        if (exp / "model.safetensors").is_file():
            return
        targets = kmeans(SSL_MODELS[name][1])
        conf = work / f"{name}.yaml"
        text = yaml.safe_dump(ssl_conf)
        if conf.is_file() and conf.read_text() != text:
            raise SystemExit(f"{conf} was written by other settings (--ssl-steps changed): use another --work")
        conf.write_text(text)
        train("train-ssl", conf, exp, "--targets", str(targets))

    def kmeans(stem: str) -> pathlib.Path:
        """The k-means baseline ``stem``, trained (with the HuBERT it clusters) unless it is there."""
        options = KMEANS[stem][1]
        if "--ssl-model" in options:
            ssl_model(pathlib.Path(options[options.index("--ssl-model") + 1]).name)
        km = work / "km" / f"{stem}.pt"
        if not km.is_file():
            vqaudio("train-kmeans", *options, "--k", "256", "--data", "data/train", "--out", str(km), cwd=work)
        return km

    models = {KMEANS[stem][0]: kmeans(stem) for stem in args.kmeans}
    for name in args.rows:
        teacher = CODECS[name].content.get("teacher", "")
        if teacher.startswith("exp/"):
            ssl_model(pathlib.Path(teacher).name)
    base = yaml.safe_load((ROOT / "recipes" / "librispeech" / "conf" / "codec_tiny.yaml").read_text())
    base["trainer"].update(max_steps=args.steps, val_every=max(1, args.steps // 4), checkpoint_every=100)
    for name in args.rows:
        spec = CODECS[name]
        exp = work / "exp" / name
        conf = work / f"{name}.yaml"
        model = {**base["model"], "quantizer": {**base["model"]["quantizer"], "normalize_first": spec.normalize}}
        model.update(spec.model)
        trainer = {**base["trainer"], "seed": spec.seed} if spec.seed else base["trainer"]
        text = yaml.safe_dump({**base, "model": model, "content": spec.content, "trainer": trainer})
        if conf.is_file() and conf.read_text() != text:
            raise SystemExit(f"{conf} was written by other settings (--steps or the row changed): use another --work")
        conf.write_text(text)
        if not (exp / "model.pt").is_file():
            train("train-codec", conf, exp)
        models[spec.label] = exp / "model.pt"
    rows = {}
    for label, model in models.items():
        n = model.stem if model.parent.name == "km" else model.parent.name
        units = {s: work / "units" / f"{n}_{s}" for s in ("train", "test")}
        for s, out in units.items():
            if not (out / "units.json").is_file():
                vqaudio("extract-units", "--model", str(model), "--data", f"data/{s}", "--out", str(out), cwd=work)
        quality = work / "quality" / n
        if not (quality / "unit_quality.json").is_file():
            vqaudio(
                "evaluate-units",
                "--units",
                str(units["test"]),
                "--alignments",
                str(args.corpus / CTM),
                "--data",
                "data/test",
                *([] if args.no_probe else ["--probe-train", str(units["train"])]),
                "--out",
                str(quality),
                cwd=work,
            )
        row = json.loads((quality / "unit_quality.json").read_text())
        if label.startswith("codec"):
            for n_q in ("2", "1"):
                hyp, ev = work / "resynth" / f"{n}_q{n_q}", work / "eval" / f"{n}_q{n_q}"
                if not (ev / "metrics.json").is_file():
                    vqaudio(
                        "resynth",
                        "--model",
                        str(model),
                        "--units",
                        str(units["test"]),
                        "--n-q",
                        n_q,
                        "--out",
                        str(hyp),
                        cwd=work,
                    )
                    vqaudio("evaluate", "--ref", "data/test", "--hyp", str(hyp), "--out", str(ev), cwd=work)
                metrics = json.loads((ev / "metrics.json").read_text())
                row[f"log_mel_q{n_q}"], row[f"stoi_q{n_q}"] = metrics["log_mel_distance"], metrics["stoi"]
        rows[label] = row
    (work / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\n{len(rows)} unit models, {args.steps} codec steps each, {time.time() - t0:.0f} s in all\n")
    print(
        "| units (K = 256, level 0) | PNMI | phone purity | ABX within % | ABX across % | ABX any-context % "
        "| probe PER % | log-mel, all levels | STOI, all levels | log-mel, level 0 | STOI, level 0 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        cells = [cell(r, k, ".3f") for k in ("pnmi", "phone_purity")]
        cells += [cell(r, k, ".1f") for k in ("abx_within", "abx_across", "abx_phone_any_context", "probe_per")]
        cells += [cell(r, k, ".3f") for k in ("log_mel_q2", "stoi_q2", "log_mel_q1", "stoi_q1")]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
