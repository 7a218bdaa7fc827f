#!/usr/bin/env bash
# Boot storm: N simulated machines (default 200) each fetch a whole boot at
# once — /boot.ipxe?mac=…, then the kernel, initrd, basefs and overlays its
# script names — first from `mkimage serve`, then from nginx serving the
# same files (the same content-addressed paths and a pre-rendered boot
# script), in one run. Prints total time, the aggregate throughput ratio,
# /boot.ipxe p50/p99 (the machines' own requests, and a probe every 100 ms
# while the downloads run) and the server's CPU time, peak threads and RSS.
#
# Usage: bench/boot-storm.sh [MACHINES]          (default 200)
# ROUNDS (default 3): storms per server, alternating; the table shows each
# column's median (the machine is shared: one round can be hit by a burst).
# Sizes in MiB: KERNEL_MB (8) INITRD_MB (24) BASEFS_MB (64) OVERLAY_MB (4, two of them).
# CLIENT_NICE (default 0): the simulated machines' curl processes run at this
# nice level. In a lab the machines are other computers; here they share the
# server's cores, and at nice 0 the 200 clients and the probe are scheduled
# like the server. CLIENT_NICE=19 makes them stand aside as separate machines
# would (the probe and both servers stay at nice 0).
# Needs: curl, nginx (apt-get install -y curl nginx); builds mkimage --release.
set -euo pipefail
machines=${1:-200}
client_nice=${CLIENT_NICE:-0}
rounds=${ROUNDS:-3}
kernel_mb=${KERNEL_MB:-8} initrd_mb=${INITRD_MB:-24} basefs_mb=${BASEFS_MB:-64} overlay_mb=${OVERLAY_MB:-4}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/common.sh"
need_tools bench/boot-storm.sh curl nginx python3
serve_bench_setup
mkdir -p "$work/static"

# The served dir: random bytes in the sizes of a real boot, a manifest and a
# boot config whose default profile has two overlays.
bench_artifact vmlinuz kernel kernel "$kernel_mb"
bench_artifact initrd.img initrd initrd "$initrd_mb"
bench_artifact base.squashfs basefs base "$basefs_mb"
bench_artifact one.cpio.gz overlay one "$overlay_mb"
bench_artifact two.cpio.gz overlay two "$overlay_mb"
bench_manifest
printf 'profiles:\n  - name: storm\n    overlays: [one, two]\n' > "$work/boot.yml"
chmod -R a+rX "$dir"
per_machine=$((kernel_mb + initrd_mb + basefs_mb + 2 * overlay_mb))

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

(cd "$work" && exec "$mkimage" serve --dir "$dir" --http 127.0.0.1:0 --tftp off --boot-config "$work/boot.yml" \
  ${MKIMAGE_SERVE_ARGS:-} 2> "$work/mk.err" > "$work/mk.out") &
pids+=($!)
for _ in $(seq 100); do grep -q 'listening http' "$work/mk.out" 2>/dev/null && break; sleep 0.1; done
mport=$(awk '/listening http/ {split($3, a, ":"); print a[2]}' "$work/mk.out")
[ -n "$mport" ] || { echo "bench/boot-storm.sh: mkimage serve did not start" >&2; exit 1; }
mk="http://127.0.0.1:$mport"
# Both servers get the same script body; nginx's names its own address.
nport=$(free_port)
ng="http://127.0.0.1:$nport"
curl -sf "$mk/boot.ipxe" | sed "s#$mk#$ng#g" > "$work/static/boot.ipxe"
grep -q "^kernel $ng/sha256/" "$work/static/boot.ipxe" || { echo "bench/boot-storm.sh: unexpected boot script" >&2; exit 1; }

# nginx: a minimal config of its own; /sha256/HEX/NAME from the same content
# store mkimage serves them from, /boot.ipxe a static file.
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  sendfile on; tcp_nopush on; access_log off;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$nport backlog=4096;
    location ~ "^/sha256/([0-9a-f]{64})/" { alias $dir/.state/objects/\$1; }
    location = /boot.ipxe { root $work/static; }
  }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)
