# Offline boot from a medium for the mkimage init (sourced by /init;
# installed as /lib/mkimage/media.sh). With mkimage.media=LABEL on the
# kernel command line (an ISO written by `mkimage iso --offline`), the
# basefs and overlays are files on the ISO 9660 volume named LABEL (a
# CD-ROM, BMC virtual media, or a USB stick the ISO was dd'ed to): the init
# finds the volume by its label, copies each file into RAM through the same
# fetch jobs and checks (sha256, dm-verity) as a download, and releases the
# medium before switch_root. basefs= and overlayfs= then name paths on the
# medium (/mkimage/NAME).

MEDIA=
MEDIA_DIR=/run/mkimage/media
MEDIA_DEV=

# iso_label DEV: the ISO 9660 volume id of DEV (primary volume descriptor,
# sector 16, bytes 40..71), trailing blanks removed; empty if DEV holds none.
iso_label() {
	[ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 0
	dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | sed 's/ *$//'
}

# media_find: the block device holding the volume $MEDIA, waiting up to 30 s
# for slow devices (USB, virtual media) to appear.
media_find() {
	i=0
	while [ $i -lt 30 ]; do
		for b in /sys/class/block/*; do
			dev=/dev/${b##*/}
			[ -b "$dev" ] || continue
			[ "$(iso_label "$dev")" = "$MEDIA" ] && { echo "$dev"; return 0; }
		done
		sleep 1
		i=$((i + 1))
	done
	return 1
}

# media_mount: find the medium and mount it read-only; downloads become copies.
media_mount() {
	step "find the boot medium labelled $MEDIA"
	MEDIA_DEV=$(media_find) || fail "no ISO 9660 volume labelled $MEDIA among the block devices ($(ls /sys/class/block | tr '\n' ' ')); is the medium attached, and are its drivers (sr_mod, ata_piix, ahci, usb_storage, isofs) in the initrd's modules list?"
	mkdir -p "$MEDIA_DIR"
	mount -t iso9660 -o ro "$MEDIA_DEV" "$MEDIA_DIR" 2>/tmp/media.err || fail "cannot mount $MEDIA_DEV (label $MEDIA): $(cat /tmp/media.err)"
	say "boot medium $MEDIA on $MEDIA_DEV"
	# A file missing from a read-only medium does not appear on a retry.
	RETRIES=1
}

# get SOURCE DEST: a download (wget) or, in offline mode, a copy from the
# medium; on failure the reason is on stderr.
get() {
	if [ -z "$MEDIA" ]; then
		case "$1" in
		# A node overlay is served to its machine only: the boot token
		# (never sent to any other URL, such as a remote overlay's server).
		*/node/*) node_get "$1" "$2" ;;
		*) wget -q -O "$2" "$1" ;;
		esac
		return
	fi
	if [ ! -f "$MEDIA_DIR$1" ]; then
		echo "$1 is not on the medium $MEDIA ($MEDIA_DEV); rebuild the ISO with mkimage iso --offline" >&2
		return 1
	fi
	cp "$MEDIA_DIR$1" "$2"
}

# media_release: unmount the medium once everything is in RAM (it may be
# ejected or detached from here on).
media_release() {
	[ -n "$MEDIA_DEV" ] || return 0
	umount "$MEDIA_DIR" 2>/dev/null || say "warning: cannot unmount the boot medium $MEDIA_DEV"
	say "boot medium $MEDIA released"
}
