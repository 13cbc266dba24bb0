#!/usr/bin/env bash
# Runs `gsa train` jobs on the GPU machine's CPU cores (the engine trains on CPU; that machine has 16 cores and
# none of the project's Debian libraries, and cannot install any).
#
# Prepare here, then carry .device-carry (scripts/device-train.sh --pack), run there, unpack what comes back:
#   scripts/device-train.sh --pack BUILD_DIR RUN_DIR...   # .device-carry/: gsa binary (build it portable:
#                                                         # -DGSA_NATIVE=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3),
#                                                         # the runtime .deb files (glibc included, so the binary
#                                                         # runs whatever the machine's own libc), runs/data,
#                                                         # runs/tok, the shared books and each RUN_DIR (start
#                                                         # models or runs to resume)
#   OUT=... scripts/device-train.sh JOBS LIMIT_S          # there: JOBS lines "NAME THREADS ARGS..." run in
#                                                         # parallel as `gsa train ARGS --out runs/NAME` for at
#                                                         # most LIMIT_S seconds each; $OUT/NAME.tgz = its log,
#                                                         # plot, final/ (or, if cut, its latest checkpoint, so a
#                                                         # later call resumes it: --resume is the default)
set -uo pipefail
cd "$(dirname "$0")/.."
C=.device-carry

if [ "${1:-}" = --pack ]; then
  build=$2
  shift 2
  mkdir -p $C/debs $C/runs
  (cd $C/debs && apt-get download libc6 libgcc-s1 libstdc++6 libgomp1 libgfortran5 libquadmath0 libfmt9 \
    libicu72 libpcre2-8-0 libopenblas0-pthread)
  cp "$build/gsa" $C/gsa
  rm -rf $C/books && cp -r ../shared/data/text/books $C/books
  for d in runs/data runs/tok "$@"; do
    mkdir -p "$C/$(dirname "$d")" && rm -rf "${C:?}/$d" && cp -r "$d" "$C/$d"
  done
  du -sh $C
  exit 0
fi

jobs=$1
limit=$2
OUT=${OUT:-/tmp/gsa-device-out}
mkdir -p "$OUT"
root=/tmp/gsa-sysroot
mkdir -p $root
for f in $C/debs/*.deb; do dpkg -x "$f" $root; done
libpath=$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu/openblas-pthread
if [ -e runs ] && [ ! -L runs ]; then echo "runs/ exists here: this half runs on the GPU machine" >&2; exit 1; fi
rm -f runs && ln -s $C/runs runs
{ nproc; grep -m1 "model name" /proc/cpuinfo; } | tee "$OUT/machine.txt"

pids=()
names=()
while read -r name threads args; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  # shellcheck disable=SC2086
  (export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads
   timeout --signal=KILL "$limit" "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$libpath" "$C/gsa" \
     train $args --haystack-dir $C/books --out "runs/$name" >"$OUT/$name.log" 2>&1
   echo "exit $?" >>"$OUT/$name.log") &
  pids+=($!)
  names+=("$name")
done <"$jobs"
wait "${pids[@]}"

for name in "${names[@]}"; do
  d=runs/$name
  [ -d "$d" ] || continue
  keep=(log.jsonl loss.svg)
  if [ -d "$d/final" ]; then keep+=(final); else keep+=("$(cat "$d/latest" 2>/dev/null)" latest); fi
  tar -C "$d" -czf "$OUT/$name.tgz" "${keep[@]}" 2>>"$OUT/$name.log"
  ls -la "$OUT/$name.tgz" >>"$OUT/$name.log"
done
