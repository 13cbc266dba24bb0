#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer build (own tree build-asan; clang, -O1) running the ctest suite.
# Any sanitizer report fails the test that caused it (halt on the first error, leaks included), so the run is
# clean only when every test is. docs/testing.md gives the time budget and what this covers.
#
#   scripts/sanitize.sh [CTEST_ARGS...]      e.g. scripts/sanitize.sh -R 'Safetensors|Tokenizer'
set -euo pipefail
cd "$(dirname "$0")/.."
B=build-asan
t0=$(date +%s)
# clang, so that scripts/fuzz.sh compiles the libraries with the same command lines and ccache (when installed)
# shares them; CMakeLists.txt's GSA_SANITIZE block sets -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined
# -fno-sanitize-recover=undefined (and clang's libFuzzer coverage hooks, unused here).
export CCACHE_NOHASHDIR=1
CXX=$(command -v clang++)  # Debian 12: clang 14
CC=$(command -v clang)
cmake -S . -B $B -DCMAKE_BUILD_TYPE=ASan -DCMAKE_CXX_COMPILER="$CXX" -DCMAKE_C_COMPILER="$CC" -DGSA_SANITIZE=ON \
  -DGSA_BENCH=OFF >/dev/null
cmake --build $B -j"$(nproc)"
t1=$(date +%s)
# Leaks count; a report aborts the test program (a crash ctest reports as a failure). An allocation too big to
# serve returns null, as glibc's does, so the out-of-memory paths (gsa::out_of_memory) run as they would.
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=1:detect_stack_use_after_return=0:strict_string_checks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Two OpenMP threads: the threaded paths run, and the 2-core CI machine is not oversubscribed by ctest -j.
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=1
# Excluded by name (remove an entry when its reason goes):
#   serve.bench_small: its --check fails when resident memory grows by 10%, which ASan's quarantine of freed
#     memory always makes it do; the check means nothing here (it runs in the normal suite).
#   serve.bench_small_leak: the same check must fail on a simulated leak, which it sees through mallinfo2, and
#     ASan's allocator is not glibc's (mallinfo2 does not count its blocks).
known='^serve[.]bench_small(_leak)?$'
status=0
ctest --test-dir $B --output-on-failure -j"$(nproc)" -E "$known" "$@" || status=$?
t2=$(date +%s)
echo "sanitize.sh: build $((t1 - t0)) s, tests $((t2 - t1)) s"
exit $status
