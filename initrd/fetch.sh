# Downloads for the mkimage init (sourced by /init; installed as
# /lib/mkimage/fetch.sh): every image is fetched by a job of its own, all
# at once, each verified as it completes — the basefs by dm-verity (only
# block 0 is read now; the kernel checks every other block when it is
# read) or by sha256, each overlay by sha256 and then unpacked while the
# basefs is still arriving. A job never runs the fail action itself: it
# records its step, URL and reason, and /init reports the first failure.
# Images land in IMAGES, a tmpfs of transparent huge pages (see /init).

# mirrors URL: URL, then the same path on every other server of
# mkimage.servers= (when URL lies on one of them), one per line. A node
# overlay (/node/) has no mirror: only the server that issued this boot's
# token serves it, and the token goes to no other.
SERVERS=
mirrors() {
	echo "$1"
	case "$1" in */node/*) return 0 ;; esac
	rel=
	for s in $(echo "$SERVERS" | tr ',' ' '); do
		case "$1" in "$s"/*) rel=${1#"$s"} ;; esac
	done
	[ -n "$rel" ] || return 0
	for s in $(echo "$SERVERS" | tr ',' ' '); do
		[ "$s$rel" = "$1" ] || echo "$s$rel"
	done
}

# fetch URL DEST [CHECK ARGS...]: download with retries and exponential
# backoff, then run CHECK DEST ARGS (sets WHY and returns 1 when the file
# is not the one wanted); a failed check counts as a failed try. Each try
# goes through URL's mirrors in order, saying so when it falls back.
fetch() {
	first="$1"
	dest="$2"
	shift 2
	try=1
	delay="$BACKOFF"
	while :; do
		for URL in $(mirrors "$first"); do
			[ "$URL" = "$first" ] || say "falling back to the next server: $URL"
			say "download $URL (try $try of $RETRIES)"
			rm -f "$dest"
			WHY=
			if get "$URL" "$dest" 2>"$dest.err"; then
				[ $# -eq 0 ] || run_check "$dest" "$@" || :
			elif no_room "$dest"; then
				rm -f "$dest" "$dest.err"
				return 1
			else
				WHY="download failed: $(cat "$dest.err")"
			fi
			rm -f "$dest.err"
			[ -z "$WHY" ] && return 0
			say "$WHY"
		done
		if [ "$try" -ge "$RETRIES" ]; then
			WHY="$WHY (after $try tries)"
			return 1
		fi
		say "retrying in ${delay}s"
		sleep "$delay"
		try=$((try + 1))
		delay=$((delay * 2))
	done
}

run_check() {
	file=$1
	check=$2
	shift 2
	"$check" "$file" "$@" && return 0
	[ -n "$WHY" ] || WHY="$check failed"
	return 1
}

# sha256_is FILE HEX: the digest matches, else WHY says what came instead.
sha256_is() {
	got=$(sha256sum "$1" | cut -d' ' -f1)
	[ "$got" = "$2" ] && return 0
	WHY="sha256 mismatch: expected $2, got $got"
	return 1
}

# --- the basefs ------------------------------------------------------------
# verity_parse ROOT_HASH:HASH_OFFSET (basefs.verity=): sets VERITY_ROOT and
# VERITY_OFFSET, or fails naming the parameter.
VERITY_ROOT=
VERITY_OFFSET=
verity_parse() {
	[ -n "$1" ] || return 0
	VERITY_ROOT=${1%%:*}
	VERITY_OFFSET=${1#*:}
	ok=
	case "$VERITY_OFFSET" in
	"" | *[!0-9]* | 0*) ;;
	*) [ ${#VERITY_OFFSET} -le 15 ] && [ $((VERITY_OFFSET % 4096)) -eq 0 ] && ok=1 ;;
	esac
	case "$VERITY_ROOT" in *[!0-9a-f]*) ok= ;; esac
	[ ${#VERITY_ROOT} -eq 64 ] || ok=
	[ -n "$ok" ] && return 0
	fail "basefs.verity=$1: expected ROOT_HASH:HASH_OFFSET (64 lower-case hex digits, then a byte offset that is a positive multiple of 4096); fix the boot script or drop the parameter"
}

# check_basefs FILE: with basefs.verity=, a dm-verity device over the file
# (block 0 read through it, so a wrong root hash fails here); else the
# sha256 when basefs.sha256= names one.
check_basefs() {
	if [ -n "$VERITY_ROOT" ]; then
		verity_open "$1" && return 0
		verity_close
		return 1
	fi
	[ -z "$BASEFS_SHA" ] && return 0
	sha256_is "$1" "$BASEFS_SHA" && say "sha256 ok: $URL"
}

BASEFS_DEV=
verity_open() {
	size=$(stat -c %s "$1")
	if [ "$size" -le "$VERITY_OFFSET" ]; then
		WHY="the basefs is $size bytes, but basefs.verity puts its hash tree at byte $VERITY_OFFSET: not the image the boot script names"
		return 1
	fi
	LOOP=$(losetup -f) && losetup -r "$LOOP" "$1" 2>/tmp/losetup.err || {
		WHY="cannot attach the basefs to a loop device: $(cat /tmp/losetup.err)"
		return 1
	}
	blocks=$((VERITY_OFFSET / 4096))
	table="0 $((blocks * 8)) verity 1 $LOOP $LOOP 4096 4096 $blocks $blocks sha256 $VERITY_ROOT -"
	dmsetup create mkimage-basefs --readonly --table "$table" 2>/tmp/dmsetup.err || {
		WHY="cannot create the dm-verity device (dm_verity module missing from the initrd's modules?): $(cat /tmp/dmsetup.err)"
		return 1
	}
	BASEFS_DEV=$(verity_device)
	if ! dd if="$BASEFS_DEV" of=/dev/null bs=4096 count=1 2>/dev/null; then
		WHY="dm-verity: the basefs does not match the root hash $VERITY_ROOT of basefs.verity (block 0 fails verification: a wrong or corrupt image)"
		return 1
	fi
	say "dm-verity ok: $URL (root hash $VERITY_ROOT; every block is checked when read)"
}

# verity_device: the block device of the verity mapping (libdevmapper makes
# /dev/mapper/NAME itself when no udev runs; devtmpfs always has dm-N).
verity_device() {
	if [ -b /dev/mapper/mkimage-basefs ]; then
		echo /dev/mapper/mkimage-basefs
		return 0
	fi
	for d in /sys/block/dm-*; do
		[ "$(cat "$d/dm/name" 2>/dev/null)" = mkimage-basefs ] && echo "/dev/${d##*/}" && return 0
	done
	return 1
}

