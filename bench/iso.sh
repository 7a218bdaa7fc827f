#!/bin/bash
# ISO benchmark and the boots CI leaves out (issue #14; CI boots the
# offline ISO once, UEFI, in tests/qemu/iso_boot.rs):
#  1. `mkimage iso --offline` twice: build time, size, same bytes;
#  2. `mkimage boot-test --iso` under BIOS (CD-ROM, no network, every
#     assertion of vars/boot.yml);
#  3. the production ISO as a hard disk (what `dd` to a USB stick gives)
#     under BIOS and UEFI, no network: until the discovery line;
#  4. a copy with a corrupted overlay (CD-ROM): until the init's FAILED
#     line, which must name the sha256 mismatch;
#  5. a network-mode ISO (`--server`) as a CD-ROM under BIOS, with
#     `mkimage serve` inside a private network namespace: until the
#     inventory is reported; the server's record of the VM must show the
#     init's stages, `booted` and `inventory`.
#
#   bench/iso.sh [DIR]     (as root, from the repository root; DIR: a build
#                           output dir, default: play playbooks/all.yml)
source "$(dirname "$0")/common.sh"
mkimage_bench iso

dir=${1:-}
if [ -z "$dir" ]; then
    dir=$work/play
    "$mk" play playbooks/all.yml --out "$dir" --var "cache_dir=$cache" >"$work/play.log" 2>&1 || { tail -20 "$work/play.log" >&2; exit 1; }
fi
iso=$work/lab.iso
build1=$(secs "$mk" iso --dir "$dir" --offline --output "$iso")
build2=$(secs "$mk" iso --dir "$dir" --offline --output "$work/again.iso")
cmp -s "$iso" "$work/again.iso" && same=yes || same=NO
rm -f "$work/again.iso"

bios_cd=$(secs "$mk" boot-test --iso "$iso" --serial-log "$work/bios-cd.log") || { tail -30 "$work/bios-cd.log" >&2; exit 1; }

source bench/iso-qemu.sh

found='mkimage-discovery: \{"system"'
# No network: a NIC connected to nothing.
nic=(-device virtio-net-pci,mac=52:54:00:12:34:56,romfile=)
bios_disk=$(qemu_until "$work/bios-disk.log" "$found" 900 "${nic[@]}" -drive "file=$iso,format=raw")
uefi_disk=$(qemu_until "$work/uefi-disk.log" "$found" 900 "${nic[@]}" -bios /usr/share/ovmf/OVMF.fd -drive "file=$iso,format=raw")

# Corrupt one byte inside the overlay's data on a copy of the ISO.
cp "$iso" "$work/corrupt.iso"
lba=$(xorriso -indev "$iso" -find /mkimage/discovery.cpio.gz -exec report_lba -- 2>/dev/null | sed -n 's/^File data lba: *[0-9]* *, *\([0-9]*\) *,.*/\1/p' | head -n1)
[ -n "$lba" ] || { echo "cannot find the overlay's blocks in $iso" >&2; exit 1; }
printf 'X' | dd of="$work/corrupt.iso" bs=1 seek=$((lba * 2048 + 4096)) conv=notrunc status=none
corrupt=$(qemu_until "$work/corrupt.log" "mkimage-init: FAILED" 900 "${nic[@]}" -cdrom "$work/corrupt.iso" -boot d)
why=$(tr -d '\r' <"$work/corrupt.log" | grep -a -o "mkimage-init: FAILED.*" | head -n1)
echo "$why" | grep -q "sha256 mismatch" || { echo "the corrupt medium failed for another reason: $why" >&2; exit 1; }

# Network mode: the server on the namespace's loopback, 10.0.2.2 to the guest.
"$mk" iso --dir "$dir" --server http://10.0.2.2:18081 --output "$work/net.iso" >/dev/null
net=$(unshare -n -- bash -c '
    ip link set lo up
    "$1" serve --dir "$2" --http 127.0.0.1:18081 --tftp off >"$3/serve.log" 2>&1 &
    server=$!
    source bench/iso-qemu.sh
    qemu_until "$3/net.log" "mkimage-report: inventory reported" 900 -netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile= -cdrom "$3/net.iso" -boot d
    rc=$?
    curl -s -H "Authorization: Bearer $(cat "$2/.state/admin.token")" http://127.0.0.1:18081/api/nodes/52:54:00:12:34:56 >"$3/net-node.json"
    kill $server; wait $server 2>/dev/null
    exit $rc' _ "$mk" "$dir" "$work")
stages=$(python3 -c 'import json, sys; print(" ".join(s["stage"] for s in json.load(open(sys.argv[1]))["stages"]))' "$work/net-node.json") ||
    { echo "no node record of the network-mode ISO's VM: $(cat "$work/net-node.json")" >&2; exit 1; }
for want in network download verified mounted switch-root booted inventory; do
    [[ " $stages " == *" $want "* ]] || { echo "the network-mode ISO's node record lacks $want: $stages" >&2; exit 1; }
done

printf '%-52s %s\n' "mkimage iso --offline (build, rebuild)" "${build1} s, ${build2} s; $(( $(stat -c %s "$iso") / 1000000 )) MB; same bytes: $same"
printf '%-52s %s\n' "boot-test --iso, BIOS CD-ROM (all assertions)" "${bios_cd} s"
printf '%-52s %s\n' "as a disk (dd to USB), BIOS: discovery line after" "${bios_disk} s"
printf '%-52s %s\n' "as a disk (dd to USB), UEFI: discovery line after" "${uefi_disk} s"
printf '%-52s %s\n' "corrupted overlay on the medium: FAILED after" "${corrupt} s"
echo "  console: $why"
printf '%-52s %s\n' "network-mode ISO (--server), BIOS CD-ROM: inventory after" "${net} s"
echo "  its node record's stages: $stages"
