#!/bin/bash
# Netboot benchmark (issue #12: the edit-build-boot loop; issue #13: boot):
#  1. `mkimage play playbooks/all.yml` with a warm package cache but no
#     bootstrapped tree and no task layers ("cold play"),
#  2. the same play again with nothing changed,
#  3. after an edit of the discovery role's last task (only the overlay
#     rebuilds, from that task),
#  4. after an edit of the base role's last task (the basefs rebuilds from
#     that task, the overlay on it follows, the initrd does not: its kernel
#     did not change),
#     each step's time and its ratio to the cold play (what a tool that
#     rebuilds everything pays for every edit), and what each step built;
#  5. one QEMU netboot (boot-test) of the result with mkimage.bench=transfer:
#     the initrd first fetches the same bytes to /dev/null one after the
#     other (and times the sha256 variants: downloading the basefs to a
#     file, sha256 of that file, sha256 while downloading), then does the
#     real fetch — basefs and overlays at once, dm-verity or sha256, mount;
#     prints the times and the ratio of the real path to the pure transfer.
#
#   bench/netboot.sh      (as root, from the repository root; BOOT=0 skips 5)
source "$(dirname "$0")/common.sh"
mkimage_bench netboot
mk=$(readlink -f "$mk")
# What the last play built: the artifacts it did not skip.
built() { { grep -oE '==> (basefs|overlay|initrd) `[^`]*`: .*; building' "$work/last.log" || true; } | sed -E 's/==> ([a-z]+) `([^`]*)`.*/\1 \2/' | paste -sd, - | sed 's/,/, /g'; }

echo "warming the package cache ($cache)…" >&2
"$mk" play playbooks/all.yml --out "$work/warm" --var "cache_dir=$cache" >/dev/null 2>&1
# A cache of our own for trees and layers; the downloaded packages shared.
mkdir -p "$work/cache" && ln -s "$cache/debs" "$work/cache/debs" && ln -s "$cache/apt" "$work/cache/apt"
mkdir "$work/proj" && cp -r vars provisioners playbooks initrd ipxe "$work/proj/"
play() { (cd "$work/proj" && "$mk" play playbooks/all.yml --out "$work/out" --var "cache_dir=$work/cache"); }

cold=$(secs play)
again=$(secs play); again_built=$(built)
# The discovery role's last task: enable mkimage-discovery there too (already
# enabled by an earlier task: the build changes, the image does not).
sed -i 's/service: {name: mkimage-inventory, enabled: true}/service: {name: [mkimage-inventory, mkimage-discovery], enabled: true}/' "$work/proj/provisioners/discovery/tasks.yml"
[ "$(tail -n1 "$work/proj/provisioners/discovery/tasks.yml")" = "  service: {name: [mkimage-inventory, mkimage-discovery], enabled: true}" ] || { echo "the discovery role's last task is not what this script edits" >&2; exit 1; }
disc=$(secs play); disc_built=$(built)
# The base role's last task: enable a getty on the serial console too.
sed -i 's/name: \[systemd-networkd, mkimage-ssh-keygen, mkimage-boot-hooks, mkimage-booted, ssh\]/name: [systemd-networkd, mkimage-ssh-keygen, mkimage-boot-hooks, mkimage-booted, ssh, serial-getty@ttyS0]/' "$work/proj/provisioners/base/tasks.yml"
grep -q 'serial-getty@ttyS0\]' "$work/proj/provisioners/base/tasks.yml" || { echo "the base role's last task is not what this script edits" >&2; exit 1; }
base=$(secs play); base_built=$(built)
cached=$(grep -c ': cached$' "$work/last.log" || true)

printf '%-48s %8s %8s  %s\n' "step" "seconds" "x cold" "built"
printf '%-48s %8s %8s  %s\n' "cold play (warm package cache)" "$cold" "1.000" "everything"
printf '%-48s %8s %8s  %s\n' "no-change play (target <= 2 s)" "$again" "$(ratio "$again" "$cold")" "${again_built:-nothing}"
printf '%-48s %8s %8s  %s\n' "discovery last-task edit (target <= 5 s)" "$disc" "$(ratio "$disc" "$cold")" "${disc_built:-nothing}"
printf '%-48s %8s %8s  %s\n' "base last-task edit" "$base" "$(ratio "$base" "$cold")" "${base_built:-nothing} ($cached tasks cached)"

[ "${BOOT:-1}" = 0 ] && exit 0
"$mk" boot-test --dir "$work/out" --append mkimage.bench=transfer --serial-log "$work/serial.log" >/dev/null 2>&1 || { tail -40 "$work/serial.log" >&2; exit 1; }
transfer=$(bench_line "$work/serial.log" "transfer only")
tofile=$(bench_line "$work/serial.log" "downloading the basefs to a file")
hash=$(bench_line "$work/serial.log" "sha256 of the basefs alone")
stream=$(bench_line "$work/serial.log" "sha256 while downloading")
real=$(sed -n 's/.*download, verify and mount took \([0-9.]*\) s.*/\1/p' "$work/serial.log" | tail -n1)
how=$(grep -q "dm-verity ok" "$work/serial.log" && echo "dm-verity" || echo "sha256")
bytes=$(du -cb "$work/out"/basefs.squashfs "$work/out"/discovery.cpio.gz | tail -n1 | cut -f1)

printf '%-52s %10s\n' "boot: transfer only ($((bytes / 1000000)) MB, in the VM)" "${transfer} s"
printf '%-52s %10s\n' "boot: basefs to a file alone (in the VM)" "${tofile} s"
printf '%-52s %10s\n' "boot: sha256 of that file alone (in the VM)" "${hash} s"
printf '%-52s %10s\n' "boot: sha256 while downloading (wget | sha256sum)" "${stream} s"
printf '%-52s %10s\n' "boot: parallel fetch + $how + mount to union root" "${real} s"
printf '%-52s %10s\n' "fetch ratio: real / transfer (target <= 1.5)" "$(ratio "$real" "$transfer")"
printf '%-52s %10s\n' "  file download + sha256 would be" "$(ratio "$(echo "$tofile + $hash" | bc -l)" "$transfer")"
