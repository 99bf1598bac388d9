# How stages launch jobs. Local by default; on a SLURM cluster set cmd_backend=slurm
# (each job then runs through srun with the options below; Lightning picks up SLURM's environment for DDP).
cmd_backend=${cmd_backend:-local}
slurm_opts=${slurm_opts:-"--time=24:00:00 --cpus-per-task=4"}
slurm_gpu_opts=${slurm_gpu_opts:-"--gres=gpu:1"}

# run_cmd LOG COMMAND...  : runs COMMAND, output to LOG (also to stdout when local)
run_cmd() {
  local log=$1; shift
  mkdir -p "$(dirname "$log")"
  echo "# $* (started $(date))" > "$log"
  if [ "$cmd_backend" == "slurm" ]; then
    srun $slurm_opts --output="$log" --open-mode=append "$@"
  else
    "$@" 2>&1 | tee -a "$log"
    return "${PIPESTATUS[0]}"
  fi
}
