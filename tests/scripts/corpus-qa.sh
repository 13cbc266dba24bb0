#!/usr/bin/env bash
# scripts/corpus-qa.py on a corpus written here: one QA record per manual page with a NAME summary, the answer
# inside its passage, other documents ignored, held-out pages only in qa-heldout.jsonl, too few pages an error.
#   tests/scripts/corpus-qa.sh scripts/corpus-qa.py     (exit 77: python3 missing, skipped)
set -euo pipefail
script=$(realpath "$1")
command -v python3 >/dev/null || { echo "python3 missing: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
python3 - <<'PY'
import json
def man(name, names, summary):
    return (f"{name}(2)    System Calls Manual    {name}(2)\n\nNAME\n       {names} - {summary}\n\n"
            f"SYNOPSIS\n       #include <unistd.h>\n\nDESCRIPTION\n       {name}() does things.\n")
train = [("manpages-dev:usr/share/man/man2/read.2.gz", man("read", "read", "read from a file descriptor")),
         ("manpages-dev:usr/share/man/man2/stat.2.gz", man("stat", "stat, fstat,\n       lstat", "get file status")),
         ("manpages:usr/share/man/man7/odd.7.gz", "odd(7)\n\nNAME\n       odd has no dash summary\n"),
         ("linux-doc-6.1:Documentation/x.rst.gz", man("notman", "notman", "not a manual page source"))]
held = [("manpages:usr/share/man/man1/ls.1.gz", man("ls", "ls", "list directory contents")),
        ("manpages:usr/share/man/man1/cp.1.gz", man("cp", "cp", "copy files and directories"))]
for name, docs in (("train.jsonl", train), ("heldout.jsonl", held)):
    with open(name, "w") as f:
        for s, t in docs:
            f.write(json.dumps({"text": t, "source": s}) + "\n")
PY
python3 "$script" --corpus . 2>log || { cat log; exit 1; }
python3 - <<'PY'
import json
tr = [json.loads(l) for l in open("qa-train.jsonl")]
he = [json.loads(l) for l in open("qa-heldout.jsonl")]
assert [r["answers"] for r in tr] == [["read from a file descriptor"], ["get file status"]], tr
assert tr[1]["question"] == "What is the one-line description of stat in its manual page?", tr[1]
assert all(r["answers"][0] in r["context"] for r in tr + he), "an answer is not in its passage"
assert sorted(r["answers"][0] for r in he) == ["copy files and directories", "list directory contents"], he
assert not {r["source"] for r in tr} & {r["source"] for r in he}
PY
cp qa-train.jsonl first.jsonl && python3 "$script" --corpus . 2>/dev/null && cmp first.jsonl qa-train.jsonl
head -1 heldout.jsonl >h1 && mv h1 heldout.jsonl
msg=$(python3 "$script" --corpus . 2>&1) && { echo "FAIL: one held-out page passed"; exit 1; }
[[ $msg == *"qa needs at least two"* ]] || { echo "FAIL: too few pages reported as: $msg"; exit 1; }
echo "ok: $(wc -l <qa-train.jsonl) train records; identical twice; one page refused"
