#!/usr/bin/env bash
# A command that must fail with a clear message: tests/cli/expect-error.sh TEXT COMMAND ARGS...
# Passes when COMMAND exits non-zero (not by a signal) and its output contains TEXT.
set -u
want=$1
shift
out=$("$@" 2>&1)
rc=$?
if [ $rc -eq 0 ]; then echo "expected a failure, got exit 0; output:"; echo "$out"; exit 1; fi
if [ $rc -ge 128 ]; then echo "killed by signal $((rc - 128)); output:"; echo "$out"; exit 1; fi
if [[ "$out" != *"$want"* ]]; then echo "exit $rc but the output lacks '$want':"; echo "$out"; exit 1; fi
echo "exit $rc: $(echo "$out" | grep -F -- "$want" | head -1)"
