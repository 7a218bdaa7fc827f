# Benchmark modes of the mkimage init (sourced by /init; installed as
# /lib/mkimage/bench.sh), chosen with mkimage.bench=MODE[,MODE] on the
# kernel command line. They only print `bench: …` lines; the boot goes on.
#   transfer  before the real fetch: the same bytes fetched one after the
#             other to /dev/null (the pure transfer the real path is
#             compared with), sha256 of the downloaded basefs alone, and
#             sha256 while downloading (wget | sha256sum, no file); the
#             basefs downloaded into a plain tmpfs and into the image
#             store (huge pages); the first overlay applied as before
#             (gunzip | cpio) and as the init does it now.
#   readall   after the union mount: read every file of the basefs (the
#             decompression cost of its compressor), through dm-verity
#             when it is set up and again straight from the loop device.

bench_has() { case ",$BENCH," in *",$1,"*) return 0 ;; esac; return 1; }
since() { awk "BEGIN {print $(uptime_s) - $1}"; }

bench_transfer() {
	t0=$(uptime_s)
	for url in $BASEFS $(echo "$OVERLAYS" | tr ',' ' '); do
		wget -q -O /dev/null "$url" || say "bench: cannot fetch $url"
	done
	say "bench: transfer only took $(since "$t0") s"
	t0=$(uptime_s)
	wget -q -O - "$BASEFS" | sha256sum >/dev/null && say "bench: sha256 while downloading the basefs (wget | sha256sum) took $(since "$t0") s"
	t0=$(uptime_s)
	wget -q -O /run/bench.sqfs "$BASEFS" && say "bench: downloading the basefs to a file took $(since "$t0") s"
	t0=$(uptime_s)
	sha256sum /run/bench.sqfs >/dev/null && say "bench: sha256 of the basefs alone took $(since "$t0") s"
	rm -f /run/bench.sqfs
	t0=$(uptime_s)
	wget -q -O "$IMAGES/bench.sqfs" "$BASEFS" && say "bench: downloading the basefs to the image store (huge pages) took $(since "$t0") s"
	rm -f "$IMAGES/bench.sqfs"
	bench_overlay
}

# bench_overlay: the first overlay (if any), downloaded, then unpacked the
# old way (gunzip | cpio) and the init's way (inflate to a file, then cpio).
bench_overlay() {
	url=${OVERLAYS%%,*}
	[ -n "$url" ] || return 0
	wget -q -O "$IMAGES/bench.gz" "$url" || return 0
	mkdir -p /run/bench-layer
	t0=$(uptime_s)
	(cd /run/bench-layer && gunzip -c "$IMAGES/bench.gz" | cpio -idm 2>/dev/null) && say "bench: overlay 1 unpacked with gunzip | cpio took $(since "$t0") s"
	rm -rf /run/bench-layer
	mkdir -p /run/bench-layer
	t0=$(uptime_s)
	inflate "$IMAGES/bench.gz" "$IMAGES/bench.cpio" && (cd /run/bench-layer && cpio -idm < "$IMAGES/bench.cpio" 2>/dev/null) &&
		say "bench: overlay 1 inflated to a file, then unpacked took $(since "$t0") s"
	rm -rf /run/bench-layer "$IMAGES/bench.gz" "$IMAGES/bench.cpio"
}

# bench_readall MOUNTPOINT LABEL: read every regular file under it.
bench_readall() {
	echo 3 > /proc/sys/vm/drop_caches
	t0=$(uptime_s)
	find "$1" -xdev -type f -exec cat {} + > /dev/null 2>/tmp/readall.err || say "bench: read errors: $(head -c 300 /tmp/readall.err)"
	say "bench: reading every file of the basefs ($2) took $(since "$t0") s"
}

bench_readall_all() {
	bench_readall /run/mkimage/base "$(grep ' /run/mkimage/base ' /proc/mounts | cut -d' ' -f1)"
	if [ -n "$VERITY_ROOT" ]; then
		mkdir -p /run/bench-plain
		loop=$(losetup -f) && losetup -r "$loop" "$IMAGES/basefs.squashfs" &&
			mount -t squashfs -o ro "$loop" /run/bench-plain &&
			bench_readall /run/bench-plain "loop device, no dm-verity"
		umount /run/bench-plain 2>/dev/null
		losetup -d "$loop" 2>/dev/null
		rmdir /run/bench-plain
	fi
	echo 3 > /proc/sys/vm/drop_caches
}
