#!/bin/bash
# Netboot benchmark (issue: play, rebuild, boot):
#  1. `mkimage play playbooks/all.yml` into a fresh output dir with a warm
#     package cache but no bootstrap-tree cache ("cold play"),
#  2. the same play again with nothing changed (every cache warm),
#  3. one QEMU netboot (boot-test) with mkimage.bench=transfer: the initrd
#     first fetches the same bytes to /dev/null one after the other (and
#     times the sha256 variants: downloading the basefs to a file, sha256
#     of that file, sha256 while downloading), then does the real fetch —
#     basefs and overlays at once, dm-verity or sha256, mount; prints the
#     times and the ratio of the real path to the pure transfer.
#
#   bench/netboot.sh      (as root, from the repository root)
source "$(dirname "$0")/common.sh"
mkimage_bench netboot

echo "warming the package cache ($cache)…" >&2
"$mk" play playbooks/all.yml --out "$work/warm" --var "cache_dir=$cache" >/dev/null 2>&1
cold=$(secs "$mk" play playbooks/all.yml --out "$work/cold" --var "cache_dir=$cache" --var bootstrap_cache=false)
again=$(secs "$mk" play playbooks/all.yml --out "$work/cold" --var "cache_dir=$cache")
"$mk" boot-test --dir "$work/cold" --append mkimage.bench=transfer --serial-log "$work/serial.log" >/dev/null 2>&1 || { tail -40 "$work/serial.log" >&2; exit 1; }
transfer=$(bench_line "$work/serial.log" "transfer only")
tofile=$(bench_line "$work/serial.log" "downloading the basefs to a file")
hash=$(bench_line "$work/serial.log" "sha256 of the basefs alone")
stream=$(bench_line "$work/serial.log" "sha256 while downloading")
real=$(sed -n 's/.*download, verify and mount took \([0-9.]*\) s.*/\1/p' "$work/serial.log" | tail -n1)
how=$(grep -q "dm-verity ok" "$work/serial.log" && echo "dm-verity" || echo "sha256")
bytes=$(du -cb "$work/cold"/basefs.squashfs "$work/cold"/discovery.cpio.gz | tail -n1 | cut -f1)

printf '%-52s %10s\n' "cold play (warm package cache)" "${cold} s   (target <= 90 s)"
printf '%-52s %10s\n' "no-change rebuild (all caches warm)" "${again} s"
printf '%-52s %10s\n' "boot: transfer only ($((bytes / 1000000)) MB, in the VM)" "${transfer} s"
printf '%-52s %10s\n' "boot: basefs to a file alone (in the VM)" "${tofile} s"
printf '%-52s %10s\n' "boot: sha256 of that file alone (in the VM)" "${hash} s"
printf '%-52s %10s\n' "boot: sha256 while downloading (wget | sha256sum)" "${stream} s"
printf '%-52s %10s\n' "boot: parallel fetch + $how + mount to union root" "${real} s"
printf '%-52s %10s\n' "fetch ratio: real / transfer (target <= 1.5)" "$(ratio "$real" "$transfer")"
printf '%-52s %10s\n' "  file download + sha256 would be" "$(ratio "$(echo "$tofile + $hash" | bc -l)" "$transfer")"
