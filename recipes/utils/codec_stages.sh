#!/usr/bin/env bash
# Stages 2-6 shared by every recipe: train codec, extract units, resynthesize and evaluate, train the prior,
# sample. Run from a recipe dir (it reads ./path.sh and ./cmd.sh) after the recipe's own stages 0-1:
#   utils/codec_stages.sh --exp exp/tiny --train_set train_clean_5 --dev_set dev_clean_2 \
#       --eval_sets "dev_clean_2" --codec_config conf/codec_tiny.yaml --prior_config conf/prior_tiny.yaml
# Each stage is idempotent (a .done marker in its output dir), launches its jobs through cmd.sh's
# $cuda_cmd (training) and $decode_cmd (extraction, resynthesis, sampling) and logs to EXP/log/.
set -euo pipefail

stage=2
stop_stage=6
exp=                # experiment dir (required)
train_set=          # data/<train_set> trains the codec and the prior (required)
dev_set=            # data/<dev_set> validates them (required)
eval_sets=          # space-separated sets to extract, resynthesize and evaluate (required)
codec_config=       # YAML for vqaudio train-codec (required)
prior_config=       # YAML for vqaudio train-prior (required)
nj=2                # parallel unit-extraction jobs per set
num_samples=4       # stage 6: utterances to sample
sample_seconds=4    # stage 6: seconds per sample
alignments=         # stage 4: a phone CTM; when set, the units' phonetic quality is scored too
help_message="Usage: $0 --exp DIR --train_set SET --dev_set SET --eval_sets \"SET...\" \\
    --codec_config FILE --prior_config FILE [--stage N] [--stop_stage N] [--nj N] [--num_samples N]
    [--sample_seconds S] [--alignments PHONES.ctm]
  Stages: 2 train codec  3 extract units (--nj jobs, merged)  4 resynthesize and evaluate (with
          --alignments also vqaudio evaluate-units: PNMI, purity, ABX)
          5 train the prior  6 sample speech and summarise it"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/recipe_lib.sh
check_stages "$stage" "$stop_stage" 0 6
for option in exp train_set dev_set eval_sets codec_config prior_config; do
  [ -n "${!option}" ] || { echo "$0: --$option is required (see --help)" >&2; exit 1; }
done

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  need data/$train_set/.done 1
  if done_or_run $exp/codec 2; then
    resume=""; [ -f $exp/codec/checkpoints/last.ckpt ] && resume="--resume"
    log 2 "training the codec in $exp/codec ${resume:+(resuming)}; log: $exp/log/train_codec.log"
    $cuda_cmd $exp/log/train_codec.log vqaudio train-codec --config "$codec_config" --train-data data/$train_set \
      --valid-data data/$dev_set --exp-dir $exp/codec $resume
    touch $exp/codec/.done
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  need $exp/codec/model.pt 2
  for set in $train_set $eval_sets; do
    out=$exp/units/$set
    done_or_run $out 3 || continue
    log 3 "extracting units of data/$set with $nj jobs; logs: $exp/log/extract_$set.*.log"
    # Exit status 1 means some utterances failed (listed in failed.txt); the merged units are still written.
    $decode_cmd JOB=1:$nj $exp/log/extract_$set.JOB.log vqaudio extract-units --model $exp/codec/model.pt \
      --data data/$set --out $out --format kaldi,fairseq --nj $nj --job JOB --threads 1 \
      || log 3 "some utterances of $set failed: see $out/failed.txt"
    [ -f $out/units ] || { echo "$0: extraction of $set did not finish; see $exp/log/extract_$set.*.log" >&2; exit 1; }
    touch $out/.done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for set in $eval_sets; do
    need $exp/units/$set/.done 3
    if done_or_run $exp/resynth/$set 4; then
      log 4 "resynthesizing $set"
      $decode_cmd $exp/log/resynth_$set.log vqaudio resynth --model $exp/codec/model.pt --units $exp/units/$set \
        --out $exp/resynth/$set
      touch $exp/resynth/$set/.done
    fi
    if done_or_run $exp/eval/$set 4; then
      log 4 "evaluating $set"
      $train_cmd $exp/log/evaluate_$set.log vqaudio evaluate --ref data/$set --hyp $exp/resynth/$set \
        --units $exp/units/$set --out $exp/eval/$set
      touch $exp/eval/$set/.done
    fi
    if [ -n "$alignments" ] && done_or_run $exp/unit_quality/$set 4; then
      log 4 "scoring the units of $set against $alignments"
      $train_cmd $exp/log/evaluate_units_$set.log vqaudio evaluate-units --units $exp/units/$set \
        --alignments "$alignments" --data data/$set --out $exp/unit_quality/$set
      touch $exp/unit_quality/$set/.done
    fi
  done
  {
    echo "# $(basename $exp): resynthesis"
    for set in $eval_sets; do echo; tail -n +2 $exp/eval/$set/RESULTS.md; done
    if [ -n "$alignments" ]; then
      echo; echo "# $(basename $exp): units"
      for set in $eval_sets; do echo; tail -n +2 $exp/unit_quality/$set/RESULTS.md; done
    fi
  } > $exp/RESULTS.md
  log 4 "results in $exp/RESULTS.md"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  need $exp/units/$train_set/.done 3
  if done_or_run $exp/prior 5; then
    resume=""; [ -f $exp/prior/checkpoints/last.ckpt ] && resume="--resume"
    log 5 "training the prior in $exp/prior ${resume:+(resuming)}; log: $exp/log/train_prior.log"
    $cuda_cmd $exp/log/train_prior.log vqaudio train-prior --config "$prior_config" \
      --train-units $exp/units/$train_set --valid-units $exp/units/$dev_set --exp-dir $exp/prior $resume
    touch $exp/prior/.done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  need $exp/prior/prior.pt 5
  if done_or_run $exp/samples 6; then
    log 6 "sampling $num_samples utterances of ${sample_seconds}s"
    $decode_cmd $exp/log/sample.log vqaudio sample --prior $exp/prior --codec $exp/codec/model.pt \
      --num $num_samples --seconds $sample_seconds --out $exp/samples
    touch $exp/samples/.done
  fi
fi
