#!/usr/bin/env bash
# Builds gsa with CUDA here (nvcc + the Debian libraries) and packs a self-contained bundle for the GPU machine,
# which has CUDA (driver, cuBLASLt) and PyTorch but none of our Debian libraries and no network.
#
#   scripts/cuda-bundle.sh [BUNDLE_DIR]      (default: bundle/, ignored by git; carry it to the device)
#
# The bundle holds bin/ (gsa, test_cuda, bench-gsa-attention, bench-decode-attention; cudart linked statically), lib/ (every shared
# object they need that is neither glibc nor the CUDA driver / cuBLAS, found with ldd), and gsa-bundle.tar.xz
# of the two (what travels; about 20 MB). cuBLASLt comes from the GPU machine's CUDA (its toolkit or PyTorch's
# nvidia wheels): scripts/device-run.sh finds it. Rebuilds incrementally in build-cuda-bundle/.
set -euo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-bundle}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[ -x "$NVCC" ] || { echo "nvcc not found: install the CUDA toolkit (13.x) or set NVCC" >&2; exit 1; }
JOBS=${JOBS:-$(nproc)}

cmake -S . -B build-cuda-bundle -DCMAKE_BUILD_TYPE=Release -DGSA_CUDA=ON -DGSA_NATIVE=OFF -DGSA_BENCH=OFF \
  -DCMAKE_CUDA_COMPILER="$NVCC" >/dev/null
cmake --build build-cuda-bundle -j"$JOBS" --target gsa test_cuda bench-gsa-attention bench-decode-attention

rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
for b in gsa test_cuda bench-gsa-attention bench-decode-attention; do cp "build-cuda-bundle/$b" "$BUNDLE/bin/"; done
strip --strip-unneeded "$BUNDLE"/bin/* 2>/dev/null || true

# Shared objects to carry: everything ldd resolves except glibc's, the dynamic loader and CUDA's own
# (driver, cuBLAS/cuBLASLt: the GPU machine has matching ones, and cuBLASLt alone is 500 MB). NCCL is never
# linked (gsa loads it at run time, backend/cuda/nccl-comm.h); it is listed so that it could not slip in.
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libcuda\.so|libcublas|libcudart|libnvidia|libnccl)'
for b in "$BUNDLE"/bin/*; do
  ldd "$b" | awk '/=> \//{print $1" "$3}'
done | sort -u | while read -r name path; do
  if [[ ! "$name" =~ $skip ]]; then cp -L "$path" "$BUNDLE/lib/$name"; fi
done
strip --strip-unneeded "$BUNDLE"/lib/* 2>/dev/null || true

tar -C "$BUNDLE" -cf - bin lib | xz -T"$JOBS" -6 > "$BUNDLE/gsa-bundle.tar.xz"
# gsa alone (no test or benchmark binaries, ~6 MB smaller): for calls that also carry bundle-data/ (the pipeline),
# whose working tree would otherwise pass the device's 64 MiB limit: BUNDLE_TAR=bundle/gsa-only.tar.xz.
[ "${GSA_ONLY:-1}" = 0 ] || tar -C "$BUNDLE" -cf - bin/gsa lib | xz -T"$JOBS" -6 > "$BUNDLE/gsa-only.tar.xz"
# GSA_TESTS=1: gsa and test_cuda (no benchmarks), xz -9e (about a minute more, 21 MB): one call that runs CUDA tests
# and then the pipeline, carried with bundle-data/ (BUNDLE_TAR=bundle/gsa-tests.tar.xz; docs/results-gpu.md run N).
[ "${GSA_TESTS:-0}" = 0 ] || tar -C "$BUNDLE" -cf - bin/gsa bin/test_cuda lib | xz -T"$JOBS" -9e > "$BUNDLE/gsa-tests.tar.xz"
echo "bundle: $(du -sh "$BUNDLE/bin" | cut -f1) binaries, $(ls "$BUNDLE/lib" | wc -l) libraries ($(du -sh "$BUNDLE/lib" | cut -f1));" \
     "$BUNDLE/gsa-bundle.tar.xz is $(du -h "$BUNDLE/gsa-bundle.tar.xz" | cut -f1)"
