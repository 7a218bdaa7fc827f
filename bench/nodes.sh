#!/usr/bin/env bash
# The node registry under load, side by side with nginx serving a static
# file of a record's size (the peer), in interleaved rounds of wrk, each
# SECONDS long over CONNECTIONS connections:
#   plain      GET /boot.ipxe                 (no MAC: no token, no record)
#   script     GET /boot.ipxe?mac=…           (a token issued, the record's new
#                                              boot queued and written after the
#                                              reply; another MAC every request,
#                                              on a second server)
#   inventory  POST /api/nodes/MAC/inventory  (with that MAC's boot token; the
#                                              record fsynced, with its directory,
#                                              before the 200), over MACS machines
#   list       GET /api/nodes                 (the admin token; MACS records read)
#   nginx      GET /record.json               (a static file)
# Prints each side's best rate and p99 latency (over the rounds), and each
# side's rate as a share of nginx's.
#
# Usage: bench/nodes.sh [SECONDS] [CONNECTIONS]   (defaults: 5 16; ROUNDS=3, MACS=64)
# MKIMAGE=PATH runs that binary instead of building this tree's.
# Needs: wrk, nginx, curl, python3 (apt-get install -y wrk nginx curl python3).
set -euo pipefail
secs=${1:-5}
conns=${2:-16}
rounds=${ROUNDS:-3}
macs=${MACS:-64}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/common.sh"
need_tools bench/nodes.sh wrk nginx curl python3
serve_bench_setup

bench_artifact vmlinuz kernel kernel 1
bench_artifact initrd.img initrd initrd 1
bench_artifact base.squashfs basefs base 1
bench_manifest
printf 'profiles:\n  - name: plain\n  - name: vms\n    match: {vendor: qemu}\n' > "$work/boot.yml"

# start_server DIR: `mkimage serve` on DIR (its pid in `pids`, stopped on
# exit); sets `started` to its address.
start_server() {
  (cd "$work" && exec "$mkimage" serve --dir "$1" --http 127.0.0.1:0 --tftp off --boot-config "$work/boot.yml" 2>/dev/null > "$1.out") &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^listening http ' "$1.out" 2>/dev/null && break; sleep 0.1; done
  started=$(sed -n 's/^listening http //p' "$1.out")
}
# Two servers on copies of one dir: the script side makes a record per
# request (tens of thousands), which `list` must not read.
cp -a "$dir" "$work/scripts"
start_server "$dir"; addr=$started
start_server "$work/scripts"; saddr=$started
[ -n "$addr" ] && [ -n "$saddr" ] || { echo "bench/nodes.sh: mkimage serve did not start" >&2; exit 1; }
admin=$(cat "$dir/.state/admin.token")

# The inventory the discovery overlay posts, and each machine's boot token
# (from its own boot script), for wrk's Lua.
inventory='{"system":{"vendor":"QEMU","product":"Standard PC","serial":"S1"},"cpu":{"model":"QEMU Virtual CPU","count":2},"memory_kb":1500000,"nics":[{"name":"ens3","mac":"52:54:00:12:34:56","driver":"virtio_net","speed_mbps":-1,"link":true}],"disks":[{"name":"vda","size_bytes":8589934592}]}'
{
  echo "local inventory = [[$inventory]]"
  echo "local machines = {"
  for i in $(seq "$macs"); do
    mac=$(printf '52:54:00:aa:%02x:%02x' $((i / 256)) $((i % 256)))
    token=$(curl -sf "http://$addr/boot.ipxe?mac=$mac" | grep -oE 'mkimage\.token=[0-9a-f]+' | head -n1 | cut -d= -f2)
    [ -n "$token" ] || { echo "bench/nodes.sh: the boot script for $mac carries no mkimage.token=" >&2; exit 1; }
    echo "  {\"$mac\", \"$token\"},"
  done
  echo "}"
  cat <<'LUA'
local n = 0
request = function()
  n = n + 1
  local m = machines[n % #machines + 1]
  return wrk.format("POST", "/api/nodes/" .. m[1] .. "/inventory",
    {["Authorization"] = "Bearer " .. m[2], ["Content-Type"] = "application/json"}, inventory)
end
LUA
} > "$work/inventory.lua"
# A different MAC on every script request (52:54:00:xx:xx:xx).
cat > "$work/macs.lua" <<'LUA'
local n = 0
request = function()
  n = n + 1
  local mac = string.format("52:54:00:%02x:%02x:%02x", math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
  return wrk.format("GET", "/boot.ipxe?mac=" .. mac)
end
LUA
printf 'wrk.headers["Authorization"] = "Bearer %s"\n' "$admin" > "$work/admin.lua"

# nginx: a static file the size of one machine's inventory reply.
nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/static"
curl -sf -H "Authorization: Bearer $admin" "http://$addr/api/nodes/52:54:00:aa:00:01" > "$work/static/record.json"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  server { listen 127.0.0.1:$nport; root $work/static; }
}
CONF
chmod -R a+rX "$work/static"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$nport/record.json" && break; sleep 0.1; done
curl -sf -o /dev/null "http://127.0.0.1:$nport/record.json" || { echo "bench/nodes.sh: nginx did not start" >&2; exit 1; }

# ms VALUE: wrk's latency (us, ms or s) in milliseconds.
ms() { awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/, "", v); v /= 1000 } else if (v ~ /ms$/) sub(/ms$/, "", v); else if (v ~ /s$/) { sub(/s$/, "", v); v *= 1000 }; print v }'; }

# run SIDE: one wrk round; prints "RATE P99_MS".
run() {
  local url="http://$addr" script=()
  case $1 in
    plain) url+=/boot.ipxe ;;
    script) url=http://$saddr/boot.ipxe; script=(-s "$work/macs.lua") ;;
    inventory) url+=/api/nodes; script=(-s "$work/inventory.lua") ;;
    list) url+=/api/nodes; script=(-s "$work/admin.lua") ;;
    nginx) url=http://127.0.0.1:$nport/record.json ;;
  esac
  local out
  out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "${script[@]}" "$url")
  if grep -q 'Non-2xx' <<<"$out"; then echo "bench/nodes.sh: $1: non-2xx answers: $out" >&2; exit 1; fi
  echo "$(awk '/^Requests\/sec:/ {print $2}' <<<"$out") $(ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
}

sides=(plain script inventory list nginx)
declare -A best_rate best_p99
for s in "${sides[@]}"; do best_rate[$s]=0; best_p99[$s]=999999; done
echo "node registry: ${secs} s x $conns connections per round, $rounds rounds, $macs machines posting; $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
for r in $(seq "$rounds"); do
  for s in "${sides[@]}"; do
    read -r rate p99 < <(run "$s")
    echo "round $r $s: $rate req/s, p99 $p99 ms"
    if (( $(echo "$rate > ${best_rate[$s]}" | bc -l) )); then best_rate[$s]=$rate; fi
    if (( $(echo "$p99 < ${best_p99[$s]}" | bc -l) )); then best_p99[$s]=$p99; fi
  done
done
records=$(find "$work/scripts/.state/nodes" -name '*.json' | wc -l)
for s in "${sides[@]}"; do
  printf '%-10s %10.0f req/s  p99 %8.2f ms  rate/nginx %s\n' "$s" "${best_rate[$s]}" "${best_p99[$s]}" "$(ratio "${best_rate[$s]}" "${best_rate[nginx]}")"
done
echo "($records records written by the script side)"
