#!/usr/bin/env bash
# Compile the CUTLASS sm90 2:4 kernels with nvcc from PyPI and load the library: no GPU is needed for either,
# so CI catches a source or header change that no longer builds (the kernels run only in tests/test_gpu.py).
# The toolkit goes to a throw-away folder, not into .venv. Needs g++ (nvcc's host compiler).
set -euo pipefail
cd "$(dirname "$0")/.."
cuda=$(mktemp -d)
trap 'rm -rf "$cuda"' EXIT
# The versions the H100 library in docs/speed.md was built with.
.venv/bin/pip install -q --no-deps --target "$cuda" nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.88 \
  nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-cccl==13.0.85 nvidia-cutlass==4.2.0.0
WANDAPP_BUILD_CUTLASS=1 CUDACXX="$cuda/nvidia/cu13/bin/nvcc" CUTLASS_PATH="$cuda/cutlass_library/source" \
  .venv/bin/pytest -q -p no:cacheprovider tests/test_cutlass_build.py -k real_nvcc -rs
