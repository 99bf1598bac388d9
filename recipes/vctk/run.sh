#!/usr/bin/env bash
# VCTK 0.92 recipe (110 speakers, dev/test speakers unseen in training): data -> codec -> units ->
# resynthesis + evaluation -> prior -> samples. Stages 2-6 are the shared script utils/codec_stages.sh.
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
corpus_dir=downloads/VCTK-Corpus-0.92   # the unpacked corpus (wav48_silence_trimmed/, txt/)
num_dev_speakers=2
num_test_speakers=2
tag=tiny
alignments=                   # a phone CTM: stage 4 then also scores the units (evaluate-units)
help_message="Usage: $0 [options]
  --stage N / --stop_stage N   0 download (skipped when --corpus_dir holds the corpus)  1 data prep + validation
        2 train codec  3 extract units  4 resynthesize + evaluate  5 train prior  6 sample
  --codec_config / --prior_config FILE   (conf/*_tiny.yaml for CPUs, conf/*_base.yaml for GPUs)
  --nj N  --tag NAME  --num_samples N  --sample_seconds S  --config FILE
  --corpus_dir DIR   VCTK-Corpus-0.92 (downloaded there when missing)
  --num_dev_speakers N --num_test_speakers N   held-out speakers (default 2 each)
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
  if [ -d "$corpus_dir/wav48_silence_trimmed" ]; then
    log 0 "$corpus_dir is there"
  else
    log 0 "downloading VCTK-Corpus-0.92 into $corpus_dir"
    utils/download.sh https://datashare.ed.ac.uk/bitstream/handle/10283/3443/VCTK-Corpus-0.92.zip "$corpus_dir.zip"
    mkdir -p "$corpus_dir" && unzip -q -o "$corpus_dir.zip" -d "$corpus_dir"
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  need "$corpus_dir/wav48_silence_trimmed" 0
  if done_or_run data 1; then
    log 1 "preparing data/{train,dev,test} from $corpus_dir"
    local/data_prep.sh "$corpus_dir" $num_dev_speakers $num_test_speakers
    for set in train dev test; do utils/validate_data_dir.sh data/$set; touch data/$set/.done; done
    touch data/.done
  fi
fi

utils/codec_stages.sh --stage $stage --stop_stage $stop_stage --exp $exp --train_set $train_set \
  --dev_set $dev_set --eval_sets "$eval_sets" --codec_config "$codec_config" --prior_config "$prior_config" \
  --nj $nj --num_samples $num_samples --sample_seconds $sample_seconds --alignments "$alignments"
log done "stages $stage..$stop_stage finished"
