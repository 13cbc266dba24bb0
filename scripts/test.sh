#!/usr/bin/env bash
# Installs dependencies, builds, and runs the whole test suite. Where nvcc is installed, also compiles the CUDA
# backend and its test and benchmark programs (they need a GPU to run: scripts/device-run.sh runs them there),
# so that the CUDA code never rots on machines without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)"
# Then the same suite under AddressSanitizer + UBSan, and every parser fuzzed for a bounded time (docs/testing.md).
scripts/sanitize.sh
scripts/fuzz.sh "${GSA_FUZZ_SECONDS:-12}"
NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
if [ -n "$NVCC" ]; then
  echo "compiling the CUDA targets with $NVCC (not run: no GPU here)"
  cmake -S . -B build-cuda-ci -DCMAKE_BUILD_TYPE=Release -DGSA_CUDA=ON -DGSA_BENCH=OFF -DCMAKE_CUDA_COMPILER="$NVCC" >/dev/null
  cmake --build build-cuda-ci -j"$(nproc)" --target gsa test_cuda bench-gsa-attention bench-decode-attention
else
  echo "nvcc not found: the CUDA targets are not compiled"
fi
