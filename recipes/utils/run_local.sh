#!/usr/bin/env bash
# Usage: utils/run_local.sh [JOB=A:B] LOG COMMAND...
# Kaldi's run.pl convention on this machine: runs COMMAND once, or once per JOB id in A..B (in parallel),
# with the literal JOB in LOG and in COMMAND replaced by the id. All output goes to LOG, which starts with
# the command and ends with its exit code and time. Exits non-zero, naming the failed jobs' logs, when any
# job failed. Options before JOB=/LOG (e.g. --gpu 1) are accepted and ignored: a local run has what it has.
set -uo pipefail
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in --*=*) shift ;; *) shift; [ $# -gt 0 ] && shift ;; esac
done
first=1; last=1; array=false
if [[ "${1:-}" =~ ^JOB=([0-9]+):([0-9]+)$ ]]; then
  first=${BASH_REMATCH[1]}; last=${BASH_REMATCH[2]}; array=true; shift
fi
[ $# -ge 2 ] || { echo "Usage: $0 [JOB=A:B] LOG COMMAND..." >&2; exit 1; }
[ "$first" -le "$last" ] || { echo "$0: empty job range JOB=$first:$last" >&2; exit 1; }
log_pattern=$1; shift
pids=(); logs=()
for ((job = first; job <= last; job++)); do
  log=$log_pattern; args=("$@")
  if $array; then log=${log//JOB/$job}; args=("${args[@]//JOB/$job}"); fi
  mkdir -p "$(dirname "$log")"
  (
    start=$(date +%s)
    { echo "# ${args[*]}"; echo "# Started at $(date)"; } > "$log"
    "${args[@]}" >> "$log" 2>&1
    code=$?
    { echo "# Accounting: time=$(($(date +%s) - start)) sec"; echo "# Ended (code $code) at $(date)"; } >> "$log"
    exit $code
  ) &
  pids+=($!); logs+=("$log")
done
failed=()
for i in "${!pids[@]}"; do wait "${pids[$i]}" || failed+=("${logs[$i]}"); done
if [ ${#failed[@]} -gt 0 ]; then
  echo "$0: ${#failed[@]} of ${#pids[@]} job(s) failed; see ${failed[*]}" >&2
  tail -n 5 "${failed[0]}" >&2
  exit 1
fi
