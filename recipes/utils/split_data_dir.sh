#!/usr/bin/env bash
# Usage: utils/split_data_dir.sh DATA_DIR NJ   (writes DATA_DIR/split<NJ>/<1..NJ>, split by speaker)
[ $# -eq 2 ] || { echo "Usage: $0 DATA_DIR NJ" >&2; exit 1; }
exec vqaudio data-dir split "$1" --nj "$2"
