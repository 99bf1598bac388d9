#!/usr/bin/env bash
# LJSpeech recipe (one speaker): data -> codec -> units -> resynthesis + evaluation -> prior -> samples.
# Stages 2-6 are the shared script utils/codec_stages.sh.
set -euo pipefail
caller_dir=$PWD                 # relative paths given as options are read from here (from_caller)
cd "$(dirname "$0")"
stage=0
stop_stage=6
codec_config=conf/codec_tiny.yaml
prior_config=conf/prior_tiny.yaml
nj=2                          # parallel extraction jobs
num_samples=4                 # stage 6: utterances to sample
sample_seconds=4
corpus_dir=downloads/LJSpeech-1.1   # the unpacked corpus (wavs/, metadata.csv)
num_dev=100
num_test=100
tag=tiny
alignments=                   # a phone CTM: stage 4 then also scores the units (evaluate-units)
help_message="Usage: $0 [options]
  --stage N / --stop_stage N   0 download (skipped when --corpus_dir holds the corpus)  1 data prep + validation
        2 train codec  3 extract units  4 resynthesize + evaluate  5 train prior  6 sample
  --codec_config / --prior_config FILE   (conf/*_tiny.yaml for CPUs, conf/*_base.yaml for GPUs)
  --nj N  --tag NAME  --num_samples N  --sample_seconds S  --config FILE
  --corpus_dir DIR   LJSpeech-1.1 (downloaded there when missing)   --num_dev N --num_test N (default 100 each)
  --alignments CTM             a phone CTM (utt channel start dur phone): stage 4 also scores the units"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/recipe_lib.sh
check_stages "$stage" "$stop_stage" 0 6
from_caller corpus_dir codec_config prior_config alignments
exp=exp/$tag
train_set=train; dev_set=dev; eval_sets="dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  if [ -f "$corpus_dir/metadata.csv" ]; then
    log 0 "$corpus_dir is there"
  else
    log 0 "downloading LJSpeech-1.1 into $(dirname "$corpus_dir")"
    utils/download.sh https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2 "$(dirname "$corpus_dir")/LJSpeech-1.1.tar.bz2"
    tar -C "$(dirname "$corpus_dir")" -xjf "$(dirname "$corpus_dir")/LJSpeech-1.1.tar.bz2"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  need "$corpus_dir/metadata.csv" 0
  if done_or_run data 1; then
    log 1 "preparing data/{train,dev,test} from $corpus_dir"
    local/data_prep.sh "$corpus_dir" $num_dev $num_test
    for set in train dev test; do utils/validate_data_dir.sh data/$set; touch data/$set/.done; done
    touch data/.done
  fi
fi

utils/codec_stages.sh --stage $stage --stop_stage $stop_stage --exp $exp --train_set $train_set \
  --dev_set $dev_set --eval_sets "$eval_sets" --codec_config "$codec_config" --prior_config "$prior_config" \
  --nj $nj --num_samples $num_samples --sample_seconds $sample_seconds --alignments "$alignments"
log done "stages $stage..$stop_stage finished"
