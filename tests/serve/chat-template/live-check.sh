#!/bin/sh
# The live reference check (ctest chat.reference_live): installs the pinned reference renderer
# (@huggingface/jinja, package-lock.json) with `npm ci`, renders every case of tests/data/chat/cases.json with it,
# and requires (1) gsa's renderer (the test_chat program) to give the same text / the same failures and
# (2) the committed goldens to equal the fresh renders. Exits 77 (ctest: skipped) without node, npm or the registry.
#
#   live-check.sh TEST_CHAT WORK_DIR
set -u
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
test_chat=$1
work=$2
data=${GSA_DATA:-$repo/../shared/data}
skip() { echo "SKIP: $*"; exit 77; }

command -v node >/dev/null 2>&1 || skip "node is not installed (Debian: apt-get install nodejs npm)"
command -v npm >/dev/null 2>&1 || skip "npm is not installed (Debian: apt-get install npm)"
mkdir -p "$work" || exit 1
cp "$here/package.json" "$here/package-lock.json" "$here/render-cases.mjs" "$work/" || exit 1
if ! (cd "$work" && timeout 300 npm ci --ignore-scripts --no-audit --no-fund --prefer-offline) > "$work/npm.log" 2>&1; then
  tail -n 5 "$work/npm.log"
  skip "npm ci could not install the reference renderer (no access to the npm registry?)"
fi
echo "rendering $repo/tests/data/chat/cases.json with $(cd "$work" && node -p 'require("./node_modules/@huggingface/jinja/package.json").version' 2>/dev/null | sed 's/^/@huggingface\/jinja /')"
node "$work/render-cases.mjs" --cases "$repo/tests/data/chat/cases.json" --data "$data" \
  --out "$work/live.json" --check "$repo/tests/data/chat/goldens.json" || exit 1
GSA_CHAT_GOLDENS="$work/live.json" "$test_chat" --gtest_filter='chat_reference.*:all/chat_case.*' --gtest_brief=1
