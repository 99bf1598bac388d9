#!/usr/bin/env bash
# LibriSpeech recipe: data -> train codec -> extract units -> resynthesize and evaluate -> train prior -> sample.
# Every stage is idempotent (a .done marker in its output dir) and logs to exp/<tag>/log/.
set -euo pipefail
cd "$(dirname "$0")"

# Options (each settable as --name value; see --help).
stage=0
stop_stage=6
corpus_dir=downloads          # holds LibriSpeech/<part>; pass an existing copy to skip the download
subset=mini                   # mini (train-clean-5 + dev-clean-2), 100, 360 or 960
codec_config=conf/codec_tiny.yaml
prior_config=conf/prior_tiny.yaml
nj=2                          # parallel extraction jobs
tag=tiny                      # experiments go to exp/<tag>
num_samples=4                 # stage 6: utterances to sample
sample_seconds=4
help_message="Usage: $0 [options]
  --stage N / --stop_stage N   run stages N..M (default 0..6):
        0 download (skipped when --corpus_dir already holds the parts)   1 data prep and validation
        2 train codec   3 extract units (--nj jobs, merged)   4 resynthesize dev/test and evaluate
        5 train the prior   6 sample speech and summarise it
  --corpus_dir DIR             where LibriSpeech/<part> lives or is downloaded to (default $corpus_dir)
  --subset mini|100|360|960    mini = train-clean-5 + dev-clean-2 (openslr 31); others openslr 12
  --codec_config FILE          (default $codec_config; conf/codec_base.yaml for GPUs)
  --prior_config FILE          (default $prior_config; conf/prior_base.yaml for GPUs)
  --nj N                       parallel unit-extraction jobs (default $nj)
  --tag NAME                   experiment name under exp/ (default $tag)
  --config FILE                a file of name=value lines, read before the other options
Example (offline copy of the mini subsets): $0 --corpus_dir /data/speech-mini"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh

case "$subset" in
  mini) train_parts="train-clean-5"; dev_parts="dev-clean-2"; test_parts=""; url=https://www.openslr.org/resources/31 ;;
  100) train_parts="train-clean-100"; dev_parts="dev-clean"; test_parts="test-clean"; url=https://www.openslr.org/resources/12 ;;
  360) train_parts="train-clean-100 train-clean-360"; dev_parts="dev-clean"; test_parts="test-clean"; url=https://www.openslr.org/resources/12 ;;
  960) train_parts="train-clean-100 train-clean-360 train-other-500"; dev_parts="dev-clean"; test_parts="test-clean test-other"; url=https://www.openslr.org/resources/12 ;;
  *) echo "$0: --subset must be mini, 100, 360 or 960, got '$subset'" >&2; exit 1 ;;
