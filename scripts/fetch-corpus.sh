#!/usr/bin/env bash
# A plain-text corpus from Debian's documentation and source packages (the only archive this machine reaches),
# with a held-out split for bits/byte that no training run sees (docs/data.md).
#
#   scripts/fetch-corpus.sh                       # corpus/ (ignored by git): train.jsonl, heldout.*, manifest.json,
#                                                 # qa-train.jsonl, qa-heldout.jsonl (manual pages, for the qa task)
#   TOKENIZER=bundle-data/tok scripts/fetch-corpus.sh   # also corpus/tokens/: train.jsonl as gsa token shards
#
# Settings (environment):
#   CORPUS            output folder (default corpus/); debs/ and unpacked/ inside it are its scratch
#   PACKAGES          the packages, space-separated (default: DEFAULT_PACKAGES below); each needs a candidate in
#                     this Debian release (apt-cache policy NAME) and a rule in scripts/corpus-text.py (or takes
#                     the generic one: text and HTML under usr/share/doc and usr/share/info)
#   KERNEL_DIRS       folders of the Linux source tree whose C files, headers and Kconfig files are read when
#                     PACKAGES holds linux-source-* (default: the core kernel, memory, IPC, block, lib, ext4, IPv4)
#   HELDOUT_PERMILLE  documents held out per thousand, chosen by a hash of their package and path (default 20)
#   TOKENIZER, GSA    tokenizer folder and gsa binary (default build/gsa) for the optional corpus/tokens/
#
# Reproducible: fixed package versions are recorded (the candidate apt offers, with the .deb's sha256), files are
# read in sorted order, the split and the order of train.jsonl come from sha256 of each document's source.
# Idempotent: a .deb already downloaded at the candidate version is reused, a package unpacked from the same .deb
# is not unpacked again, and the outputs are rewritten byte for byte. Needs apt-get, dpkg-deb, python3, groff.
set -euo pipefail
cd "$(dirname "$0")/.."
DEFAULT_PACKAGES="linux-doc-6.1 linux-source-6.1 python3.11-doc perl-doc git-doc postgresql-doc-15 manpages \
manpages-dev bash-doc gnu-standards autoconf-doc debian-reference-en"
CORPUS=${CORPUS:-corpus}
PACKAGES=${PACKAGES:-$DEFAULT_PACKAGES}
KERNEL_DIRS=${KERNEL_DIRS:-"kernel mm ipc block lib init fs/ext4 net/ipv4"}
HELDOUT_PERMILLE=${HELDOUT_PERMILLE:-20}
G=${GSA:-build/gsa}

die() { echo "fetch-corpus: $*" >&2; exit 1; }
for c in apt-get apt-cache dpkg-deb python3 groff sha256sum tar; do
  command -v "$c" >/dev/null || die "'$c' is missing (a Debian system with apt; groff is in groff-base)"
done
mkdir -p "$CORPUS/debs" "$CORPUS/unpacked"
list="$CORPUS/packages.txt.tmp"
: >"$list"

for p in $PACKAGES; do
  ver=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')
  [ -n "$ver" ] && [ "$ver" != "(none)" ] ||
    die "package '$p' has no candidate in this Debian release (apt-cache policy $p); run apt-get update, or" \
        "drop it from PACKAGES (apt-cache search NAME lists what exists)"
  deb=""
  for f in "$CORPUS/debs/${p}_"*.deb; do
    [ -e "$f" ] || continue
    if [ "$(dpkg-deb -f "$f" Version)" = "$ver" ]; then deb=$f; else rm -f "$f"; fi  # an older version
  done
  if [ -z "$deb" ]; then
    echo "downloading $p $ver" >&2
    (cd "$CORPUS/debs" && apt-get download -q -o APT::Sandbox::User="$(id -un)" "$p=$ver") ||
      die "apt-get download $p=$ver failed (is the archive reachable? apt-get update?)"
    deb=$(ls "$CORPUS/debs/${p}_"*.deb)
    [ "$(dpkg-deb -f "$deb" Version)" = "$ver" ] || die "$deb is not version $ver"
  fi
  sha=$(sha256sum "$deb" | cut -c1-64)
  dir="$CORPUS/unpacked/$p"
  stamp="$sha $KERNEL_DIRS"
  if [ "$(cat "$dir.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "unpacking $p" >&2
    rm -rf "$dir" "$dir.stamp" && mkdir -p "$dir"
    dpkg-deb -x "$deb" "$dir"
    case $p in
      linux-source-*)
        tarball=$(ls "$dir"/usr/src/linux-source-*.tar.*)
        top=$(basename "${tarball%.tar.*}")
        members=()
        for k in $KERNEL_DIRS; do members+=("$top/$k/*"); done
        mkdir -p "$dir/src"
        tar -xf "$tarball" -C "$dir/src" --strip-components=1 --wildcards "${members[@]}" ||
          die "$tarball: cannot extract $KERNEL_DIRS"
        rm -rf "$dir/usr/src"  # the tarball itself: 140 MB not needed any more
        ;;
    esac
    echo "$stamp" >"$dir.stamp"
  fi
  echo "$p $ver $sha" >>"$list"
done
mv "$list" "$CORPUS/packages.txt"

python3 scripts/corpus-text.py --unpacked "$CORPUS/unpacked" --packages "$CORPUS/packages.txt" --out "$CORPUS" \
  --heldout-permille "$HELDOUT_PERMILLE"
if grep -q '^manpages' "$CORPUS/packages.txt"; then
  python3 scripts/corpus-qa.py --corpus "$CORPUS"
fi

if [ -n "${TOKENIZER:-}" ]; then
  [ -x "$G" ] || die "$G is not built (scripts/build.sh, or set GSA)"
  rm -rf "$CORPUS/tokens"
  "$G" data prepare --tokenizer "$TOKENIZER" --input "$CORPUS/train.jsonl" --out "$CORPUS/tokens"
fi
