#!/usr/bin/env bash
# Usage: local/download_and_untar.sh DATA_DIR URL_BASE PART
#   e.g. local/download_and_untar.sh corpus https://www.openslr.org/resources/31 dev-clean-2
# Downloads PART.tar.gz with utils/download.sh (resumable, checked against the server's size), untars it
# into DATA_DIR and writes DATA_DIR/LibriSpeech/PART/.complete; does nothing when that marker exists.
set -euo pipefail
[ $# -eq 3 ] || { echo "Usage: $0 DATA_DIR URL_BASE PART" >&2; exit 1; }
data=$1; url=$2; part=$3
if [ -f "$data/LibriSpeech/$part/.complete" ]; then
  echo "$0: $data/LibriSpeech/$part is already there"
  exit 0
fi
tarball="$data/$part.tar.gz"
utils/download.sh "$url/$part.tar.gz" "$tarball"
tar -C "$data" -xzf "$tarball"
touch "$data/LibriSpeech/$part/.complete"
echo "$0: $part ready in $data/LibriSpeech/$part"