esac
name() { echo "$1" | tr '-' '_'; }
train_set=train_$(echo $train_parts | tr ' -' '__' | sed 's/^train_//')
[ "$subset" == "mini" ] && train_set=train_clean_5
eval_sets="$(for p in $dev_parts $test_parts; do name $p; done | xargs)"
dev_set=$(name ${dev_parts%% *})
exp=exp/$tag
log() { echo "$(date '+%F %T') [stage $1] ${*:2}"; }
done_or_run() { [ -f "$1/.done" ] && { log "$2" "$1 is done, skipping"; return 1; }; return 0; }
need() { [ -e "$1" ] || { echo "$0: $1 is missing: run stage $2 first (--stage $2)" >&2; exit 1; }; }

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  for part in $train_parts $dev_parts $test_parts; do
    if [ -d "$corpus_dir/LibriSpeech/$part" ]; then
      log 0 "$corpus_dir/LibriSpeech/$part is there"
    else
      log 0 "downloading $part into $corpus_dir"
      local/download_and_untar.sh "$corpus_dir" "$url" "$part"
    fi
  done
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  for part in $train_parts $dev_parts $test_parts; do
    need "$corpus_dir/LibriSpeech/$part" 0
    d=data/$(name $part)
    done_or_run "$d" 1 || continue
    log 1 "preparing $d"
    local/data_prep.sh "$corpus_dir/LibriSpeech/$part" "$d"
    utils/validate_data_dir.sh "$d"
    touch "$d/.done"
  done
  if [ "$subset" != "mini" ] && [ $(echo $train_parts | wc -w) -gt 1 ] && [ ! -f data/$train_set/.done ]; then
    mkdir -p data/$train_set
    for f in wav.scp text utt2spk utt2dur; do
      for p in $train_parts; do cat data/$(name $p)/$f; done | LC_ALL=C sort > data/$train_set/$f
    done
    utils/fix_data_dir.sh data/$train_set && utils/validate_data_dir.sh data/$train_set && touch data/$train_set/.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  need data/$train_set/.done 1
  if done_or_run $exp/codec 2; then
    resume=""; [ -f $exp/codec/checkpoints/last.ckpt ] && resume="--resume"
    log 2 "training the codec in $exp/codec ${resume:+(resuming)}"
    run_cmd $exp/log/train_codec.log vqaudio train-codec --config "$codec_config" --train-data data/$train_set \
      --valid-data data/$dev_set --exp-dir $exp/codec $resume
    touch $exp/codec/.done
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  need $exp/codec/model.pt 2
  for set in $train_set $eval_sets; do
    out=$exp/units/$set
    done_or_run $out 3 || continue
    log 3 "extracting units of data/$set with $nj jobs"
    pids=()
    for job in $(seq $nj); do
      run_cmd $exp/log/extract_$set.$job.log vqaudio extract-units --model $exp/codec/model.pt --data data/$set \
        --out $out --format kaldi,fairseq --nj $nj --job $job --threads 1 > /dev/null &
      pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait $pid || failed=1; done
    [ -f $out/units ] || { echo "$0: extraction of $set did not finish; see $exp/log/extract_$set.*.log" >&2; exit 1; }
    [ $failed -eq 0 ] || log 3 "some utterances of $set failed: see $out/failed.txt"
    touch $out/.done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  for set in $eval_sets; do
    need $exp/units/$set/.done 3
    if done_or_run $exp/resynth/$set 4; then
      log 4 "resynthesizing $set"
      run_cmd $exp/log/resynth_$set.log vqaudio resynth --model $exp/codec/model.pt --units $exp/units/$set \
        --out $exp/resynth/$set
      touch $exp/resynth/$set/.done
    fi
    if done_or_run $exp/eval/$set 4; then
      log 4 "evaluating $set"
      run_cmd $exp/log/evaluate_$set.log vqaudio evaluate --ref data/$set --hyp $exp/resynth/$set \
        --units $exp/units/$set --out $exp/eval/$set
      touch $exp/eval/$set/.done
    fi
  done
  { echo "# $tag: resynthesis"; for set in $eval_sets; do echo; tail -n +2 $exp/eval/$set/RESULTS.md; done; } > $exp/RESULTS.md
  log 4 "results in $exp/RESULTS.md"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  need $exp/units/$train_set/.done 3
  if done_or_run $exp/prior 5; then
    resume=""; [ -f $exp/prior/checkpoints/last.ckpt ] && resume="--resume"
    log 5 "training the prior in $exp/prior ${resume:+(resuming)}"
    run_cmd $exp/log/train_prior.log vqaudio train-prior --config "$prior_config" --train-units $exp/units/$train_set \
      --valid-units $exp/units/$dev_set --exp-dir $exp/prior $resume
    touch $exp/prior/.done
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  need $exp/prior/prior.pt 5
  if done_or_run $exp/samples 6; then
    log 6 "sampling $num_samples utterances of ${sample_seconds}s"
    run_cmd $exp/log/sample.log vqaudio sample --prior $exp/prior --codec $exp/codec/model.pt --num $num_samples \
      --seconds $sample_seconds --out $exp/samples
    touch $exp/samples/.done
  fi
fi
log done "stages $stage..$stop_stage finished"
