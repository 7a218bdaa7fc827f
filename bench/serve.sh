#!/usr/bin/env bash
# Benchmark `mkimage serve` against nginx on loopback: 64 concurrent curl
# downloads of a ~100 MB file from each (same directory, same clients), the
# aggregate throughput ratio, and time-to-first-byte of a small request
# (/boot.ipxe for mkimage, a small static file for nginx) under that load.
#
# Usage: bench/serve.sh [CLIENTS] [SIZE_MB]     (defaults: 64 100)
# MKIMAGE_SERVE_ARGS adds flags to `mkimage serve` (e.g. "--workers 16"); ROUNDS
# (default 2) repeats each side and keeps the best.
# Needs: curl, nginx (apt-get install -y curl nginx); builds mkimage --release.
set -euo pipefail
clients=${1:-64}
size_mb=${2:-100}
here=$(cd "$(dirname "$0")/.." && pwd)
source "$here/bench/common.sh"
need_tools bench/serve.sh curl nginx
serve_bench_setup

# The served dir: a big basefs plus what a boot script needs.
head -c $((size_mb * 1024 * 1024)) /dev/urandom > "$dir/base.squashfs"
printf 'kernel' > "$dir/vmlinuz"
printf 'initrd' > "$dir/initrd.img"
entries=()
for f in base.squashfs vmlinuz initrd.img; do
  sha=$(sha256sum "$dir/$f" | cut -d' ' -f1)
  echo "$sha  $f" > "$dir/$f.sha256"
  case $f in base.squashfs) kind=basefs ;; vmlinuz) kind=kernel ;; initrd.img) kind=initrd ;; esac
  entries+=("\"$f\": {\"kind\": \"$kind\", \"name\": \"$kind\", \"file\": \"$f\", \"size\": $(stat -c %s "$dir/$f"), \"sha256\": \"$sha\", \"build_time\": 0, \"tool_version\": \"bench\"}")
done
(IFS=,; echo "{\"artifacts\": {${entries[*]}}}") > "$dir/manifest.json"
chmod -R a+rX "$dir"
want=$(cut -d' ' -f1 "$dir/base.squashfs.sha256")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nginx with a minimal config of its own (sendfile on, no access log).
nport=$(free_port)
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 4096; }
http {
  sendfile on; tcp_nopush on; access_log off;
  client_body_temp_path $work/nginx/tmp; proxy_temp_path $work/nginx/tmp;
  fastcgi_temp_path $work/nginx/tmp; uwsgi_temp_path $work/nginx/tmp; scgi_temp_path $work/nginx/tmp;
  types { application/octet-stream squashfs; }
  server { listen 127.0.0.1:$nport; root $dir; }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
pids+=($!)

# Run from the work dir so no vars/boot.yml applies: the default profile.
(cd "$work" && exec "$mkimage" serve --dir "$dir" --http 127.0.0.1:0 --tftp off ${MKIMAGE_SERVE_ARGS:-} 2>/dev/null > "$work/mk.out") &
pids+=($!)
for _ in $(seq 50); do grep -q 'listening http' "$work/mk.out" 2>/dev/null && break; sleep 0.1; done
mport=$(awk '/listening http/ {split($3, a, ":"); print a[2]}' "$work/mk.out")
for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$nport/vmlinuz" && break; sleep 0.1; done

# CPU time (user+system, clock ticks) used so far by the given pids and their children.
cpu_ticks() {
  local total=0 p
  for p in "$@" $(ps -o pid= --ppid "$(echo "$@" | tr ' ' ',')" 2>/dev/null); do
    [ -r "/proc/$p/stat" ] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
hz=$(getconf CLK_TCK)

# One run: CLIENTS parallel downloads; prints "seconds ttfb_median ttfb_max server_cpu_seconds".
run() {
  local base=$1 small=$2 server=$3 out="$work/run.$RANDOM"
  mkdir -p "$out"
  # Warm the page cache and check the bytes once; the timed clients only
  # count bytes, so the clients' hashing does not hide the servers' cost.
  [ "$(curl -s "$base/base.squashfs" | sha256sum | cut -d' ' -f1)" = "$want" ] || { echo "bench/serve.sh: $base served wrong bytes" >&2; exit 1; }
  local start end cpu0 cpu1
  cpu0=$(cpu_ticks "$server")
  start=$(date +%s.%N)
  for i in $(seq "$clients"); do
    curl -s -o /dev/null -w '%{size_download}\n' "$base/base.squashfs" > "$out/$i" &
  done
  sleep 0.5
  for _ in $(seq 10); do
    curl -s -o /dev/null -w '%{time_starttransfer}\n' "$base/$small" >> "$out/ttfb"
    sleep 0.2
  done
  wait   # run is called in a subshell: this waits for its curl jobs only
  end=$(date +%s.%N)
  cpu1=$(cpu_ticks "$server")
  local bad
  bad=$(cat "$out"/[0-9]* | grep -cvx "$((size_mb * 1024 * 1024))" || true)
  [ "$bad" = 0 ] || { echo "bench/serve.sh: $bad downloads from $base were short" >&2; exit 1; }
  sort -n "$out/ttfb" | awk -v s="$start" -v e="$end" -v c=$(((cpu1 - cpu0))) -v hz="$hz" \
    '{t[NR]=$1} END {printf "%.3f %.4f %.4f %.2f\n", e-s, t[int((NR+1)/2)], t[NR], c/hz}'
}

rounds=${ROUNDS:-2}
echo "clients: $clients x ${size_mb} MiB over 127.0.0.1 ($(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)), best of $rounds rounds"
best() { sort -n | head -1; }
: > "$work/n.txt"; : > "$work/m.txt"
for _ in $(seq "$rounds"); do
  (run "http://127.0.0.1:$nport" vmlinuz "${pids[0]}") >> "$work/n.txt"
  (run "http://127.0.0.1:$mport" boot.ipxe "${pids[1]}") >> "$work/m.txt"
done
read -r n_s n_ttfb n_max n_cpu < <(best < "$work/n.txt")
read -r m_s m_ttfb m_max m_cpu < <(best < "$work/m.txt")
total=$((clients * size_mb))
awk -v t="$total" -v n="$n_s" -v m="$m_s" -v nt="$n_ttfb" -v nm="$n_max" -v mt="$m_ttfb" -v mm="$m_max" -v nc="$n_cpu" -v mc="$m_cpu" 'BEGIN {
  printf "nginx:         %6.2f s  %7.0f MiB/s  server CPU %5.2f s   TTFB small file under load: median %.1f ms, max %.1f ms\n", n, t/n, nc, nt*1000, nm*1000
  printf "mkimage serve: %6.2f s  %7.0f MiB/s  server CPU %5.2f s   TTFB /boot.ipxe under load:  median %.1f ms, max %.1f ms\n", m, t/m, mc, mt*1000, mm*1000
  printf "throughput ratio mkimage/nginx: %.2f (target >= 1.0); server CPU ratio mkimage/nginx: %.2f\n", n/m, (nc > 0 ? mc/nc : 0)
}'
