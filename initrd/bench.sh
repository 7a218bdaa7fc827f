# Benchmark modes of the mkimage init (sourced by /init; installed as
# /lib/mkimage/bench.sh), chosen with mkimage.bench=MODE[,MODE] on the
# kernel command line. They only print `bench: …` lines; the boot goes on.
#   transfer  before the real fetch: the same bytes fetched one after the
#             other to /dev/null (the pure transfer the real path is
#             compared with), sha256 of the downloaded basefs alone, and
#             sha256 while downloading (wget | sha256sum, no file).
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
		loop=$(losetup -f) && losetup -r "$loop" /run/mkimage/basefs.squashfs &&
			mount -t squashfs -o ro "$loop" /run/bench-plain &&
			bench_readall /run/bench-plain "loop device, no dm-verity"
		umount /run/bench-plain 2>/dev/null
		losetup -d "$loop" 2>/dev/null
		rmdir /run/bench-plain
	fi
	echo 3 > /proc/sys/vm/drop_caches
}
