#!/usr/bin/env bash
# Installs the Debian 12 packages gsa needs to build and test. Safe to run again.
set -euo pipefail
pkgs=(g++ cmake make pkg-config libopenblas-dev nlohmann-json3-dev libcli11-dev libfmt-dev libpcre2-dev
      libicu-dev libgtest-dev libgmock-dev libbenchmark-dev)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
