#!/bin/bash
# Time to ready: netboot the played images N times (boot-test: iPXE →
# kernel + initrd → basefs + overlays → systemd → `booted`) and print the
# median time from the boot script to `booted`, from the kernel's start to
# `booted` (the guest's own clock), and each stage's share, from the times
# the server's node record keeps per stage (milliseconds):
#   script         boot script served → kernel sent whole
#   kernel+initrd  kernel sent → initrd sent whole
#   network        initrd sent → downloads start (kernel boot, modules, DHCP,
#                  the image store mounted)
#   download       downloads started → every image downloaded and verified
#                  (overlays by sha256 as they arrive, then unpacked; the
#                  basefs's dm-verity checks each block when it is read)
#   mount          verified → union root mounted
#   switch_root    mounted → about to switch root
#   systemd        switch root → `booted` reported by mkimage-booted.service
#
#   bench/boot-time.sh [N]      (as root, from the repository root; N=3)
#   DIR=builds bench/boot-time.sh   boots an existing output dir instead of playing one
source "$(dirname "$0")/common.sh"
mkimage_bench boot-time
n=${1:-3}
dir=${DIR:-}
if [ -z "$dir" ]; then
  dir="$work/out"
  echo "playing playbooks/all.yml into $dir…" >&2
  "$mk" play playbooks/all.yml --out "$dir" --var "cache_dir=$cache" >"$work/play.log" 2>&1 || { tail -20 "$work/play.log" >&2; exit 1; }
fi
dir=$(readlink -f "$dir")
mac=52:54:00:12:34:56
record="$dir/.state/nodes/${mac//:/-}.json"

for i in $(seq "$n"); do
  rm -f "$record"
  "$mk" boot-test --dir "$dir" --mac "$mac" --serial-log "$work/serial$i.log" >"$work/boot$i.log" 2>&1 \
    || { grep -E '^(FAIL|PASS)' "$work/boot$i.log" >&2; tail -20 "$work/serial$i.log" >&2; exit 1; }
  # The guest's uptime when mkimage-report said `booted`: from the kernel's start.
  kernel=$(grep -aoE '\[ *[0-9.]+\] mkimage-report\[[0-9]+\]: mkimage-report: booted reported' "$work/serial$i.log" | sed -E 's/^\[ *([0-9.]+)\].*/\1/' | tail -n1)
  python3 - "$record" "${kernel:-nan}" >>"$work/runs" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
t = {s["stage"]: s.get("ms") or s["time"] * 1000 for s in r["stages"]}
order = ["script", "kernel", "initrd", "download", "verified", "mounted", "switch-root", "booted"]
missing = [s for s in order if s not in t]
if missing:
    sys.exit(f"the node record has no {', '.join(missing)} stage: {sys.argv[1]}")
spans = [(t[b] - t[a]) / 1000 for a, b in zip(order, order[1:])]
print(json.dumps({"total": (t["booted"] - t["script"]) / 1000, "kernel": float(sys.argv[2]), "spans": spans}))
PY
  echo "boot $i: $(tail -n1 "$work/runs")" >&2
done

python3 - "$work/runs" "$n" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
names = ["script", "kernel+initrd", "network", "download", "mount", "switch_root", "systemd"]
med = lambda xs: statistics.median(xs)
total = med([r["total"] for r in runs])
print(f"boots: {sys.argv[2]}")
print(f"{'stage':<16}{'median s':>10}{'share':>8}")
for i, name in enumerate(names):
    s = med([r["spans"][i] for r in runs])
    print(f"{name:<16}{s:>10.2f}{s / total:>8.0%}")
print(f"{'script→booted':<16}{total:>10.2f}{1:>8.0%}")
print(f"median kernel start → booted: {med([r['kernel'] for r in runs]):.1f} s (goal < 45 s)")
PY
