#!/usr/bin/env bash
# Usage: utils/fix_data_dir.sh DATA_DIR   (sort, drop utterances missing from a table, rebuild spk2utt)
[ $# -eq 1 ] || { echo "Usage: $0 DATA_DIR" >&2; exit 1; }
exec vqaudio data-dir fix "$1"
