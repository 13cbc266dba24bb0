#!/usr/bin/env bash
# scripts/corpus-text.py on a small unpacked package made here: HTML loses its scripts and navigation, gzip and
# POD are read, binary / non-UTF-8 / short / duplicate files and changelogs are dropped, the held-out split is by
# document and disjoint from train, the manifest's sha256 match the files, and a second run is byte-identical.
#   tests/scripts/corpus-text.sh scripts/corpus-text.py     (exit 77: python3 missing, skipped)
set -euo pipefail
script=$(realpath "$1")
command -v python3 >/dev/null || { echo "python3 missing: skipped"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
fail() { echo "FAIL: $*"; exit 1; }
doc=unpacked/pkg/usr/share/doc/pkg
mkdir -p $doc unpacked/other/usr/share/doc/other
cat >$doc/page.html <<'EOF'
<html><head><title>Head title</title><script>var leaked_script = 1;</script><style>p {color: red}</style></head>
<body><div class="navheader"><a href="x">leaked navigation</a></div>
<h1>Page heading<a class="headerlink" href="#h">¶</a></h1>
<p>Hello
   world &amp; friends, this paragraph is long enough to count as a document.</p>
<pre>  indented    code
    kept as is</pre>
<div class="navfooter"><div>leaked footer</div></div></body></html>
EOF
printf 'Alpha document read through gzip.   \r\n\n\n\n\nAfter four empty lines.\n' | gzip -n >$doc/alpha.txt.gz
printf 'Alpha document read through gzip.\n\nAfter four empty lines.\n' >$doc/zz-copy.txt  # same after normalising
mkdir -p unpacked/perl-doc/usr/share/perl/5.36.0/pod
printf '=head1 NAME\n\nB<bold> and C<code> in I<pod>, nested B<C<inner>>.\n\n=cut\n' \
  >unpacked/perl-doc/usr/share/perl/5.36.0/pod/perlx.pod
printf 'binary\0data with a NUL byte in the middle\n' >$doc/binary.txt
printf 'caf\xe9 is latin-1, not UTF-8, and must be dropped\n' >$doc/latin1.txt
printf 'tiny\n' >$doc/short.txt
printf 'a changelog is never read, even when long enough to count\n' >$doc/changelog.txt
for i in $(seq 1 60); do printf 'Document number %d of the split test, long enough.\n' "$i" >unpacked/other/usr/share/doc/other/d$i.txt; done
printf 'pkg 1.0 %064d\nother 2.0 %064d\nperl-doc 3.0 %064d\n' 0 0 0 >packages.txt

run() { python3 "$script" --unpacked unpacked --packages packages.txt --out "$1" --heldout-permille 200 --min-chars 20; }
run out1 2>log1 || { cat log1; fail "the script failed"; }
run out2 2>log2 || { cat log2; fail "the second run failed"; }
for f in train.jsonl heldout.jsonl heldout.txt manifest.json; do cmp out1/$f out2/$f || fail "$f differs between runs"; done

python3 - out1 <<'EOF' || fail "content checks"
import hashlib, json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/train.jsonl")]
held = [json.loads(l) for l in open(f"{out}/heldout.jsonl")]
docs = {r["source"]: r["text"] for r in rows + held}
def check(ok, what):
    if not ok:
        print("FAIL:", what); sys.exit(1)
page = docs["pkg:usr/share/doc/pkg/page.html"]
for bad in ("leaked", "color: red", "Head title", "\u00b6"):
    check(bad not in page, f"the HTML text holds {bad!r}: {page!r}")
check("Page heading" in page and "Hello world & friends, this paragraph" in page, f"HTML text: {page!r}")
check("  indented    code\n    kept as is" in page, f"<pre> whitespace lost: {page!r}")
alpha = docs["pkg:usr/share/doc/pkg/alpha.txt.gz"]
check(alpha == "Alpha document read through gzip.\n\nAfter four empty lines.", f"normalised text: {alpha!r}")
for gone in ("zz-copy.txt", "binary.txt", "latin1.txt", "short.txt", "changelog.txt"):
    check("pkg:usr/share/doc/pkg/" + gone not in docs, f"{gone} should be dropped")
pod = docs["perl-doc:usr/share/perl/5.36.0/pod/perlx.pod"]
check(pod == "NAME\n\nbold and code in pod, nested inner.", f"POD text: {pod!r}")
check(len([s for s in docs if s.startswith("other:usr/share/doc/other/d")]) == 60, "the 60 split documents")
train_src, held_src = {r["source"] for r in rows}, {r["source"] for r in held}
check(not (train_src & held_src), "a document is in both splits")
check(5 <= len(held_src) <= 25, f"{len(held_src)} of 63 held out at 200 per mille")
# The split is a function of the source alone: recompute it.
for s in docs:
    want = int(hashlib.sha256(("gsa-heldout:" + s).encode()).hexdigest()[:8], 16) % 1000 < 200
    check((s in held_src) == want, f"{s} is on the wrong side of the split")
m = json.load(open(f"{out}/manifest.json"))
for name, o in m["outputs"].items():
    data = open(f"{out}/{name}", "rb").read()
    check(o["sha256"] == hashlib.sha256(data).hexdigest() and o["bytes"] == len(data), f"manifest of {name}")
p = {x["package"]: x for x in m["packages"]}["pkg"]
check((p["dropped_not_text"], p["dropped_short"], p["dropped_duplicate"]) == (2, 1, 1), f"pkg counts: {p}")
held_txt = open(f"{out}/heldout.txt").read()
check(all(docs[s] in held_txt for s in held_src), "heldout.txt lacks a held-out document")
EOF

# A package that is not unpacked, and one without any document, fail with a message naming it.
printf 'missing 1.0 %064d\n' 0 >packages-missing.txt
msg=$(python3 "$script" --unpacked unpacked --packages packages-missing.txt --out out3 2>&1) &&
  fail "a missing package passed"
[[ $msg == *"package missing is not unpacked"* ]] || fail "a missing package is reported as: $msg"
mkdir -p unpacked/empty && printf 'empty 1.0 %064d\n' 0 >packages-empty.txt
msg=$(python3 "$script" --unpacked unpacked --packages packages-empty.txt --out out3 2>&1) &&
  fail "a package without documents passed"
[[ $msg == *"package empty: no document matched its rule"* ]] || fail "an empty package is reported as: $msg"
echo "ok: $(wc -l <out1/train.jsonl) train and $(wc -l <out1/heldout.jsonl) held-out documents, identical twice"
