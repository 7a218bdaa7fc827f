#!/usr/bin/env bash
# Benchmark: mkimage's initrd build vs initramfs-tools' `mkinitramfs` with
# MODULES=netboot, for the same kernel, side by side in one run.
#
#   bench/initrd.sh            (as root; builds the release example first)
#
# The kernel is Debian's linux-image-amd64 installed in a minbase tree made
# by mmdebstrap (the same tree the tests use, /var/tmp/mkimage-test-fixtures,
# made here if missing; TREE=DIR to use another). mkinitramfs runs chrooted
# in that tree (its own initramfs-tools, pulled in by the kernel package);
# mkimage reads the same tree, with its `.deb` cache warm (one untimed run
# first, as in any rebuild) and, if the fixture's basefs.squashfs is there,
# from that image too. Prints times, sizes and the ratios
# (targets: time <= 0.1x, size <= 0.3x).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 1; }
for p in mmdebstrap chroot unshare; do
  command -v "$p" >/dev/null || { echo "missing $p: apt-get install -y mmdebstrap util-linux" >&2; exit 1; }
done

if [[ -z "${TREE:-}" ]]; then
  TREE=$(ls -d /var/tmp/mkimage-test-fixtures/basefs-*/tree 2>/dev/null | head -1 || true)
fi
if [[ -z "$TREE" || ! -d "$TREE" ]]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /-security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
  [[ -n "$mirror" ]] || mirror=$(awk '$1=="deb" && $2 !~ /-security/ {print $2; exit}' /etc/apt/sources.list)
  TREE=/var/tmp/mkimage-bench-initrd/tree
  rm -rf "$TREE.tmp"; mkdir -p "$(dirname "$TREE")"
  mmdebstrap --variant=minbase --mode=root --include=systemd-sysv,linux-image-amd64 bookworm "$TREE.tmp" "$mirror"
  mv "$TREE.tmp" "$TREE"
fi
ver=$(ls "$TREE/usr/lib/modules" | head -1)
echo "kernel $ver in $TREE"

cd "$here"
cargo build --release --example initrd-build >/dev/null 2>&1 || cargo build --release --example initrd-build
work=$(mktemp -d /var/tmp/mkimage-bench-initrd.XXXXXX)
trap 'rm -rf "$work"; rm -rf "$TREE/tmp/bench-conf" "$TREE/tmp/bench-initrd.img"' EXIT
export MKIMAGE_APT_CACHE=/var/tmp/mkimage-test-fixtures/apt-cache

now() { date +%s.%N; }

# mkimage: one untimed run fills the .deb cache, then the timed run.
target/release/examples/initrd-build "$TREE" "$work/warm" >/dev/null 2>&1
t0=$(now)
target/release/examples/initrd-build "$TREE" "$work/ours" > "$work/ours.log" 2>&1
t1=$(now)
ours_time=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
ours_size=$(stat -c %s "$work/ours/initrd.initrd")
ours_mods=$(grep -o '[0-9]* modules' "$work/ours.log" | tail -1)
# Also from the basefs squashfs next to the tree, if there is one (read on demand).
image="$(dirname "$TREE")/basefs.squashfs"
if [[ -f "$image" ]]; then
  t0=$(now)
  target/release/examples/initrd-build "$image" "$work/ours-sq" > /dev/null 2>&1
  t1=$(now)
  sq_time=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
fi

# mkinitramfs, MODULES=netboot, chrooted in the same tree.
rm -rf "$TREE/tmp/bench-conf"
cp -a "$TREE/etc/initramfs-tools" "$TREE/tmp/bench-conf"
sed -i 's/^MODULES=.*/MODULES=netboot/' "$TREE/tmp/bench-conf/initramfs.conf"
t0=$(now)
unshare -m sh -c 'mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && mount -t sysfs sysfs "$1/sys" &&
  chroot "$1" mkinitramfs -d /tmp/bench-conf -o /tmp/bench-initrd.img "$2"' sh "$TREE" "$ver" > "$work/mkinitramfs.log" 2>&1
t1=$(now)
theirs_time=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
theirs_size=$(stat -c %s "$TREE/tmp/bench-initrd.img")
theirs_comp=$(sed -n 's/^COMPRESS=//p' "$TREE/tmp/bench-conf/initramfs.conf")

printf '%-34s %8s s %10s bytes\n' "mkimage initrd (gzip -6, $ours_mods)" "$ours_time" "$ours_size"
[[ -n "${sq_time:-}" ]] && printf '%-34s %8s s %10s bytes\n' "  same, kernel read from squashfs" "$sq_time" "$(stat -c %s "$work/ours-sq/initrd.initrd")"
printf '%-34s %8s s %10s bytes\n' "mkinitramfs MODULES=netboot (${theirs_comp:-default})" "$theirs_time" "$theirs_size"
awk -v a="$ours_time" -v b="$theirs_time" 'BEGIN{printf "time ratio  %.3f (target <= 0.1)\n", a/b}'
awk -v a="$ours_size" -v b="$theirs_size" 'BEGIN{printf "size ratio  %.3f (target <= 0.3)\n", a/b}'
