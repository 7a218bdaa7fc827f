#!/bin/bash
# Squashfs: mkimage's writer (backhand) vs mksquashfs on a ~200 MB Debian
# minbase tree, same compressor and level; prints times, sizes and ratios.
#
#   bench/squashfs.sh              # bootstraps the tree once into /var/tmp/mkimage-bench
#   TREE=/some/rootfs bench/squashfs.sh
#   COMP=gzip LEVEL=9 bench/squashfs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

COMP=${COMP:-zstd}
LEVEL=${LEVEL:-3}
ensure_tree
command -v mksquashfs >/dev/null || { echo "install it: apt-get install -y squashfs-tools" >&2; exit 1; }
cargo build --release --quiet --example pack
PACK=target/release/examples/pack
OUT=$BENCH_DIR/out
mkdir -p "$OUT"
export SOURCE_DATE_EPOCH=1700000000

# Warm the page cache so neither side pays for the first read.
tar -C "$TREE" -cf - . >/dev/null

level_args=()
case $COMP in zstd|gzip) level_args=(-Xcompression-level "$LEVEL") ;; esac
ours_level=()
case $COMP in lz4) ;; *) ours_level=("$LEVEL") ;; esac

t_ours=$(timeit "$PACK" squashfs "$TREE" "$OUT/ours.sqfs" "$COMP" "${ours_level[@]}")
t_peer=$(timeit mksquashfs "$TREE" "$OUT/peer.sqfs" -noappend -no-progress -comp "$COMP" "${level_args[@]}")
s_ours=$(stat -c %s "$OUT/ours.sqfs")
s_peer=$(stat -c %s "$OUT/peer.sqfs")

echo "tree:        $TREE ($(du -sh "$TREE" | cut -f1), $(find "$TREE" | wc -l) entries), $COMP level $LEVEL, $(nproc) cores"
echo "mkimage:     ${t_ours}s  $s_ours bytes"
echo "mksquashfs:  ${t_peer}s  $s_peer bytes"
echo "time ratio:  $(ratio "$t_ours" "$t_peer")  (mkimage / mksquashfs; target <= 1.1)"
echo "size ratio:  $(ratio "$s_ours" "$s_peer")  (target <= 1.01)"
