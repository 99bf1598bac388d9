#!/usr/bin/env bash
# LibriSpeech recipe: data -> train codec -> extract units -> resynthesize and evaluate -> train prior -> sample
# -> unit vocoder and voice conversion.
# Every stage is idempotent (a .done marker in its output dir) and logs to exp/<tag>/log/.
set -euo pipefail
caller_dir=$PWD                 # relative paths given as options are read from here (from_caller)
cd "$(dirname "$0")"

# Options (each settable as --name value; see --help).
stage=0
stop_stage=7
corpus_dir=downloads          # holds LibriSpeech/<part>; pass an existing copy to skip the download
subset=mini                   # mini (train-clean-5 + dev-clean-2), 100, 360 or 960
codec_config=conf/codec_tiny.yaml
prior_config=conf/prior_tiny.yaml
nj=2                          # parallel extraction jobs
tag=tiny                      # experiments go to exp/<tag>
num_samples=4                 # stage 6: utterances to sample
sample_seconds=4
alignments=                   # a phone CTM: stage 4 then also scores the units (evaluate-units)
unit_model=codec              # codec, or ssl: k-means units of an SSL model's layer (see --help)
ssl_model=                    # ssl: a transformers model folder or Hub id (HuBERT, WavLM, wav2vec 2.0)
ssl_layer=6
ssl_k=500
ssl_iterations=0              # ssl: HuBERT iterations trained here first (train-ssl), instead of --ssl_model
ssl_config=conf/ssl_tiny.yaml
ssl_targets_k=100             # ssl: units each train-ssl iteration predicts
vocoder_config=conf/vocoder_tiny.yaml  # stage 7 (conf/vocoder_base.yaml for GPUs)
num_convert=2                 # stage 7: utterances of each dev speaker converted into the next one's voice
vocoder_scores="--asr --speaker-sim"  # stage 7: evaluate's outside scorers; "" without pip install 'vqaudio[eval]'
help_message="Usage: $0 [options]
  --stage N / --stop_stage N   run stages N..M (default 0..7):
        0 download (skipped when --corpus_dir already holds the parts)   1 data prep and validation
        2 train codec   3 extract units (--nj jobs, merged)   4 resynthesize dev/test and evaluate
        5 train the prior   6 sample speech and summarise it
        7 train a unit vocoder on the content units (codec level 0 or SSL k-means), resynthesize dev/test
          in each speaker's own voice, convert --num_convert utterances per speaker into another voice,
          score both (WER, speaker similarity): exp/<tag>/vocoder/RESULTS.md
  --corpus_dir DIR             where LibriSpeech/<part> lives or is downloaded to (default $corpus_dir)
  --subset mini|100|360|960    mini = train-clean-5 + dev-clean-2 (openslr 31); others openslr 12
  --codec_config FILE          (default $codec_config; conf/codec_base.yaml for GPUs)
  --prior_config FILE          (default $prior_config; conf/prior_base.yaml for GPUs)
  --nj N                       parallel unit-extraction jobs (default $nj)
  --tag NAME                   experiment name under exp/ (default $tag)
  --config FILE                a file of name=value lines, read before the other options
  --alignments CTM             a phone CTM (utt channel start dur phone): stage 4 also scores the units
  --vocoder_config FILE        stage 7's train-vocoder YAML (default $vocoder_config); \"\" skips stage 7
  --vocoder_scores \"...\"       stage 7's scorers (default \"$vocoder_scores\"; \"\" without the eval extra)
  --unit_model codec|ssl       ssl: stage 2 trains k-means (--ssl_k, default $ssl_k) on layer --ssl_layer
                               (default $ssl_layer) of --ssl_model, stage 3 extracts those units, stage 4
                               scores them only, stage 5 trains the prior on them, stage 6 is skipped,
                               stage 7 gives them a voice (unit vocoder)
  --ssl_iterations N           with --unit_model ssl: first train N HuBERT iterations here (train-ssl with
                               --ssl_config, default $ssl_config), the first predicting MFCC k-means units
                               (--ssl_targets_k, default $ssl_targets_k), each next one k-means units of
                               the previous model's layer --ssl_layer
Examples (offline copy of the mini subsets):
  $0 --corpus_dir /data/speech-mini
  $0 --corpus_dir /data/speech-mini --unit_model ssl --ssl_model /models/hubert-base-ls960 --ssl_layer 6 \
     --tag hubert_l6 --alignments phones.ctm"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
. utils/recipe_lib.sh
check_stages "$stage" "$stop_stage" 0 7
from_caller corpus_dir codec_config prior_config alignments ssl_model ssl_config vocoder_config

case "$subset" in
  mini) train_parts="train-clean-5"; dev_parts="dev-clean-2"; test_parts=""; url=https://www.openslr.org/resources/31 ;;
  100) train_parts="train-clean-100"; dev_parts="dev-clean"; test_parts="test-clean"; url=https://www.openslr.org/resources/12 ;;
  360) train_parts="train-clean-100 train-clean-360"; dev_parts="dev-clean"; test_parts="test-clean"; url=https://www.openslr.org/resources/12 ;;
  960) train_parts="train-clean-100 train-clean-360 train-other-500"; dev_parts="dev-clean"; test_parts="test-clean test-other"; url=https://www.openslr.org/resources/12 ;;
  *) echo "$0: --subset must be mini, 100, 360 or 960, got '$subset'" >&2; exit 1 ;;
esac
train_set=train_$(echo $train_parts | tr ' -' '__' | sed 's/^train_//')
[ "$subset" == "mini" ] && train_set=train_clean_5
eval_sets="$(for p in $dev_parts $test_parts; do name $p; done | xargs)"
dev_set=$(name ${dev_parts%% *})
exp=exp/$tag

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

utils/codec_stages.sh --stage $stage --stop_stage $stop_stage --exp $exp --train_set $train_set \
  --dev_set $dev_set --eval_sets "$eval_sets" --codec_config "$codec_config" --prior_config "$prior_config" \
  --nj $nj --num_samples $num_samples --sample_seconds $sample_seconds --alignments "$alignments" \
  --unit_model $unit_model --ssl_model "$ssl_model" --ssl_layer $ssl_layer --ssl_k $ssl_k \
  --ssl_iterations $ssl_iterations --ssl_config "$ssl_config" --ssl_targets_k $ssl_targets_k \
  --vocoder_config "$vocoder_config" --num_convert $num_convert --vocoder_scores "$vocoder_scores"
log done "stages $stage..$stop_stage finished"
