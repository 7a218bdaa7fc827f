#!/bin/bash
# Shared by the archive benchmarks: the host's Debian mirror (read from its
# apt sources at run time, never written down) and a cached minbase tree.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/var/tmp/mkimage-bench}
TREE=${TREE:-$BENCH_DIR/bookworm-minbase}

# The first "deb" URI of the host's apt sources (deb822 or one-line format).
mirror() {
    local uri
    uri=$(awk 'tolower($1)=="types:" {deb=0; for (i=2;i<=NF;i++) if ($i=="deb") deb=1}
               tolower($1)=="uris:" && deb {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    if [ -z "$uri" ]; then
        uri=$(awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i !~ /^\[/) {print $i; exit}}' \
              /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
    fi
    [ -n "$uri" ] || { echo "no deb URI in /etc/apt/sources*; set MIRROR=" >&2; return 1; }
    echo "$uri"
}

# Make (once) a ~200 MB Debian tree to pack, or use TREE=DIR if given.
ensure_tree() {
    if [ -d "$TREE/usr" ]; then return 0; fi
    command -v mmdebstrap >/dev/null || { echo "install it: apt-get install -y mmdebstrap" >&2; return 1; }
    mkdir -p "$BENCH_DIR"
    local m=${MIRROR:-$(mirror)}
    echo "bootstrapping $TREE (once)…" >&2
    rm -rf "$TREE.tmp"
    mmdebstrap --variant=minbase --mode=root bookworm "$TREE.tmp" "$m" >&2
    mv "$TREE.tmp" "$TREE"
}

# Seconds (wall) a command takes, printed with 3 decimals; output discarded.
timeit() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l | xargs printf '%.3f'
}

ratio() { echo "$1 / $2" | bc -l | xargs printf '%.3f'; }
