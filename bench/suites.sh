#!/bin/bash
# Debian 12 (bookworm) against Debian 13 (trixie), side by side in one run:
#  1. `mkimage play playbooks/all.yml --var suite=S` into a fresh output dir
#     with a warm package cache but no bootstrap-tree cache ("cold play"),
#     bookworm then trixie;
#  2. the artifacts' sizes and the initrd's module count;
#  3. one QEMU netboot (boot-test, BIOS, virtio) of each: the initrd's
#     download + sha256 + mount time, when switch_root and the discovery
#     line came (seconds after the kernel started), and boot-test's total.
# Prints each figure for both suites and the ratio trixie / bookworm.
#
#   bench/suites.sh      (as root, from the repository root)
source "$(dirname "$0")/common.sh"
mkimage_bench suites
suites="bookworm trixie"

size_mb() { stat -c %s "$1" | awk '{printf "%.1f", $1 / 1000000}'; }
# The kernel timestamp (`[  12.345678]`, anywhere on the line: a login
# prompt may come first) of the first console line matching a sed pattern.
at() { sed -n "s/.*\[ *\([0-9]*\.[0-9]*\)\].*$1.*/\1/p" "$2" | head -n1; }

declare -A fig
for s in $suites; do
    echo "$s: warming the package cache ($cache)…" >&2
    "$mk" play playbooks/all.yml --var "suite=$s" --out "$work/warm-$s" --var "cache_dir=$cache" >/dev/null 2>&1
    rm -rf "$work/warm-$s"
done
for s in $suites; do
    echo "$s: cold play…" >&2
    fig[$s,play]=$(secs "$mk" play playbooks/all.yml --var "suite=$s" --out "$work/$s" --var "cache_dir=$cache" --var bootstrap_cache=false)
    fig[$s,basefs]=$(size_mb "$work/$s/basefs.squashfs")
    fig[$s,overlay]=$(size_mb "$work/$s/discovery.cpio.gz")
    fig[$s,initrd]=$(size_mb "$work/$s/initrd.initrd")
    fig[$s,kernel]=$(size_mb "$work/$s/initrd.vmlinuz")
    fig[$s,modules]=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["artifacts"]["initrd.initrd"]["modules"]))' "$work/$s/manifest.json")
done
for s in $suites; do
    echo "$s: boot-test…" >&2
    "$mk" boot-test --dir "$work/$s" --serial-log "$work/$s.serial" >"$work/$s.boot" 2>&1 || { cat "$work/$s.boot"; tail -40 "$work/$s.serial" >&2; exit 1; }
    fig[$s,boot]=$(sed -n 's/.*assertions passed in \([0-9]*\)s.*/\1/p' "$work/$s.boot")
    fig[$s,fetch]=$(sed -n 's/.*download, verify and mount took \([0-9.]*\) s.*/\1/p' "$work/$s.serial" | tail -n1)
    fig[$s,switch]=$(sed -n 's/.*switch_root at \([0-9.]*\) s after.*/\1/p' "$work/$s.serial" | tail -n1)
    fig[$s,discovery]=$(at 'mkimage-discovery: {' "$work/$s.serial")
done

printf '%-50s %10s %10s %8s\n' "" bookworm trixie ratio
row() { printf '%-50s %10s %10s %8s\n' "$1" "${fig[bookworm,$2]}" "${fig[trixie,$2]}" "$(echo "${fig[trixie,$2]} / ${fig[bookworm,$2]}" | bc -l | xargs printf '%.2f')"; }
row "cold play, warm package cache (s)" play
row "basefs.squashfs (MB)" basefs
row "discovery.cpio.gz (MB)" overlay
row "initrd.initrd (MB)" initrd
row "initrd.vmlinuz (MB)" kernel
row "initrd modules (with dependencies)" modules
row "boot: download + sha256 + mount in the VM (s)" fetch
row "boot: switch_root, after kernel start (s)" switch
row "boot: discovery line, after kernel start (s)" discovery
row "boot-test total (s)" boot
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
