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

# vm_boot DIR KERNEL INITRD APPEND LOG PATTERN TIMEOUT: netboot KERNEL +
# INITRD in QEMU (TCG, 2 vCPUs on one thread, as boot-test runs it) with DIR served by
# busybox httpd at http://10.0.2.2:18080/ inside a private network
# namespace; wait until the serial LOG matches PATTERN (an event, not a
# sleep), then stop QEMU and the server by pid. Fails on timeout.
vm_boot() {
    local dir=$1 kernel=$2 initrd=$3 append=$4 log=$5 pattern=$6 timeout=$7 pid i
    rm -f "$log"
    unshare -n -- sh tests/initrd_support/netns-qemu.sh "$dir" 18080 \
        qemu-system-x86_64 -accel tcg,thread=single -smp 2 -m 1536 -nodefaults -display none -no-reboot \
        -netdev user,id=n0 -device virtio-net-pci,netdev=n0 -serial "file:$log" \
        -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 panic=-1 no_timer_check mkimage.onfail=reboot $append" \
        </dev/null >/dev/null 2>&1 &
    pid=$!
    for ((i = 0; i < timeout * 2; i++)); do
        if grep -q -E "$pattern" "$log" 2>/dev/null; then break; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -q -E "$pattern" "$log" || { echo "VM never printed /$pattern/; tail of $log:" >&2; tail -20 "$log" >&2; return 1; }
}

# bench_line LOG TEXT: the seconds of the last `bench: TEXT … took X s` line.
bench_line() { sed -n "s/.*$2.* took \([0-9.]*\) s.*/\1/p" "$1" | tail -n1; }

# For the end-to-end benchmarks (play, boot-test): as root, from the
# repository root, with mkimage built ($mk), a scratch dir $work removed on
# exit, and the shared package cache $cache.
mkimage_bench() {
    cd "$(dirname "${BASH_SOURCE[0]}")/.."
    [ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
    mk=${MKIMAGE:-target/release/mkimage}
    [ -x "$mk" ] || cargo build --release -q
    work=$(mktemp -d "/var/tmp/mkimage-bench-$1.XXXX")
    trap 'rm -rf "$work"' EXIT
    cache=${CACHE:-/var/tmp/mkimage-bench-cache}
}

# Wall seconds (1 decimal) a command takes; its output goes to $work/last.log,
# whose tail is shown if it fails.
secs() {
    local s e
    s=$(date +%s.%N)
    "$@" >"$work/last.log" 2>&1 || { tail -30 "$work/last.log" >&2; return 1; }
    e=$(date +%s.%N)
    echo "$e - $s" | bc -l | xargs printf '%.1f'
}

# need_tools SCRIPT TOOL...: fail naming the package to install.
need_tools() {
  local script=$1; shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "$script: $tool is missing: apt-get install -y $tool" >&2; exit 1; }
  done
}

# bench_artifact FILE KIND NAME MIB: MIB random MiB as $dir/FILE, with its
# .sha256, listed for bench_manifest; bench_manifest writes $dir/manifest.json.
entries=()
bench_artifact() {
  head -c $(($4 * 1024 * 1024)) /dev/urandom > "$dir/$1"
  local sha; sha=$(sha256sum "$dir/$1" | cut -d' ' -f1)
  echo "$sha  $1" > "$dir/$1.sha256"
  entries+=("\"$1\": {\"kind\": \"$2\", \"name\": \"$3\", \"file\": \"$1\", \"size\": $(stat -c %s "$dir/$1"), \"sha256\": \"$sha\", \"build_time\": 0, \"tool_version\": \"bench\"}")
}
bench_manifest() { (IFS=,; echo "{\"artifacts\": {${entries[*]}}}") > "$dir/manifest.json"; }

# serve_bench_setup: build mkimage (sets `mkimage`; MKIMAGE=PATH uses that binary), make a scratch dir
# (`work`, with `dir`=work/builds and nginx's prefix dirs) that is removed,
# with every pid in `pids` stopped, when the script exits.
serve_bench_setup() {
  local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  mkimage=${MKIMAGE:-}
  if [ -z "$mkimage" ]; then
    (cd "$here" && cargo build --release --quiet)
    mkimage="$here/target/release/mkimage"
  fi
  work=$(mktemp -d)
  pids=()
  trap serve_bench_cleanup EXIT
  chmod 755 "$work"
  dir="$work/builds"
  mkdir -p "$dir" "$work/nginx/logs" "$work/nginx/tmp"
}
serve_bench_cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
