#!/usr/bin/env bash
# The prepared GPU check: one run, under 8 minutes on one GPU. Run it first whenever a GPU is available.
#
#   bash tools/gpu_carry.sh            # here: wheels the GPU image lacks, pesq's source, speech-mini -> .gpu/
#   device run: command "bash benchmarks/gpu.sh", carry [".gpu"], timeout_s 600
#   (on any CUDA machine with the project installed: bash benchmarks/gpu.sh)
#
# Steps, each with its own time limit so one slow step cannot eat the others':
#   1. tests/test_cuda.py: quantizers and codec forward/backward in float32 and bf16 autocast, EMA updates,
#      CPU parity of codes and waveforms (about 30 s)
#   2. codec training throughput: codec_base.yaml at its batch size, bf16-mixed, every loss on (about 1 min)
#   3. quantizer training throughput and memory against vector-quantize-pytorch (about 2 min)
#   4. a short quality run: benchmarks/quality.py --device cuda, 0.4 min per architecture (about 4 min; the iSTFT and SEANet decoders side by side)
#   5. unit extraction on the GPU: benchmarks/extract.py --device cuda (the default codec, random weights,
#      over speech-mini: hours of audio per hour of the bare encoder and of one extract-units job)
#      and benchmarks/extract_ssl.py --device cuda (k-means units of a base-size HuBERT) (about 1 min)
# Results: $OUT (the device tool's folder) or benchmarks/gpu_out/: one log per step plus the quality table
# and curves. Copy the figures into benchmarks/README.md with the date and the GPU's name.
#
# Dry run, here on the CPU, so that a lent GPU is never spent on a crash (tests/test_benchmarks.py runs it):
#
#   DRY_RUN=1 bash benchmarks/gpu.sh       # or: bash benchmarks/gpu.sh --dry-run   (about a minute)
#
# The same steps and options on the CPU at tiny budgets, on 8 + 4 utterances of the corpus (CORPUS, default
# ../shared/data/speech-mini; benchmarks/speech_mini.py picks them), with PYTHON (default .venv/bin/python
# where there is one) and without nvidia-smi. tests/test_cuda.py skips itself where no CUDA device is
# visible; the peers whose packages are not installed (encodec, descript-audio-codec, vector-quantize-pytorch)
# are left out; the time limits become a guard against hangs (600 s). It exits 1 when a step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
dry=${DRY_RUN:-0}
[ "${1:-}" = --dry-run ] && dry=1
out=${OUT:-benchmarks/gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
corpus=../shared/data/speech-mini
work=/tmp/vqaudio_quality_gpu
have() {  # have MODULE: whether Python finds it (without importing it)
  $py -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)' "$1" 2>/dev/null
}

if [ "$dry" = 1 ]; then
  [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && py=.venv/bin/python
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  work=$tmp/quality
  rm -f "$out/summary.txt"
  $py benchmarks/speech_mini.py "$tmp/corpus" --corpus "${CORPUS:-$corpus}" --train 8 --test 4 || exit 1
  corpus=$tmp/corpus
  device=cpu
  train_speed=(--steps 1 --warmup 1 --batch-size 2 --segment-seconds 0.25 --threads 1)
  quantizers=(--seconds 0.01 --shapes tiny --threads 1)
  quality=(--minutes 0.05 --eval-minutes 0.025 --batch-size 2 --segment-seconds 0.5 --threads 1 --rtf-seconds 1)
  extract=(--limit 4)
  extract_ssl=(--tiny --minutes 0.1 --threads 1 --repeats 1 --k 8 --kmeans-utts 2)
  impls=(vqaudio); have vector_quantize_pytorch && impls+=(vqp)
  archs=(ours ours_seanet); have encodec && archs+=(encodec_zero_bias); have dac && archs+=(dac)
  { date -u '+%F %T UTC'; echo "dry run on the CPU: $(getconf _NPROCESSORS_ONLN) cores";
    $py -c 'import torch; print("torch", torch.__version__)'; } 2>&1 | tee "$out/machine.txt"
else
  if [ -d .gpu ]; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
      && export PYTHONPATH=/tmp/site:$PYTHONPATH
    $py -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .gpu/sdist/pesq-*.tar.gz \
      || echo "pesq did not build: the quality table's PESQ column will be empty"
    [ -d .gpu/speech-mini ] && corpus=.gpu/speech-mini
  fi
  device=cuda
  train_speed=(--steps 40 --warmup 5)
  quantizers=(--seconds 1 --shapes large)
  quality=(--minutes 0.4 --eval-minutes 0.1 --batch-size 32)
  extract=()
  extract_ssl=()
  impls=(vqaudio vqp)
  archs=(ours ours_seanet ours_dropout_all encodec_zero_bias dac)
  { date -u '+%F %T UTC'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
    $py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } 2>&1 | tee "$out/machine.txt"
fi

failed=0
step() {  # step NAME SECONDS COMMAND... (the dry run's limit is 600 s: only a guard against hangs)
  local name=$1 limit=$2; shift 2
  [ "$dry" = 1 ] && limit=600
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || failed=1
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}

step cuda_tests 90 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py
step train_speed 90 $py benchmarks/train_speed.py --config recipes/librispeech/conf/codec_base.yaml --device $device \
  "${train_speed[@]}"
step quantizers 130 $py benchmarks/quantizers.py --device $device --quantizers vq ema fsq rvq8 --modes train \
  --impls "${impls[@]}" "${quantizers[@]}"
step quality 250 $py benchmarks/quality.py --device $device --adversarial-at 0.5 --archs "${archs[@]}" "${quality[@]}" \
  --corpus "$corpus" --work "$work"
cp "$work/RESULTS.md" "$out/quality_RESULTS.md" 2>/dev/null
step extract 90 $py benchmarks/extract.py --device $device --corpus "$corpus" --out "$out/extract" "${extract[@]}"
step extract_ssl 90 $py benchmarks/extract_ssl.py --device $device --corpus "$corpus" "${extract_ssl[@]}"
cp "$work/quality_curves.png" "$out/quality_curves.png" 2>/dev/null
cat "$out/summary.txt"
[ "$dry" = 1 ] && exit $failed
exit 0
