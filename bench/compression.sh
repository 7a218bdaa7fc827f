#!/bin/bash
# squashfs compression for the basefs, chosen from numbers: for zstd at
# levels 3, 9, 15, 19 and xz, mkimage's own writer packs the shipped
# basefs's tree (size, build time on this host), then the VM (QEMU TCG,
# 2 vCPUs, as boot-test) netboots each image with mkimage.bench=readall and
# prints how long reading every file of it takes (the decompression cost a
# booted machine pays). Prints a table with ratios to zstd 3.
#
#   bench/compression.sh      (as root, from the repository root; uses
#                              builds/ from `mkimage play playbooks/all.yml`,
#                              or DIR=... for another output dir)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
source bench/common.sh
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
for p in unsquashfs:squashfs-tools qemu-system-x86_64:qemu-system-x86 busybox:busybox-static bc:bc; do
    command -v "${p%%:*}" >/dev/null || { echo "install it: apt-get install -y ${p#*:}" >&2; exit 2; }
done
dir=${DIR:-builds}
for f in basefs.squashfs initrd.vmlinuz initrd.initrd; do
    [ -f "$dir/$f" ] || { echo "no $dir/$f: run mkimage play playbooks/all.yml first (or DIR=)" >&2; exit 2; }
done
cargo build --release -q --example pack
work=$(mktemp -d /var/tmp/mkimage-bench-compression.XXXX)
trap 'rm -rf "$work"' EXIT
unsquashfs -no-progress -quiet -d "$work/tree" "$dir/basefs.squashfs" >/dev/null
mkdir -p "$work/serve"

settings=${SETTINGS:-"zstd:3 zstd:9 zstd:15 zstd:19 xz:6"}
printf '%-8s %10s %8s %10s %12s %10s\n' setting "size MB" "x zstd3" "build s" "VM read s" "x zstd3"
base_size= base_read=
for s in $settings; do
    comp=${s%%:*} level=${s#*:}
    img="$work/serve/basefs.squashfs"
    start=$(date +%s.%N)
    target/release/examples/pack squashfs "$work/tree" "$img" "$comp" "$level"  # set -e: a failed pack stops the run
    build=$(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.3f')
    size=$(stat -c %s "$img")
    vm_boot "$work/serve" "$dir/initrd.vmlinuz" "$dir/initrd.initrd" \
        "basefs=http://10.0.2.2:18080/basefs.squashfs mkimage.bench=readall" \
        "$work/serial.log" "reading every file of the basefs|FAILED" 1200
    read=$(bench_line "$work/serial.log" "reading every file of the basefs")
    [ -n "$read" ] || { echo "$s: no read-all time; tail:" >&2; tail -20 "$work/serial.log" >&2; exit 1; }
    base_size=${base_size:-$size} base_read=${base_read:-$read}
    printf '%-8s %10.1f %8s %10s %12s %10s\n' "$comp $level" "$(echo "$size / 1000000" | bc -l)" \
        "$(ratio "$size" "$base_size")" "$build" "$read" "$(ratio "$read" "$base_read")"
done
