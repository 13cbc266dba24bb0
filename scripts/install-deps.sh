#!/usr/bin/env bash
# Installs the Debian 12 packages gsa needs to build and test. Safe to run again.
set -euo pipefail
pkgs=(g++ cmake make pkg-config libopenblas-dev nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev
      libicu-dev libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev
      # sanitizer build and fuzzers (scripts/sanitize.sh, scripts/fuzz.sh): clang 14, its libFuzzer / ASan / UBSan
      # runtimes, its OpenMP, and ccache so that the two instrumented trees share their compiled objects
      clang libclang-rt-14-dev libomp-dev ccache
      # jieba's dictionary and HMM (data files only; no Python runs): gsa score segments LongBench's Chinese
      # datasets with them, and test_eval compares that with jieba itself (skipped without them)
      python3-jieba)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# node and npm for the openai client test of gsa serve (tests/serve/client); any install of them will do.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
