#!/usr/bin/env bash
# cli.demo: the README's main command on the shipped models. It must exit 0 (a crash after the expected lines is a
# failure: ctest ignores exit codes when it matches output, so this script checks both) and show GSA answering
# the hidden fact and naming the chunks it recalled.
#   tests/cli/demo.sh GSA_BINARY SAMPLES PATTERN...   (each extended regex must match a line of the output)
set -uo pipefail
out=$("$1" demo --samples "$2" 2>&1)
rc=$?
printf '%s\n' "$out"
[ "$rc" -eq 0 ] || { echo "cli.demo: gsa demo exited with code $rc"; exit 1; }
for pattern in "${@:3}"; do
  grep -Eq "$pattern" <<<"$out" || { echo "cli.demo: no line of the output matches: $pattern"; exit 1; }
done