verity_close() {
	[ -n "$BASEFS_DEV" ] && dmsetup remove mkimage-basefs 2>/dev/null
	[ -n "$LOOP" ] && losetup -d "$LOOP" 2>/dev/null
	BASEFS_DEV=
	LOOP=
}

# --- overlays --------------------------------------------------------------
# inflate GZ CPIO: gunzip to a file (libdeflate-gunzip when the initrd has
# it: 3-5x busybox's speed in a TCG VM; a file, not a pipe into cpio, which
# costs a context switch per 64 KiB there).
inflate() {
	if command -v libdeflate-gunzip >/dev/null; then
		libdeflate-gunzip -c "$1" > "$2"
	else
		gunzip -c "$1" > "$2"
	fi
}

# check_overlay FILE N SHA: verify, then unpack into its own layer dir.
check_overlay() {
	if [ -n "$3" ]; then
		sha256_is "$1" "$3" || return 1
		say "sha256 ok: $URL"
	fi
	layer=/run/mkimage/rw/layer$2
	rm -rf "$layer"
	mkdir -p "$layer"
	inflate "$1" "$1.cpio" 2>"$1.cpio.err" || {
		no_room "$1.cpio" || WHY="cannot decompress overlay: $(cat "$1.cpio.err")"
		rm -f "$1.cpio"
		return 1
	}
	rm -f "$1"
	(cd "$layer" && cpio -idm < "$1.cpio" 2>"$1.cpio.err") || {
		WHY="cannot extract overlay: $(cat "$1.cpio.err")"
		rm -f "$1.cpio"
		return 1
	}
	rm -f "$1.cpio" "$1.cpio.err"
	say "overlay $2 applied: $URL"
}