for _ in $(seq 100); do curl -sf -o /dev/null "$ng/boot.ipxe" && break; sleep 0.1; done
curl -sf -o /dev/null "$ng/boot.ipxe" || { echo "bench/boot-storm.sh: nginx did not start: $(cat "$work/nginx/logs/error.log")" >&2; exit 1; }

# One machine: its script, then everything the script names over one
# connection (as iPXE and the init would, minus the parallelism).
machine() { # BASE I OUT
  local mac; mac=$(printf '52:54:00:00:%02x:%02x' $(($2 / 256)) $(($2 % 256)))
  nice -n "$client_nice" curl -s -o "$3/script.$2" -w '%{time_total}\n' "$1/boot.ipxe?mac=$mac" > "$3/lat.$2"
  local urls
  urls=$(grep -oE "$1/sha256/[0-9a-f]{64}/[^ ,]+" "$3/script.$2" | sort -u)
  [ "$(wc -l <<<"$urls")" = 5 ] || { echo "machine $2: script names $(wc -l <<<"$urls") artifacts, not 5" > "$3/err.$2"; return; }
  local args=()
  for u in $urls; do args+=(-o /dev/null "$u"); done
  nice -n "$client_nice" curl -s -w '%{size_download}\n' "${args[@]}" | awk '{s += $1} END {print s}' > "$3/bytes.$2"
}

