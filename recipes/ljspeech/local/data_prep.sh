#!/usr/bin/env bash
# Usage: local/data_prep.sh CORPUS_DIR NUM_DEV NUM_TEST
# LJSpeech layout (CORPUS_DIR/wavs/LJ001-0001.wav, CORPUS_DIR/metadata.csv with id|text|normalized text)
# -> data/{train,dev,test}: the last NUM_TEST utterances (sorted ids) are test, the NUM_DEV before them dev.
# One speaker, "LJ", which prefixes every utterance id as Kaldi wants.
set -euo pipefail
[ $# -eq 3 ] || { echo "Usage: $0 CORPUS_DIR NUM_DEV NUM_TEST" >&2; exit 1; }
src=$(cd "$1" && pwd); num_dev=$2; num_test=$3
[ -f "$src/metadata.csv" ] || { echo "$0: $src/metadata.csv not found (is this LJSpeech-1.1?)" >&2; exit 1; }
export LC_ALL=C
mkdir -p data/all
awk -F'|' -v d="$src/wavs" '{print $1, d "/" $1 ".wav"}' "$src/metadata.csv" | sort > data/all/wav.scp
awk -F'|' '{t = ($3 != "") ? $3 : $2; print $1, toupper(t)}' "$src/metadata.csv" | sort > data/all/text
awk '{print $1, "LJ"}' data/all/wav.scp > data/all/utt2spk
total=$(wc -l < data/all/wav.scp)
[ "$total" -gt $((num_dev + num_test)) ] || { echo "$0: $total utterances, need more than dev+test=$((num_dev + num_test))" >&2; exit 1; }
split() {  # split NAME FIRST LAST (1-based line numbers of data/all)
  mkdir -p data/$1
  for f in wav.scp text utt2spk; do sed -n "$2,$3p" data/all/$f > data/$1/$f; done
  vqaudio data-dir fix data/$1 > /dev/null  # writes spk2utt
  vqaudio data-dir utt2dur data/$1 > /dev/null
}
split train 1 $((total - num_dev - num_test))
split dev $((total - num_dev - num_test + 1)) $((total - num_test))
split test $((total - num_test + 1)) $total
echo "$0: train $((total - num_dev - num_test)), dev $num_dev, test $num_test utterances"
