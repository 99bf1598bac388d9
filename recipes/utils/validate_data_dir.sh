#!/usr/bin/env bash
# Usage: utils/validate_data_dir.sh DATA_DIR   (Kaldi's rules; errors name the file and line)
[ $# -eq 1 ] || { echo "Usage: $0 DATA_DIR" >&2; exit 1; }
exec vqaudio data-dir validate "$1"
