#!/usr/bin/env bash
# cli.info_damaged: `gsa info` on damaged copies of the shipped demo model (issue 12). It used to read only
# config.json and the header, so a truncated model.safetensors was reported as fine; now it validates offsets,
# sizes and shapes as loading does, and --check names the tensor holding NaN.
#   tests/cli/info-damaged.sh GSA_BINARY      (run from the repository root)
set -uo pipefail
gsa=$1
src=models/demo/gsa
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "cli.info_damaged: $*"; exit 1; }
expect_error() {  # DIR PATTERN [FLAGS]: gsa info must fail and print PATTERN
  out=$("$gsa" info ${3:-} "$1" 2>&1) && fail "gsa info ${3:-} accepted $1 (damaged): $out"
  grep -Eq "$2" <<<"$out" || fail "gsa info ${3:-} on $1: no line matches '$2': $out"
  echo "ok: $out"
}
out=$("$gsa" info --check "$src" 2>&1) || fail "the shipped model fails: $out"
grep -q "every value finite" <<<"$out" || fail "--check did not report the check: $out"

cp "$src/config.json" "$tmp/"
size=$(stat -c %s "$src/model.safetensors")
head -c $((size - 4096)) "$src/model.safetensors" >"$tmp/model.safetensors"
expect_error "$tmp" "model.safetensors.*(truncated|run past|end at byte)"

cp "$src/model.safetensors" "$tmp/model.safetensors"
printf '\x00\x00\xc0\x7f' | dd of="$tmp/model.safetensors" bs=1 seek=$((size - 8)) conv=notrunc status=none  # NaN
"$gsa" info "$tmp" >/dev/null 2>&1 || fail "without --check the values are not read"
expect_error "$tmp" "tensor '.*' holds a non-finite value" --check