# Peak threads and RSS (kB) of the server's processes, sampled every 100 ms until $work/stop exists.
sample() { # OUT PID...
  local out=$1; shift
  local th=0 rss=0 t r p
  while [ ! -e "$work/stop" ]; do
    t=0 r=0
    for p in "$@" $(ps -o pid= --ppid "$(echo "$@" | tr ' ' ',')" 2>/dev/null); do
      [ -r "/proc/$p/status" ] || continue
      t=$((t + $(awk '/^Threads:/ {print $2}' "/proc/$p/status")))
      r=$((r + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
    done
    [ "$t" -gt "$th" ] && th=$t; [ "$r" -gt "$rss" ] && rss=$r
    sleep 0.1
  done
  echo "$th $rss" > "$out"
}
cpu_ticks() {
  local total=0 p
  for p in "$@" $(ps -o pid= --ppid "$(echo "$@" | tr ' ' ',')" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)
pct() { sort -n | awk -v p="$1" '{t[NR]=$1} END {i=int(NR*p/100+0.999); if (i<1) i=1; printf "%.1f", t[i]*1000}'; }

# One storm against BASE (server PID): prints "seconds cpu_s threads rss_kB storm_p50 storm_p99 probe_p50 probe_p99".
storm() { # BASE PID
  local out; out=$(mktemp -d "$work/run.XXXX")
  rm -f "$work/stop"
  sample "$out/peak" "$2" & local sampler=$!
  local cpu0 start
  cpu0=$(cpu_ticks "$2"); start=$(date +%s.%N)
  local jobs=()
  for i in $(seq "$machines"); do machine "$1" "$i" "$out" & jobs+=($!); done
  ( while [ ! -e "$work/stop" ]; do curl -s -o /dev/null -w '%{time_total}\n' "$1/boot.ipxe?mac=52:54:00:ff:ff:ff"; sleep 0.1; done ) > "$out/probe" &
  local prober=$!
  wait "${jobs[@]}"
  local end cpu1; end=$(date +%s.%N); cpu1=$(cpu_ticks "$2")
  touch "$work/stop"; wait "$sampler" "$prober"
  if ls "$out"/err.* >/dev/null 2>&1; then cat "$out"/err.* >&2; exit 1; fi
  local bad; bad=$(cat "$out"/bytes.* | grep -cvx "$((per_machine * 1024 * 1024))" || true)
  [ "$bad" = 0 ] || { echo "bench/boot-storm.sh: $bad machines got short downloads from $1" >&2; exit 1; }
  read -r th rss < "$out/peak"
  echo "$(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.2f", e-s}') $(awk -v c=$((cpu1 - cpu0)) -v hz="$hz" 'BEGIN {printf "%.2f", c/hz}') $th $rss" \
    "$(cat "$out"/lat.* | pct 50) $(cat "$out"/lat.* | pct 99) $(pct 50 < "$out/probe") $(pct 99 < "$out/probe")"
}

echo "boot storm: $machines machines x $per_machine MiB (kernel $kernel_mb, initrd $initrd_mb, basefs $basefs_mb, 2 overlays x $overlay_mb) over 127.0.0.1, clients at nice $client_nice, median of $rounds rounds each; $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
# Warm the page cache once through each server.
for base in "$mk" "$ng"; do grep -oE "$base/sha256/[^ ,]+" <(curl -s "$base/boot.ipxe") | xargs -n1 curl -s -o /dev/null; done
# ROUNDS storms per server, alternating (mkimage, nginx, mkimage, …), so a
# burst of load elsewhere on the machine hits both; each column's median.
for r in $(seq "$rounds"); do
  storm "$mk" "${pids[0]}" >> "$work/mk.rounds"
  storm "$ng" "${pids[1]}" >> "$work/ng.rounds"
  echo "round $r of $rounds: mkimage $(cut -d' ' -f1 "$work/mk.rounds" | tail -n1) s, nginx $(cut -d' ' -f1 "$work/ng.rounds" | tail -n1) s" >&2
done
median() { # FILE: each column's median over the rounds
  awk '{for (i = 1; i <= NF; i++) v[i, NR] = $i; n = NF} END {
    for (i = 1; i <= n; i++) { m = 0; for (r = 1; r <= NR; r++) c[r] = v[i, r];
      for (a = 1; a <= NR; a++) for (b = a + 1; b <= NR; b++) if (c[b] < c[a]) { t = c[a]; c[a] = c[b]; c[b] = t }
      printf "%s%s", c[int((NR + 1) / 2)], (i < n ? " " : "\n") } }' "$1"
}
read -r m_s m_cpu m_th m_rss m_p50 m_p99 m_q50 m_q99 < <(median "$work/mk.rounds")
read -r n_s n_cpu n_th n_rss n_p50 n_p99 n_q50 n_q99 < <(median "$work/ng.rounds")
total=$((machines * per_machine))
row() { printf '%-14s %7.2f s %7.0f MiB/s  CPU %6.2f s  threads %4d  RSS %5d MB  /boot.ipxe p50 %6.1f ms p99 %6.1f ms (storm), p50 %6.1f ms p99 %6.1f ms (probe under load)\n' \
  "$1" "$2" "$(awk -v t="$total" -v s="$2" 'BEGIN {print t/s}')" "$3" "$4" $(($5 / 1024)) "$6" "$7" "$8" "$9"; }
row "mkimage serve" "$m_s" "$m_cpu" "$m_th" "$m_rss" "$m_p50" "$m_p99" "$m_q50" "$m_q99"
row "nginx" "$n_s" "$n_cpu" "$n_th" "$n_rss" "$n_p50" "$n_p99" "$n_q50" "$n_q99"
awk -v n="$n_s" -v m="$m_s" -v nc="$n_cpu" -v mc="$m_cpu" -v p="$m_p99" -v q="$m_q99" -v nq="$n_q99" 'BEGIN {
  printf "throughput ratio mkimage/nginx: %.2f (target >= 1.0); CPU ratio mkimage/nginx: %.2f; mkimage /boot.ipxe p99 %.1f ms in the storm, %.1f ms for the probe (nginx %.1f ms) (target <= 50)\n", n/m, (nc > 0 ? mc/nc : 0), p, q, nq
}'
# The server's own share of the probe's latency: from its log, the time
# from a parsed request head to the last byte written (`ms=`), over every
# round; the rest of the probe's time is connecting, the head's arrival
# and the client's own scheduling.
sed -n 's/.*mac=52:54:00:ff:ff:ff .*path=\/boot.ipxe[? ].* ms=\([0-9]*\) .*/\1/p' "$work/mk.err" | awk '{print $1 / 1000}' > "$work/mk.probe"
[ -s "$work/mk.probe" ] && echo "mkimage's own time for the probe's /boot.ipxe (head parsed to reply written): p50 $(pct 50 < "$work/mk.probe") ms, p99 $(pct 99 < "$work/mk.probe") ms"
