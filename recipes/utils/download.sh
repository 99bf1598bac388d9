#!/usr/bin/env bash
# Usage: utils/download.sh URL DEST_FILE
# Resumable download (curl -C - / wget -c) checked against the server's size. With no network it says so
# and tells how to point the recipe at a local copy (--corpus_dir).
set -euo pipefail
[ $# -eq 2 ] || { echo "Usage: $0 URL DEST_FILE" >&2; exit 1; }
url=$1; dest=$2
mkdir -p "$(dirname "$dest")"
expected=$( (curl -sIL "$url" 2>/dev/null || true) | tr -d '\r' | awk 'tolower($1)=="content-length:"{n=$2} END{print n}')
if [ -z "$expected" ]; then
  echo "$0: cannot reach $url (no network?)." >&2
  echo "  Download it yourself, unpack it, and pass the unpacked folder to the recipe as --corpus_dir." >&2
  exit 1
fi
if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" == "$expected" ]; then exit 0; fi
curl -L -C - -o "$dest" "$url"
actual=$(stat -c %s "$dest")
[ "$actual" == "$expected" ] || { echo "$0: $dest has $actual bytes, the server says $expected; run again to resume" >&2; exit 1; }
