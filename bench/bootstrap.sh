#!/bin/bash
# Bootstrap benchmark: debootstrap vs mkimage's default path (mmdebstrap with
# the shared package cache, then the bootstrap-tree cache), same suite,
# variant and mirror, in one run. Prints seconds and ratios.
#
#   bench/bootstrap.sh            (as root; MIRROR= to override the host's)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/common.sh"
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "apt-get install -y debootstrap" >&2; exit 2; }
m=${MIRROR:-$(mirror)}
mk=${MKIMAGE:-$here/../target/release/mkimage}
[ -x "$mk" ] || (cd "$here/.." && cargo build --release -q)

work=$(mktemp -d /var/tmp/mkimage-bench-bootstrap.XXXX)
trap 'rm -rf "$work"' EXIT
cat > "$work/vars.yml" <<VARS
name: bench
suite: bookworm
variant: minbase
mirror: $m
cache_dir: $work/cache
source_date_epoch: 1700000000
VARS

secs() { # run a command, print its wall seconds
    local s e; s=$(date +%s.%N); "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log" >&2; return 1; }; e=$(date +%s.%N)
    echo "$e - $s" | bc -l | xargs printf '%.1f'
}
step_secs() { sed -n 's/.*bootstrapped in \([0-9.]*\)s.*/\1/p' "$work/last.log" | tail -n 1; }

deb=$(secs debootstrap --variant=minbase bookworm "$work/debootstrap" "$m")
cold=$(secs "$mk" basefs --vars "$work/vars.yml" --out "$work/out1" --var bootstrap_cache=false); cold_step=$(step_secs)
warm=$(secs "$mk" basefs --vars "$work/vars.yml" --out "$work/out2" --var bootstrap_cache=false); warm_step=$(step_secs)
"$mk" basefs --vars "$work/vars.yml" --out "$work/out3" >/dev/null 2>&1   # fills the tree cache
hit=$(secs "$mk" basefs --vars "$work/vars.yml" --out "$work/out4")

ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
printf '%-58s %8s %8s\n' "bootstrap of bookworm minbase" "seconds" "ratio"
printf '%-58s %8s %8s\n' "debootstrap (cold)" "$deb" "1.00"
printf '%-58s %8s %8s\n' "mkimage default: mmdebstrap step, cold package cache" "$cold_step" "$(ratio "$cold_step" "$deb")"
printf '%-58s %8s %8s\n' "mkimage default: mmdebstrap step, warm package cache" "$warm_step" "$(ratio "$warm_step" "$deb")"
printf '%-58s %8s %8s\n' "mkimage basefs end to end (incl. squashfs), cold cache" "$cold" "$(ratio "$cold" "$deb")"
printf '%-58s %8s %8s\n' "mkimage basefs end to end, bootstrap-tree cache hit" "$hit" "$(ratio "$hit" "$deb")"
