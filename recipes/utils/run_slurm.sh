#!/usr/bin/env bash
# Usage: utils/run_slurm.sh [SRUN_OPTION...] [JOB=A:B] LOG COMMAND...
# Kaldi's slurm.pl convention over srun: each job id in A..B runs as its own SLURM job step (in parallel),
# with the literal JOB in LOG and in COMMAND replaced by the id; leading --options go to srun (e.g.
# --gres=gpu:1 --time=24:00:00). Output goes to LOG as with utils/run_local.sh; exits non-zero naming the
# failed jobs' logs when any job failed. Lightning reads SLURM's environment for multi-GPU / multi-node.
set -uo pipefail
opts=()
while [[ $# -gt 0 && "$1" == --* ]]; do opts+=("$1"); shift; done
command -v srun > /dev/null || { echo "$0: srun not found: is this a SLURM cluster? (set cmd_backend=local)" >&2; exit 1; }
range=()
[[ "${1:-}" =~ ^JOB=[0-9]+:[0-9]+$ ]] && { range=("$1"); shift; }
[ $# -ge 2 ] || { echo "Usage: $0 [SRUN_OPTION...] [JOB=A:B] LOG COMMAND..." >&2; exit 1; }
log=$1; shift
# run_local.sh does the JOB expansion, logging and accounting; each job's command runs inside srun.
exec "$(dirname "$0")/run_local.sh" "${range[@]}" "$log" srun --ntasks=1 "${opts[@]}" "$@"
