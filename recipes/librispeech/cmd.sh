# How stages launch jobs, as in Kaldi and ESPnet: every stage runs
#   $train_cmd / $cuda_cmd / $decode_cmd [JOB=1:N] LOG COMMAND...
# where a literal JOB in LOG and COMMAND becomes the job id. Local by default; on a SLURM cluster set
# cmd_backend=slurm (each job is then an srun step with the options below; Lightning picks up SLURM's
# environment for DDP). Edit the options here, or export them before running run.sh.
cmd_backend=${cmd_backend:-local}
slurm_opts=${slurm_opts:-"--time=24:00:00 --cpus-per-task=4"}
slurm_gpu_opts=${slurm_gpu_opts:-"--gres=gpu:1"}

case "$cmd_backend" in
  local)
    train_cmd="utils/run_local.sh"    # CPU jobs: data prep, evaluation
    cuda_cmd="utils/run_local.sh"     # GPU jobs: codec and prior training
    decode_cmd="utils/run_local.sh"   # many small jobs: unit extraction, resynthesis, sampling
    ;;
  slurm)
    train_cmd="utils/run_slurm.sh $slurm_opts"
    cuda_cmd="utils/run_slurm.sh $slurm_opts $slurm_gpu_opts"
    decode_cmd="utils/run_slurm.sh $slurm_opts"
    ;;
  *) echo "cmd.sh: cmd_backend must be local or slurm, got '$cmd_backend'" >&2; return 1 ;;
esac
