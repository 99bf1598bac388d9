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
#   4. a short quality run: benchmarks/quality.py --device cuda, 0.4 min per architecture (about 3.5 min)
# Results: $OUT (the device tool's folder) or benchmarks/gpu_out/: one log per step plus the quality table
# and curves. Copy the figures into benchmarks/README.md with the date and the GPU's name.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
corpus=../shared/data/speech-mini
if [ -d .gpu ]; then
  $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl \
    && export PYTHONPATH=/tmp/site:$PYTHONPATH
  $py -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target /tmp/site .gpu/sdist/pesq-*.tar.gz \
    || echo "pesq did not build: the quality table's PESQ column will be empty"
  [ -d .gpu/speech-mini ] && corpus=.gpu/speech-mini
fi
{ date -u '+%F %T UTC'; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader;
  $py -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'; } 2>&1 | tee "$out/machine.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
}

step cuda_tests 90 $py -m pytest -q -p no:cacheprovider tests/test_cuda.py
step train_speed 90 $py benchmarks/train_speed.py --config recipes/librispeech/conf/codec_base.yaml --device cuda \
  --steps 40 --warmup 5
step quantizers 130 $py benchmarks/quantizers.py --device cuda --seconds 1 --shapes large \
  --quantizers vq ema fsq rvq8 --modes train
step quality 250 $py benchmarks/quality.py --device cuda --minutes 0.4 --eval-minutes 0.1 --adversarial-at 0.5 \
  --archs ours ours_3units encodec_zero_bias dac \
  --batch-size 32 --corpus "$corpus" --work /tmp/vqaudio_quality_gpu
cp /tmp/vqaudio_quality_gpu/RESULTS.md "$out/quality_RESULTS.md" 2>/dev/null
cp /tmp/vqaudio_quality_gpu/quality_curves.png "$out/quality_curves.png" 2>/dev/null
cat "$out/summary.txt"
