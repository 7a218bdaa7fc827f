#!/bin/bash
# Secure Boot: what CI leaves out (CI boots once with factory keys and once
# with a site-signed UKI, in tests/qemu/secure_boot.rs):
#  1. tests/qemu/secure_boot.rs --ignored: the firmware's refusals (a UKI
#     signed by another key than the one in db, and Debian's unsigned
#     ipxe.efi — each must end at OVMF's "Access Denied", no kernel
#     started); the init's refusal of a basefs replaced on the server after
#     its UKI was signed (dm-verity, on the console and in the node record);
#     and the UKI through shim with the site key only in MOK;
#     tests/qemu/iso_secure.rs --ignored: an offline ISO booted as a
#     CD-ROM under Secure Boot (shim → signed GRUB CD image → signed
#     kernel), no network, every assertion;
#  2. the factory-keys chain on the lab's layer-2 network: serve
#     --proxy-dhcp --uefi-boot shim beside a site DHCP server that names it
#     as next-server; shim, GRUB, the per-MAC config and the kernel over
#     mkimage's TFTP;
#  3. the factory-keys chain (shim → signed GRUB → signed kernel) on the
#     e1000 NIC: every assertion, Secure Boot on, kernel locked down;
#  4. the site-signed UKI on e1000.
#
#   bench/secure-boot.sh [DIR]   (as root, from the repository root; DIR: a
#                                 build output dir, default: play playbooks/all.yml)
source "$(dirname "$0")/common.sh"
mkimage_bench secure-boot

dir=${1:-}
if [ -z "$dir" ]; then
    dir=$work/play
    "$mk" play playbooks/all.yml --out "$dir" --var "cache_dir=$cache" >"$work/play.log" 2>&1 || { tail -20 "$work/play.log" >&2; exit 1; }
fi
t=$(secs cargo test --release --test qemu secure_boot:: -- --ignored --test-threads 1 --nocapture)
echo "refusals (another key's UKI, unsigned ipxe.efi by the firmware; a replaced basefs by the init) and the UKI through shim with the key in MOK: passed in $t s"
grep -m1 '^refused: ' "$work/last.log" || true
t=$(secs cargo test --release --test qemu iso_secure:: -- --ignored --test-threads 1 --nocapture)
echo "offline ISO under Secure Boot (shim, signed GRUB CD image, signed kernel; no network): passed in $t s"
t=$(secs "$mk" boot-test --dir "$dir" --secure-boot --proxy-dhcp)
echo "factory keys, lab network (proxyDHCP, --uefi-boot shim): $(grep -c '^PASS' "$work/last.log") assertions passed in $t s"
t=$(secs "$mk" boot-test --dir "$dir" --secure-boot --nic e1000)
echo "factory keys, e1000: $(grep -c '^PASS' "$work/last.log") assertions passed in $t s"
"$mk" keys init --dir "$work/keys" >/dev/null
t=$(secs "$mk" boot-test --dir "$dir" --secure-boot --nic e1000 --keys "$work/keys")
echo "site-signed UKI, e1000: $(grep -c '^PASS' "$work/last.log") assertions passed in $t s"
