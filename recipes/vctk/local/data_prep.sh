#!/usr/bin/env bash
# Usage: local/data_prep.sh CORPUS_DIR NUM_DEV_SPEAKERS NUM_TEST_SPEAKERS
# VCTK 0.92 layout (CORPUS_DIR/wav48_silence_trimmed/p225/p225_001_mic1.flac, CORPUS_DIR/txt/p225/p225_001.txt)
# -> data/{train,dev,test}, split by speaker: the last NUM_TEST_SPEAKERS (sorted) are test, the
# NUM_DEV_SPEAKERS before them dev, so dev and test voices are unseen in training. Microphone 1 only;
# utterance p225_001 belongs to speaker p225 (the speaker id prefixes the utterance id).
set -euo pipefail
[ $# -eq 3 ] || { echo "Usage: $0 CORPUS_DIR NUM_DEV_SPEAKERS NUM_TEST_SPEAKERS" >&2; exit 1; }
src=$(cd "$1" && pwd); num_dev=$2; num_test=$3
wavs="$src/wav48_silence_trimmed"
[ -d "$wavs" ] || { echo "$0: $wavs not found (is this VCTK-Corpus-0.92?)" >&2; exit 1; }
export LC_ALL=C
mkdir -p data/all
find "$wavs" -name '*_mic1.flac' | sort | awk '{n=split($0,p,"/"); u=p[n]; sub(/_mic1\.flac$/,"",u); print u, $0}' \
  | sort -k1,1 > data/all/wav.scp
[ -s data/all/wav.scp ] || { echo "$0: no *_mic1.flac files under $wavs" >&2; exit 1; }
awk '{split($1,p,"_"); print $1, p[1]}' data/all/wav.scp > data/all/utt2spk
while read utt path; do
  spk=${utt%%_*}; t="$src/txt/$spk/$utt.txt"
  [ -f "$t" ] && echo "$utt $(tr -d '\r\n' < "$t" | tr '[:lower:]' '[:upper:]')"
done < data/all/wav.scp > data/all/text || true
speakers=($(awk '{print $2}' data/all/utt2spk | sort -u))
n=${#speakers[@]}
[ "$n" -gt $((num_dev + num_test)) ] || { echo "$0: $n speakers, need more than dev+test=$((num_dev + num_test))" >&2; exit 1; }
split() {  # split NAME SPEAKER...
  local name=$1; shift
  mkdir -p data/$name
  printf '%s\n' "$@" > data/$name/.speakers
  awk 'NR==FNR{k[$1]=1; next} ($2 in k)' data/$name/.speakers data/all/utt2spk > data/$name/utt2spk
  for f in wav.scp text; do awk 'NR==FNR{k[$1]=1; next} ($1 in k)' data/$name/utt2spk data/all/$f > data/$name/$f; done
  rm data/$name/.speakers
  vqaudio data-dir fix data/$name > /dev/null
  vqaudio data-dir utt2dur data/$name > /dev/null
}
split train "${speakers[@]:0:$((n - num_dev - num_test))}"
split dev "${speakers[@]:$((n - num_dev - num_test)):$num_dev}"
split test "${speakers[@]:$((n - num_test)):$num_test}"
echo "$0: $((n - num_dev - num_test)) train, $num_dev dev, $num_test test speakers"
