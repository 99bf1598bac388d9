#!/usr/bin/env bash
# Fill .gpu/ (git-ignored) with what benchmarks/gpu.sh needs on a GPU machine that reaches no package
# registry: wheels for Python 3.12 of the packages its image lacks, pesq's source (built there), and a
# copy of ../shared/data/speech-mini. Then run, with the device tool: command `bash benchmarks/gpu.sh`,
# carry [".gpu"]. Usage: bash tools/gpu_carry.sh [PYTHON_VERSION (default 3.12)]
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
mkdir -p .gpu/whl .gpu/sdist
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
      --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
# The versions of the project's CI environment; the image already has torch, lightning, numpy, scipy,
# matplotlib, einops, numba, scikit-learn, joblib, msgpack, lazy_loader.
wheels=(soundfile==0.14.0 librosa==0.11.0 soxr==1.1.0 audioread==3.1.0 pooch==1.9.0 decorator==5.3.1
        platformdirs==4.14.8 pystoi==0.4.1 cffi pycparser descript-audio-codec==1.0.0
        vector-quantize-pytorch==1.32.0 einx frozendict loguru torch-einops-utils)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp "${plat[@]}" \
  -d .gpu/whl "${wheels[@]}"
python3 -m pip wheel -q --no-deps -w .gpu/whl encodec==0.1.1      # pure Python, published as source only
# pesq is a C extension published as source only: built there (its metadata needs numpy here: the venv's pip)
.venv/bin/python -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d .gpu/sdist pesq==0.0.4
rm -rf .gpu/speech-mini
mkdir -p .gpu/speech-mini && cp -r ../shared/data/speech-mini/. .gpu/speech-mini/ && rm -rf .gpu/speech-mini/extra
du -sh .gpu
