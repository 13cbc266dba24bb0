#!/usr/bin/env bash
# Builds, tests and benchmarks everything CUDA on the GPU machine, in one go (one device call).
# Usage (repo root, on the GPU machine):  OUT=/some/dir scripts/device-run.sh
# Expects build-cudadev/ carried from the dev machine: a prebuilt bench-decode-attention (nvcc 13.0, sm_90a)
# and inc/fmt (fmt headers, used header-only). If the prebuilt binary does not start there, it is rebuilt
# from source with that machine's nvcc. Then, if the project's full dependency set happens to be present,
# the CMake route (-DGSA_CUDA=ON, targets test_cuda and bench-decode-attention) is built and test_cuda run.
# Logs go to $OUT: device-log.txt (checks + bench), sdpa.txt (torch reference), cmake-log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gsa-device-out}
mkdir -p "$OUT"
BIN=build-cudadev/bench-decode-attention
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
  nvcc --version | tail -1
  python3 -c 'import torch; print("torch", torch.__version__)'
} 2>&1 | tee "$OUT/device-log.txt"

if ! "$BIN" >/dev/null 2>&1; then
  echo "prebuilt binary did not start; rebuilding with this machine's nvcc" | tee -a "$OUT/device-log.txt"
  mkdir -p /tmp/bda && BIN=/tmp/bda/bench-decode-attention
  g++ -std=c++20 -O2 -DFMT_HEADER_ONLY -Ibuild-cudadev/inc -Isrc -I/usr/local/cuda/include \
      -c src/backend/cuda/decode-attention.cpp -o /tmp/bda/host.o &&
  nvcc -std=c++20 -O3 -gencode=arch=compute_90a,code=sm_90a -Ibuild-cudadev/inc -Isrc -Itests -o "$BIN" \
      bench/cuda/bench-decode-attention.cu src/backend/cuda/decode-attention.cu /tmp/bda/host.o 2>&1 |
    tee -a "$OUT/device-log.txt"
fi

mkdir -p /tmp/xcheck
"$BIN" --check --dump /tmp/xcheck --bench 2>&1 | tee -a "$OUT/device-log.txt"
echo "bench-decode-attention exit code: ${PIPESTATUS[0]}" | tee -a "$OUT/device-log.txt"

PYTHONUNBUFFERED=1 python3 scripts/sdpa-reference.py /tmp/xcheck 2>&1 | tee "$OUT/sdpa.txt"

# The CMake route, only when every package the project's CMakeLists needs is there (CI-like machines).
if pkg-config --exists openblas libpcre2-8 icu-uc 2>/dev/null && [ -d /usr/include/CLI ] && [ -d /usr/include/gtest ]; then
  timeout 300 bash -c 'cmake -S . -B /tmp/build-cuda -DGSA_CUDA=ON -DGSA_BENCH=OFF >/dev/null &&
    cmake --build /tmp/build-cuda --target test_cuda -j16 && /tmp/build-cuda/test_cuda' >"$OUT/cmake-log.txt" 2>&1
  echo "cmake route exit code: $?" | tee -a "$OUT/device-log.txt"
else
  echo "cmake route skipped: the project's CPU dependencies (OpenBLAS, PCRE2, ICU, CLI11, GoogleTest) are not installed here" |
    tee -a "$OUT/device-log.txt"
fi
