#!/bin/bash
# The RAM floor: the smallest guest memory (MiB, in STEP MiB steps) with
# which the default profile netboots to `booted` and passes boot-test's
# assertions, found by bisection between LOW and HIGH. For each boot it
# prints what holds the RAM at `booted`: /proc/meminfo's main lines, the
# image store (the basefs), the unpacked overlays (rw/layerN) and the
# writable tmpfs (rw/upper).
# A boot below the floor must fail in the init with one clear "not enough
# RAM" line (never the OOM killer): that line is shown too.
# The last line is `ram floor: N MiB`.
#
#   bench/ram-floor.sh          (as root, from the repository root)
#   DIR=builds LOW=128 HIGH=512 STEP=16 bench/ram-floor.sh
source "$(dirname "$0")/common.sh"
mkimage_bench ram-floor
low=${LOW:-128} high=${HIGH:-512} step=${STEP:-16}
dir=${DIR:-}
if [ -z "$dir" ]; then
  dir="$work/out"
  echo "playing playbooks/all.yml into $dir…" >&2
  "$mk" play playbooks/all.yml --out "$dir" --var "cache_dir=$cache" >"$work/play.log" 2>&1 || { tail -20 "$work/play.log" >&2; exit 1; }
fi
dir=$(readlink -f "$dir")

# The boot config's own assertions, plus one that reports the RAM.
python3 - vars/boot.yml "$work/boot.yml" <<'PY'
import sys, yaml
conf = yaml.safe_load(open(sys.argv[1]))
conf.setdefault("boot_test", {}).setdefault("expect", []).append({
    "command": "{ grep -E '^(MemTotal|MemAvailable|Shmem|AnonPages|Slab|Cached):' /proc/meminfo;"
               " echo 'MiB used by:'; du -sm /run/mkimage/images /run/mkimage/rw/layer* /run/mkimage/rw/upper; } | sed 's/^/ram: /'",
    "matches": "ram: MemTotal",
})
yaml.safe_dump(conf, open(sys.argv[2], "w"), sort_keys=False)
PY

# boot MiB: 0 when the boot passed; prints what held the RAM, or the init's failure.
boot() {
  local log="$work/serial-$1.log"
  if "$mk" boot-test --dir "$dir" --boot-config "$work/boot.yml" --memory "$1" --timeout 600 \
       --serial-log "$log" >"$work/boot-$1.log" 2>&1; then
    echo "$1 MiB: booted; RAM at booted:"
    grep -aoE 'mkimage-check: [0-9]+ out ram: .*' "$log" | sed -E 's/^mkimage-check: [0-9]+ out ram: /    /'
    return 0
  fi
  echo "$1 MiB: did not boot:"
  { grep -a -m1 -E 'mkimage-init: (FAILED|.*not enough RAM)' "$log" || grep -a -m1 -iE 'out of memory|oom-kill' "$log" \
    || grep -E '^(FAIL|mkimage:)' "$work/boot-$1.log" | head -3; } | sed 's/^/    /'
  return 1
}

boot "$high" || { echo "the default profile does not boot even in $high MiB (HIGH=)" >&2; exit 1; }
while [ $((high - low)) -gt "$step" ]; do
  mid=$(( (low + high) / 2 / step * step ))
  [ "$mid" -gt "$low" ] || mid=$((low + step))
  if boot "$mid"; then high=$mid; else low=$mid; fi
done
echo "ram floor: $high MiB"
