#!/bin/bash
# Overlay archive: mkimage's tree -> newc -> gzip vs `find . | cpio -o -H newc | gzip`
# on a ~70 MB part of the benchmark tree (an overlay upper dir stand-in);
# prints times, sizes and ratios. mkimage runs at the peer's level and one
# above it: flate2's zlib-rs backend tunes its levels like zlib-ng, whose
# level N+1 is about GNU gzip's level N in size (at level N it is ~1.5% bigger).
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
t_peer=$(timeit peer)
s_peer=$(stat -c %s "$OUT/peer.cpio.gz")
echo "tree:        $DIR ($(du -sh "$DIR" | cut -f1), $(find "$DIR" | wc -l) entries), $(nproc) cores"
echo "cpio|gzip -$LEVEL:      ${t_peer}s  $s_peer bytes"
for level in "$LEVEL" $((LEVEL < 9 ? LEVEL + 1 : 9)); do
    t_ours=$(timeit "$PACK" cpio "$DIR" "$OUT/ours.cpio.gz" "$level")
    s_ours=$(stat -c %s "$OUT/ours.cpio.gz")
    echo "mkimage level $level:  ${t_ours}s  $s_ours bytes  time ratio $(ratio "$t_ours" "$t_peer") (target <= 0.5)  size ratio $(ratio "$s_ours" "$s_peer") (target <= 1.0)"
done
