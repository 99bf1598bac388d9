"""``vqaudio train-prior`` and ``vqaudio sample``."""

from __future__ import annotations

import argparse

SAMPLE_HELP = """Generate units with the prior and decode them with the codec: OUT/sample_<i>.wav, their units
(units, units.level<q>) and summary.json (unit entropy, codebook usage, repetition rate, longest run:
silence loops show as a high repetition rate). Reproducible from --seed.

examples:
  vqaudio sample --prior exp/prior --codec exp/codec/model.pt --num 4 --seconds 4 --out exp/samples
  vqaudio sample --prior exp/prior --codec exp/codec/model.pt --top-p 0.9 --speaker 1272 \\
      --prompt exp/units/dev_clean_2 --prompt-utt 1272-128104-0000 --prompt-seconds 1 --out exp/continued
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-prior",
        help="train the WaveNet prior on unit dirs",
        description="Train a WaveNet prior over units written by `vqaudio extract-units` (Lightning). The "
        "experiment dir gets config.yaml, log/train.log, TensorBoard events (train/val NLL in bits per "
        "unit, perplexity), checkpoints/{last,best}.ckpt and prior.pt (best val/nll_bits). With --speakers "
        "the prior is conditioned on the speaker of each utterance (from --utt2spk, else the utterance id's "
        "prefix before its first '-', as in LibriSpeech); id 0 stands for unseen speakers.",
    )
    p.add_argument("--config", help="YAML config (recipes/librispeech/conf/prior_*.yaml); defaults when omitted")
    p.add_argument("--train-units", required=True, help="units dir (with units.json) for training")
    p.add_argument("--valid-units", required=True, help="units dir for validation")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR/checkpoints/last.ckpt")
    p.add_argument(
        "--allow-config-change",
        action="store_true",
        help="with --resume: continue with --config where it differs from EXP_DIR/config.yaml (refused otherwise)",
    )
    p.add_argument("--max-steps", type=int, help="override trainer.max_steps")
    p.add_argument("--speakers", action="store_true", help="condition on speakers (sets data.speakers: true)")
    p.add_argument("--utt2spk", help="Kaldi utt2spk of the training data (e.g. data/train_clean_5/utt2spk)")
    p.add_argument(
        "--any-model",
        action="store_true",
        help="accept validation units made by another model than the training units (refused otherwise)",
    )
    p.set_defaults(func=run_train_prior)

    p = sub.add_parser(
        "sample",
        help="sample new speech from a prior through a codec",
        description=SAMPLE_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prior", required=True, help="prior.pt or the train-prior experiment dir")
    p.add_argument("--codec", required=True, help="model.pt of the codec the units came from")
    p.add_argument("--num", type=int, default=4, help="utterances to sample (default 4)")
    p.add_argument("--seconds", type=float, default=4.0, help="seconds to generate after the prompt (default 4)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1)")
    p.add_argument("--top-k", type=int, help="sample from the k most likely units only")
    p.add_argument("--top-p", type=float, help="nucleus sampling: the fewest units holding this probability")
    p.add_argument("--speaker", help="a training speaker's name (speaker-conditioned priors)")
    p.add_argument("--prompt", help="units dir holding the prompt utterance")
    p.add_argument("--prompt-utt", help="the utterance of --prompt to continue")
    p.add_argument("--prompt-seconds", type=float, help="use only its first seconds (default all of it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--any-model",
        action="store_true",
        help="decode with a codec (and continue a prompt of units) other than the model the prior's units came from",
    )
    p.set_defaults(func=run_sample)


def run_train_prior(args: argparse.Namespace) -> int:
    from ..train.run_prior import train_prior

    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else {}
    data = {"speakers": True} if args.speakers else {}
    path = train_prior(
        args.config,
        args.train_units,
        args.valid_units,
        args.exp_dir,
        args.resume,
        overrides,
        utt2spk=args.utt2spk,
        data_overrides=data,
        allow_config_change=args.allow_config_change,
        any_model=args.any_model,
    )
    print(f"prior written to {path}")
    return 0


def load_prompt(units_dir: str, utt: str | None, seconds: float | None, n_q: int, unit_model: str | None = None):
    """``(n_q, T0)`` units of one utterance of a units dir, cut to its first ``seconds``; with ``unit_model``
    (a model checksum), units of another model are refused."""
    import torch

    from ..errors import UserError
    from ..units.formats import read_info, read_levels

    if utt is None:
        raise UserError("--prompt needs --prompt-utt, the utterance to continue")
    info = read_info(units_dir)
    if unit_model is not None and info.model_checksum != unit_model:
        raise UserError(
            f"{units_dir}: the prompt's units were made by another model than the prior's (checksum "
            f"{info.model_checksum[:12]}... against {unit_model[:12]}...); pass --any-model to continue it anyway"
        )
    if info.dedup:
        raise UserError(f"{units_dir}: deduplicated units have no durations; extract a prompt without --dedup")
    table = read_levels(units_dir, n_q)
    if utt not in table:
        raise UserError(f"{units_dir}: no utterance {utt!r}")
    codes = torch.tensor(table[utt], dtype=torch.long)
    if seconds is not None:
        if not seconds > 0:
            raise UserError(f"--prompt-seconds must be > 0, got {seconds}")
        codes = codes[:, : max(1, round(seconds * info.frame_rate))]
    return codes


def run_sample(args: argparse.Namespace) -> int:
    import json

    from ..checkpoint import same_model
    from ..errors import UserError
    from ..models.codec import Codec
    from ..models.sampling import sample_speech
    from ..train.run_prior import load_prior

    prior = load_prior(args.prior)
    recorded = prior.config.unit_model
    if recorded is not None and not args.any_model and not same_model(recorded, args.codec):
        raise UserError(
            f"{args.prior} models the units of another model than {args.codec} (checksum {recorded[:12]}...); "
            "pass --any-model to decode its units with this codec anyway"
        )
    codec = Codec.from_pretrained(args.codec)
    if prior.codebook_size > codec.codebook_size or prior.n_q > codec.n_q:
        raise UserError(
            f"{args.prior} samples {prior.n_q} level(s) of {prior.codebook_size} units; {args.codec} decodes at most "
            f"{codec.n_q} level(s) of {codec.codebook_size}"
        )
    check = None if args.any_model else recorded
    prompt = (
        None
        if args.prompt is None
        else load_prompt(args.prompt, args.prompt_utt, args.prompt_seconds, prior.n_q, unit_model=check)
    )
    summary = sample_speech(
        prior,
        codec,
        args.out,
        args.num,
        args.seconds,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        speaker=args.speaker,
        prompt=prompt,
    )
    print(json.dumps(summary, indent=2))
    return 0
