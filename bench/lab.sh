#!/bin/bash
# The proxyDHCP lab matrix (issue #11.2): `mkimage boot-test --proxy-dhcp`
# — a bridge + tap, a site dnsmasq (addresses and DNS only) in a namespace
# of its own, `mkimage serve --proxy-dhcp` on the bridge — for each
# firmware × NIC, one boot at a time. BIOS boots through the NIC's iPXE ROM;
# UEFI through OVMF's own PXE client (TFTP ipxe.efi, the 4011 exchange,
# then iPXE and the HTTP script). Each boot passes only when every console
# assertion and every check of the boot's path in the server's and the
# site's logs passes (boot-test prints them); this prints one line per boot
# with its wall time. The default test suite boots BIOS/virtio only
# (tests/netboot_e2e.rs); this is the rest of the matrix.
#
#   bench/lab.sh DIR                  (as root, from the repository root;
#                                      DIR: a `mkimage play` output)
#   FIRMWARES="bios uefi" NICS="virtio e1000" bench/lab.sh DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
[ $# = 1 ] && [ -f "$1/manifest.json" ] || { echo "usage: bench/lab.sh DIR (a mkimage play output: mkimage play playbooks/all.yml --out DIR)" >&2; exit 2; }
dir=$(cd "$1" && pwd)
mk=${MKIMAGE:-target/release/mkimage}
[ -x "$mk" ] || cargo build --release -q
work=$(mktemp -d /var/tmp/mkimage-bench-lab.XXXX)
trap 'rm -rf "$work"' EXIT

failed=0
printf '%-6s %-7s %-6s %8s\n' firmware nic result seconds
for fw in ${FIRMWARES:-bios uefi}; do
  for nic in ${NICS:-virtio e1000}; do
    flag=(); [ "$fw" = uefi ] && flag=(--uefi)
    log="$work/$fw-$nic.log"
    s=$(date +%s)
    if "$mk" boot-test --dir "$dir" --proxy-dhcp "${flag[@]}" --nic "$nic" --timeout 1500 \
         --serial-log "$work/$fw-$nic.serial" >"$log" 2>&1; then r=pass; else r=FAIL; failed=1; fi
    printf '%-6s %-7s %-6s %8s\n' "$fw" "$nic" "$r" "$(( $(date +%s) - s ))"
    if [ "$r" = FAIL ]; then grep -E '^(FAIL|PASS)|error' "$log" | head -20 >&2; fi
  done
done
exit $failed
