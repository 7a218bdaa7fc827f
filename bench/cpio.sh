#!/bin/bash
# Overlay archive: mkimage's tree -> newc -> gzip vs `find . | cpio -o -H newc | gzip`
# on a ~70 MB part of the benchmark tree (an overlay upper dir stand-in),
# same gzip level; prints times, sizes and ratios.
#
#   bench/cpio.sh                  # SUBSET=usr/lib of the cached tree
#   SUBSET=usr/share LEVEL=9 bench/cpio.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/common.sh

LEVEL=${LEVEL:-6}
SUBSET=${SUBSET:-usr/lib}
ensure_tree
command -v cpio >/dev/null || { echo "install it: apt-get install -y cpio" >&2; exit 1; }
cargo build --release --quiet --example pack
PACK=$PWD/target/release/examples/pack
OUT=$BENCH_DIR/out
mkdir -p "$OUT"
export SOURCE_DATE_EPOCH=1700000000
DIR=$TREE/$SUBSET

tar -C "$DIR" -cf - . >/dev/null

peer() { cd "$DIR" && find . | cpio --quiet -o -H newc | gzip "-$LEVEL" > "$OUT/peer.cpio.gz"; }
t_ours=$(timeit "$PACK" cpio "$DIR" "$OUT/ours.cpio.gz" "$LEVEL")
t_peer=$(timeit peer)
s_ours=$(stat -c %s "$OUT/ours.cpio.gz")
s_peer=$(stat -c %s "$OUT/peer.cpio.gz")

echo "tree:        $DIR ($(du -sh "$DIR" | cut -f1), $(find "$DIR" | wc -l) entries), gzip level $LEVEL, $(nproc) cores"
echo "mkimage:     ${t_ours}s  $s_ours bytes"
echo "cpio|gzip:   ${t_peer}s  $s_peer bytes"
echo "time ratio:  $(ratio "$t_ours" "$t_peer")  (mkimage / cpio|gzip; target <= 0.5)"
echo "size ratio:  $(ratio "$s_ours" "$s_peer")  (target <= 1.0)"