# --- jobs ------------------------------------------------------------------
JOBS=
# job NAME STEP FUNCTION ARGS...: run FUNCTION in the background; when it
# fails, its step, URL and reason go to /run/mkimage/NAME.failed.
job() {
	name=$1
	label=$2
	shift 2
	(
		step "$label"
		"$@" || printf '%s\n%s\n%s\n' "$STEP" "$URL" "$WHY" > "/run/mkimage/$name.failed"
	) &
	JOBS="$JOBS $!:$name"
}

# wait_jobs: wait for every job, then fail with the first one (in start
# order) that failed.
wait_jobs() {
	for j in $JOBS; do wait "${j%%:*}"; done
	for j in $JOBS; do
		f=/run/mkimage/${j#*:}.failed
		if [ -s "$f" ]; then
			STEP=$(sed -n 1p "$f")
			URL=$(sed -n 2p "$f")
			fail "$(sed -n 3p "$f")"
		fi
	done
	JOBS=
}

basefs_job() { fetch "$BASEFS" "$IMAGES/basefs.squashfs" check_basefs; }
overlay_job() { fetch "$2" "$IMAGES/overlay$1.cpio.gz" check_overlay "$1" "$3"; }

# mount_images: the tmpfs the images are downloaded into. With huge=always
# the kernel backs it with 2 MiB pages: in a TCG VM, downloading the basefs
# into it costs the same as downloading it to /dev/null, into a plain tmpfs
# 1.3-1.7x that. A kernel without transparent huge pages gets a plain one.
# Its size is the RAM left for images (IMAGES_MIB): what the kernel says is
# available, less RAM_RESERVE_MIB for the booted system itself. So images
# that do not fit fill the tmpfs (a clean "needs … has …" failure, see
# no_room) instead of the kernel's OOM killer taking a download.
IMAGES=/run/mkimage/images
RAM_RESERVE_MIB=48
IMAGES_MIB=
mount_images() {
	mkdir -p "$IMAGES"
	avail=$(sed -n 's/^MemAvailable: *\([0-9]*\) kB/\1/p' /proc/meminfo)
	IMAGES_MIB=$((avail / 1024 - RAM_RESERVE_MIB))
	[ "$IMAGES_MIB" -gt 0 ] || IMAGES_MIB=1
	say "RAM: $((avail / 1024)) MiB available; up to $IMAGES_MIB MiB for images${NEED:+; the images need $NEED MiB}"
	# mkimage.need= (the server's sum of the images' sizes): a machine too
	# small for them fails here, in one line, before any download.
	case "$NEED" in
	'' | *[!0-9]*) ;;
	*) [ "$NEED" -le "$IMAGES_MIB" ] || fail "not enough RAM: the images need $NEED MiB, this machine has $IMAGES_MIB MiB for them ($((avail / 1024)) MiB available less $RAM_RESERVE_MIB MiB for the booted system); give it at least $((NEED - IMAGES_MIB)) MiB more RAM, or boot a profile with fewer or smaller overlays" ;;
	esac
	mount -t tmpfs -o "mode=0700,huge=always,size=${IMAGES_MIB}m" tmpfs "$IMAGES" 2>/dev/null && return 0
	say "no transparent huge pages: downloading into a plain tmpfs"
	mount -t tmpfs -o "mode=0700,size=${IMAGES_MIB}m" tmpfs "$IMAGES" || fail "cannot mount a tmpfs on $IMAGES"
}

# no_room FILE: WHY says the images do not fit in this machine's RAM, when
# the image store is full (a download or unpack that failed for room).
no_room() {
	used=$(df -m "$IMAGES" | awk 'NR == 2 { print $3 }')
	[ "$used" -ge $((IMAGES_MIB - 1)) ] 2>/dev/null || return 1
	WHY="not enough RAM: ${1##*/} needs more than the $IMAGES_MIB MiB this machine has for images (RAM available less $RAM_RESERVE_MIB MiB for the booted system), and $used MiB are taken; give the machine more RAM, or boot a profile with fewer or smaller overlays"
}
