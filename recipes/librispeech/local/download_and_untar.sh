#!/usr/bin/env bash
# Usage: local/download_and_untar.sh DATA_DIR URL_BASE PART
#   e.g. local/download_and_untar.sh corpus https://www.openslr.org/resources/31 dev-clean-2
# Downloads PART.tar.gz (resumable), checks its size against the server's, untars into DATA_DIR and
# writes DATA_DIR/LibriSpeech/PART/.complete; does nothing when that marker exists.
set -euo pipefail
[ $# -eq 3 ] || { echo "Usage: $0 DATA_DIR URL_BASE PART" >&2; exit 1; }
data=$1; url=$2; part=$3
if [ -f "$data/LibriSpeech/$part/.complete" ]; then
  echo "$0: $data/LibriSpeech/$part is already there"
  exit 0
fi
mkdir -p "$data"
tarball="$data/$part.tar.gz"
if ! command -v curl > /dev/null && ! command -v wget > /dev/null; then
  echo "$0: need curl or wget to download $url/$part.tar.gz" >&2; exit 1
fi
expected=$( (curl -sIL "$url/$part.tar.gz" 2>/dev/null || true) | tr -d '\r' \
  | awk 'tolower($1)=="content-length:"{n=$2} END{print n}')
if [ -z "$expected" ]; then
  echo "$0: cannot reach $url/$part.tar.gz (no network?)." >&2
  echo "  Download $part.tar.gz from $url yourself and untar it so that CORPUS/LibriSpeech/$part exists," >&2
  echo "  then run the recipe with --corpus_dir CORPUS (no network is touched then)." >&2
  exit 1
fi
if command -v curl > /dev/null; then curl -L -C - -o "$tarball" "$url/$part.tar.gz"; else wget -c -O "$tarball" "$url/$part.tar.gz"; fi
actual=$(stat -c %s "$tarball")
[ "$actual" == "$expected" ] || { echo "$0: $tarball has $actual bytes, the server says $expected; run again to resume" >&2; exit 1; }
tar -C "$data" -xzf "$tarball"
touch "$data/LibriSpeech/$part/.complete"
echo "$0: $part ready in $data/LibriSpeech/$part"
