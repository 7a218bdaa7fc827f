#!/bin/bash
# How the basefs is verified at boot, measured on the host (the VM's side
# of the same comparison is `bench/netboot.sh`, which boots with
# mkimage.bench=transfer,readall). For one basefs squashfs (default: the
# one in builds/, or BASEFS=FILE) it prints:
#   boot side, with busybox wget from busybox httpd on loopback inside a
#   private network namespace (as the init does it):
#     transfer only (to /dev/null), download to a file, sha256 of the file,
#     sha256 while downloading (wget | sha256sum), dm-verity setup (loop +
#     dmsetup + block 0) — and each path's ratio to the pure transfer;
#   at run time: reading every file through dm-verity vs the plain loop
#   device (what verity adds when every block is read);
#   build side: mkimage's hash tree vs `veritysetup format` (same root hash).
#
#   bench/verify.sh            (as root, from the repository root)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
source bench/common.sh
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
for p in veritysetup:cryptsetup-bin dmsetup:dmsetup busybox:busybox-static unsquashfs:squashfs-tools bc:bc; do
    command -v "${p%%:*}" >/dev/null || { echo "install it: apt-get install -y ${p#*:}" >&2; exit 2; }
done
cargo build --release -q --example verity
basefs=${BASEFS:-builds/basefs.squashfs}
[ -f "$basefs" ] || { echo "no $basefs: run mkimage play playbooks/all.yml first, or set BASEFS=" >&2; exit 2; }

work=$(mktemp -d /dev/shm/mkimage-bench-verify.XXXX)
loops=()
cleanup() {
    umount "$work/mnt" 2>/dev/null || true
    dmsetup remove mkimage-bench-verity 2>/dev/null || true
    for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# The data part (the squashfs, padded) and a fresh tree from mkimage.
size=$(stat -c %s "$basefs")
squash_bytes=$(od -An -t u8 -j 40 -N 8 "$basefs" | tr -d ' ')
data=$(( (squash_bytes + 4095) / 4096 * 4096 ))
head -c "$data" "$basefs" > "$work/data"
cp "$work/data" "$work/ours"
t_ours=$(timeit target/release/examples/verity "$work/ours")
cp "$work/data" "$work/peer"
t_peer=$(timeit veritysetup format --no-superblock --salt=- --hash=sha256 --format=1 \
    --hash-offset="$data" --data-blocks=$((data / 4096)) "$work/peer" "$work/peer")
ours=$(target/release/examples/verity "$work/data")  # leaves $work/data = data + tree
peer_root=$(veritysetup format --no-superblock --salt=- --hash=sha256 --format=1 --hash-offset="$data" \
    --data-blocks=$((data / 4096)) "$work/peer" "$work/peer" | sed -n 's/^Root hash:[[:space:]]*//p')
root=${ours%%:*}
same=no
[ "$root" = "$peer_root" ] && cmp -s "$work/data" "$work/peer" && same=yes
rm -f "$work/ours" "$work/peer"
file="$work/data"

# Boot side: busybox wget from busybox httpd, in a private network namespace.
timings=$(unshare -n bash -c '
    set -e
    ip link set lo up
    busybox httpd -f -p 127.0.0.1:18080 -h "$1" & srv=$!
    trap "kill $srv" EXIT
    for i in $(seq 50); do busybox wget -q -O /dev/null http://127.0.0.1:18080/ 2>/dev/null && break; sleep 0.1; done
    url=http://127.0.0.1:18080/data
    t() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc -l; }
    echo "transfer $(t busybox wget -q -O /dev/null $url)"
    echo "tofile $(t busybox wget -q -O "$1/dl" $url)"
    echo "sha256 $(t sha256sum "$1/dl")"
    echo "stream $(t sh -c "busybox wget -q -O - $url | sha256sum >/dev/null")"
    rm -f "$1/dl"
' _ "$work")
get() { echo "$timings" | awk -v k="$1" '$1==k {printf "%.3f", $2}'; }
transfer=$(get transfer); tofile=$(get tofile); sha=$(get sha256); stream=$(get stream)

# Full verification in user space (every block and the whole tree) — what
# dm-verity costs when every block is read.
t_vverify=$(timeit veritysetup verify --no-superblock --salt=- --hash=sha256 --format=1 \
    --hash-offset="$data" --data-blocks=$((data / 4096)) "$file" "$file" "$root")

readall() {  # DEVICE: mount it, read every file, unmount
    mkdir -p "$work/mnt"
    mount -t squashfs -o ro "$1" "$work/mnt"
    find "$work/mnt" -xdev -type f -exec cat {} + > /dev/null
    umount "$work/mnt"
}
plain=$(losetup -f --show -r "$file"); loops+=("$plain")
t_read_plain=$(timeit readall "$plain")
# dm-verity needs the kernel's device-mapper (not every host kernel has it).
t_setup=n/a t_read_verity=n/a
if dmsetup version >/dev/null 2>&1; then
    l=$(losetup -f --show -r "$file"); loops+=("$l")
    setup() {
        dmsetup create mkimage-bench-verity --readonly --table \
            "0 $((data / 512)) verity 1 $l $l 4096 4096 $((data / 4096)) $((data / 4096)) sha256 $root -"
        dd if=/dev/mapper/mkimage-bench-verity of=/dev/null bs=4096 count=1 status=none
    }
    t_setup=$(timeit setup)
    t_read_verity=$(timeit readall /dev/mapper/mkimage-bench-verity)
    dmsetup remove mkimage-bench-verity
fi
num() { [ "$1" = n/a ] && echo n/a || "${@:2}"; }

mb=$((data / 1000000))
printf '%-58s %8s %8s\n' "host, basefs $mb MB (data part)" "seconds" "x transfer"
printf '%-58s %8s %8s\n' "transfer only (busybox wget -> /dev/null)" "$transfer" "1.00"
printf '%-58s %8s %8s\n' "download to a file (tmpfs)" "$tofile" "$(ratio "$tofile" "$transfer")"
printf '%-58s %8s %8s\n' "  + sha256sum of the file (today's path)" "$(echo "$tofile + $sha" | bc -l | xargs printf '%.3f')" "$(ratio "$(echo "$tofile + $sha" | bc -l)" "$transfer")"
printf '%-58s %8s %8s\n' "  sha256 while downloading (wget | sha256sum, no file)" "$stream" "$(ratio "$stream" "$transfer")"
if [ "$t_setup" = n/a ]; then
    printf '%-58s %8s %8s\n' "  + dm-verity setup (loop, dmsetup, block 0)" n/a n/a
else
    printf '%-58s %8s %8s\n' "  + dm-verity setup (loop, dmsetup, block 0)" "$(echo "$tofile + $t_setup" | bc -l | xargs printf '%.3f')" "$(ratio "$(echo "$tofile + $t_setup" | bc -l)" "$transfer")"
fi
printf '%-58s %8s\n' "verify every block and the tree (veritysetup verify)" "$t_vverify"
printf '%-58s %8s\n' "read every file: plain loop device" "$t_read_plain"
printf '%-58s %8s %8s\n' "read every file: through dm-verity" "$t_read_verity" "$(num "$t_read_verity" ratio "$t_read_verity" "$t_read_plain")"
[ "$t_setup" != n/a ] || echo "(this host's kernel has no device-mapper: the dm-verity rows are measured in the VM, bench/netboot.sh)"
printf '%-58s %8s\n' "build: mkimage hash tree" "$t_ours"
printf '%-58s %8s %8s\n' "build: veritysetup format" "$t_peer" "$(ratio "$t_ours" "$t_peer") ours/peer"
echo "same root hash and tree bytes as veritysetup: $same"
