#!/usr/bin/env bash
# ctest serve.openai_client: installs the pinned openai npm package (package-lock.json, `npm ci`) into WORKDIR (a
# build-tree folder, so that several build trees can run it at once) and runs client-test.mjs against gsa serve.
# Exits 77 (ctest: skipped) with a message when node/npm are missing or the package cannot be installed.
# usage: run.sh GSA_BINARY WORKDIR
set -euo pipefail
gsa=$1 work=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "SKIP: node and npm are not installed (scripts/install-deps.sh installs them)"
  exit 77
fi
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/client-test.mjs" "$work/"
if ! (cd "$work" && timeout 300 npm ci --prefer-offline --no-audit --no-fund --loglevel=error); then
  echo "SKIP: npm ci could not install the openai package (is the npm registry reachable?)"
  exit 77
fi
exec node "$work/client-test.mjs" "$gsa" "$root"
