#!/usr/bin/env bash
# Usage: local/data_prep.sh SRC_DIR DST_DIR
#   e.g. local/data_prep.sh corpus/LibriSpeech/dev-clean-2 data/dev_clean_2
# LibriSpeech layout (SPEAKER/CHAPTER/SPEAKER-CHAPTER-UTT.flac, SPEAKER-CHAPTER.trans.txt) -> Kaldi data
# dir: wav.scp, text, utt2spk, spk2utt, utt2dur. Speaker = reader-chapter as in Kaldi's recipe, so speaker
# ids prefix utterance ids and both sort the same way. Utterances without a transcript get none in text
# and are kept (audio-only corpora are fine for codec training).
set -euo pipefail
[ $# -eq 2 ] || { echo "Usage: $0 SRC_DIR DST_DIR" >&2; exit 1; }
src=$1; dst=$2
[ -d "$src" ] || { echo "$0: no such directory $src" >&2; exit 1; }
mkdir -p "$dst"
src=$(cd "$src" && pwd)
export LC_ALL=C
find "$src" -name '*.flac' | sort > "$dst/.flacs"
[ -s "$dst/.flacs" ] || { echo "$0: no .flac files under $src" >&2; exit 1; }
# whole lines: a corpus path may hold spaces (wav.scp's second field is the rest of the line)
awk '{n=split($0,p,"/"); utt=p[n]; sub(/\.flac$/,"",utt); print utt, $0}' "$dst/.flacs" | sort -k1,1 > "$dst/wav.scp"
awk '{split($1,p,"-"); print $1, p[1] "-" p[2]}' "$dst/wav.scp" > "$dst/utt2spk"
awk '{if ($2 != s) {if (s != "") print line; s=$2; line=$2 " " $1} else line=line " " $1} END{if (s != "") print line}' \
  "$dst/utt2spk" > "$dst/spk2utt"
find "$src" -name '*.trans.txt' -print0 | xargs -0 -r cat | sort -k1,1 > "$dst/text.all"
awk 'NR==FNR{has[$1]=1; next} ($1 in has)' "$dst/wav.scp" "$dst/text.all" > "$dst/text"
rm -f "$dst/text.all" "$dst/.flacs"
vqaudio data-dir utt2dur "$dst" > /dev/null
[ -s "$dst/text" ] || rm -f "$dst/text"
echo "$0: $(wc -l < "$dst/wav.scp") utterances, $(wc -l < "$dst/spk2utt") speakers in $dst"
