#!/usr/bin/env bash
# What the node registry costs a boot script: /boot.ipxe?mac=… (the profile
# is chosen with the machine's record read for its facts, then the record
# is written: temp file + rename) against /boot.ipxe without a MAC (no
# record), side by side on one `mkimage serve` in interleaved rounds. Each
# round is a wrk run of SECONDS over CONNECTIONS; every ?mac= request names
# another machine, as in a boot storm. Prints each side's best rate and
# median latency, and their ratios.
#
# Usage: bench/nodes.sh [SECONDS] [CONNECTIONS]   (defaults: 5 4; ROUNDS=3)
# Needs: wrk (apt-get install -y wrk); builds mkimage --release.
set -euo pipefail
secs=${1:-5}
conns=${2:-4}
rounds=${ROUNDS:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/common.sh"
need_tools bench/nodes.sh wrk
serve_bench_setup

bench_artifact vmlinuz kernel kernel 1
bench_artifact initrd.img initrd initrd 1
bench_artifact base.squashfs basefs base 1
bench_manifest
printf 'profiles:\n  - name: plain\n  - name: vms\n    match: {vendor: qemu}\n' > "$work/boot.yml"

(cd "$work" && exec "$mkimage" serve --dir "$dir" --http 127.0.0.1:0 --tftp off --boot-config "$work/boot.yml" 2>/dev/null > "$work/mk.out") &
pids+=($!)
for _ in $(seq 100); do grep -q '^listening http ' "$work/mk.out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^listening http //p' "$work/mk.out")
[ -n "$addr" ] || { echo "bench/nodes.sh: mkimage serve did not start" >&2; exit 1; }

# A different MAC on every request (52:54:00:xx:xx:xx).
cat > "$work/macs.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local mac = string.format("52:54:00:%02x:%02x:%02x", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/boot.ipxe?mac=" .. mac)
end
LUA

# run SIDE: one wrk round; prints "RATE MEDIAN_MS".
run() {
  local out
  if [ "$1" = mac ]; then
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/macs.lua" "http://$addr/boot.ipxe")
  else
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "http://$addr/boot.ipxe")
  fi
  grep -q 'Non-2xx' <<<"$out" && { echo "bench/nodes.sh: non-2xx answers: $out" >&2; exit 1; }
  local rate median
  rate=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  median=$(awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) sub(/ms$/,"",v); else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rate $median"
}

best_rate=(0 0) best_median=(999999 999999)
for r in $(seq "$rounds"); do
  for i in 0 1; do
    side=$([ $i = 0 ] && echo plain || echo mac)
    read -r rate median < <(run "$side")
    echo "round $r $side: $rate req/s, median ${median} ms"
    if (( $(echo "$rate > ${best_rate[$i]}" | bc -l) )); then best_rate[$i]=$rate; fi
    if (( $(echo "$median < ${best_median[$i]}" | bc -l) )); then best_median[$i]=$median; fi
  done
done
records=$(find "$dir/.state/nodes" -name '*.json' | wc -l)
echo "/boot.ipxe (no record):      ${best_rate[0]} req/s, median ${best_median[0]} ms"
echo "/boot.ipxe?mac= (recorded):  ${best_rate[1]} req/s, median ${best_median[1]} ms  ($records records written)"
echo "ratio recorded/plain: rate $(ratio "${best_rate[1]}" "${best_rate[0]}"), median latency $(ratio "${best_median[1]}" "${best_median[0]}")"
