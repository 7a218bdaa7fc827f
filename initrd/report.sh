# Stage reports for the mkimage init (sourced by /init; installed as
# /lib/mkimage/report.sh): each step the boot reaches, and a failure with
# its reason, goes to the boot server's node registry as
# GET $API/api/nodes/MAC/event?stage=NAME. Best effort: in the background,
# cut after REPORT_TIMEOUT seconds, output discarded, so a slow, absent or
# older server never delays or fails the boot. The server orders a boot's
# stages itself, so reports may arrive in any order. API comes from
# mkimage.api= (the boot script sets it), the MAC from BOOTIF= or, without
# one, the NIC the init configured (report_from); with neither, nothing is
# sent (offline media boots). The boot token (mkimage.token=, fresh in each
# boot script) goes along as `Authorization: Bearer`: the server refuses
# reports without the token its script carried.
#
# `timeout wget`, not `wget -T`: bookworm's busybox 1.35 wget dies of
# SIGSEGV on -T before it sends anything.

API=
TOKEN=
NODE_OVERLAY=
RUN_DIR=/run/mkimage
REPORT_MAC=
REPORT_TIMEOUT=5

# report_from NIC: the MAC reports are about (BOOTIF's, else NIC's).
report_from() {
	if [ -n "$BOOTIF" ]; then
		REPORT_MAC=${BOOTIF#01-}
	else
		REPORT_MAC=$(cat "/sys/class/net/$1/address" 2>/dev/null)
	fi
}

# report_token: keep this boot's token in /run/mkimage/token (0600; /run
# moves into the booted system, whose mkimage-report reads it). Without
# mkimage.token= on the command line (a medium made by `mkimage iso
# --server`: one image for every machine), ask the server for one as iPXE
# would: the boot script for this MAC carries it.
report_token() {
	[ -n "$API" ] && [ -n "$REPORT_MAC" ] || return 0
	if [ -z "$TOKEN" ]; then
		line=$(script_line)
		TOKEN=$(token_of "$line")
		[ -n "$TOKEN" ] && node_overlay_from "$line"
	fi
	keep_token
}

# script_line: the kernel line of this MAC's boot script on $API (it
# carries a fresh token), or nothing.
script_line() {
	timeout "$REPORT_TIMEOUT" wget -q -O - "$API/boot.ipxe?mac=$REPORT_MAC" 2>/dev/null |
		grep -m 1 ' mkimage\.token='
}

token_of() {
	echo "$1" | sed -n 's/.* mkimage\.token=\([0-9a-f]*\).*/\1/p'
}

# keep_token: $TOKEN in $RUN_DIR/token (0600), where the booted system's
# mkimage-report and this init's later reports (from any job) read it; and
# the MAC the reports are about in $RUN_DIR/mac (a UKI or a medium has no
# BOOTIF=, and a lab network may have no default route to find the NIC by).
keep_token() {
	[ -n "$TOKEN" ] && [ -d "$RUN_DIR" ] && (umask 077 && echo "$TOKEN" >"$RUN_DIR/token")
	[ -n "$REPORT_MAC" ] && [ -d "$RUN_DIR" ] && echo "$REPORT_MAC" >"$RUN_DIR/mac"
	return 0
}

# node_get URL DEST: a node overlay, sent with this boot's token. Refused
# (403: the server restarted since it issued the token, and it keeps
# tokens in memory only), the init asks for its boot script again, as a
# medium boot does, keeps the fresh token and tries once more; the server
# renders the same overlay again, at the same URL unless the node changed
# in the inventory meanwhile. Once per boot (each script fetch starts a new
# boot on the machine's record).
node_get() {
	node_try "$@" && return 0
	if grep -q ' 403' "$2.why" && [ -n "$API" ] && [ -n "$REPORT_MAC" ] &&
		[ -d "$RUN_DIR" ] && [ ! -e "$RUN_DIR/token.renewed" ]; then
		: >"$RUN_DIR/token.renewed"
		TOKEN=$(token_of "$(script_line)")
		if [ -n "$TOKEN" ]; then
			keep_token
			say "the server refused the node overlay (restarted since this boot's script?); asked it for a fresh boot token"
			node_try "$@" && return 0
		fi
	fi
	cat "$2.why" >&2
	rm -f "$2.why"
	return 1
}

node_try() {
	wget -q -O "$2" ${TOKEN:+--header "Authorization: Bearer $TOKEN"} "$1" 2>"$2.why" || return 1
	rm -f "$2.why"
}

# node_overlay_from LINE: with mkimage.node-overlay=script (which `mkimage
# iso --server` puts on the medium's command line), the node overlay the
# boot script's kernel LINE names (a URL on $API under /node/, with its
# sha256 at the same place in overlayfs.sha256=) becomes this boot's last
# overlay, so a machine booted from a medium gets its identity (hostname,
# static network, keys) as an iPXE-booted one does, on the same trust (a
# script over HTTP). Only from the server that issued the token: it alone
# accepts it. A signed UKI's command line says mkimage.node-overlay=signed:
# the overlay is taken only once its signature verifies (node_signed).
node_overlay_from() {
	case "$1" in *" overlayfs="*"/node/"*) ;; *) return 0 ;; esac
	case "$NODE_OVERLAY" in
	script | signed) ;;
	*)
		say "the boot script names a node overlay; not taken: the command line has no mkimage.node-overlay=script or =signed"
		return 0
		;;
	esac
	urls=
	shas=
	for w in $1; do
		case "$w" in
		overlayfs=*) urls=${w#*=} ;;
		overlayfs.sha256=*) shas=${w#*=} ;;
		esac
	done
	# Appended only where each overlay of the command line has its digest.
	[ "${OVERLAYS:+x}$(echo "$OVERLAYS" | tr -cd ,)" = "${OVERLAYS_SHA:+x}$(echo "$OVERLAYS_SHA" | tr -cd ,)" ] || {
		say "warning: the command line's overlays and their sha256s differ in number; no node overlay added"
		return 0
	}
	n=0
	for u in $(echo "$urls" | tr ',' ' '); do
		n=$((n + 1))
		case "$u" in */node/*) ;; *) continue ;; esac
		case "$u" in "$API"/node/*) ;; *)
			say "the boot script's node overlay $u is not on $API (mkimage.api=), the server whose token this is; not taken (give mkimage iso --server the URL the server calls itself)"
			return 0
			;;
		esac
		sha=$(echo "$shas" | tr ',' '\n' | sed -n "${n}p")
		case "$sha" in *[!0-9a-f]* | "") continue ;; esac
		[ ${#sha} -eq 64 ] || continue
		[ "$NODE_OVERLAY" = signed ] && node_signed "$u" "$sha"
		OVERLAYS="${OVERLAYS:+$OVERLAYS,}$u"
		OVERLAYS_SHA="${OVERLAYS_SHA:+$OVERLAYS_SHA,}$sha"
		say "node overlay from the boot script of $REPORT_MAC: $u"
		return 0
	done
	return 0
}

# node_signed URL SHA: with mkimage.node-overlay=signed (a signed UKI) the
# node overlay at URL and its signature (URL.sig) are downloaded with this
# boot's token and checked against the node-signing certificate the UKI's
# initrd carries (NODE_SIGNER, inside the UKI's signature) by the kernel's
# RSA; the overlay must also be the SHA the boot script names, since the
# fetch job takes it again by that sha256: what is unpacked is what was
# signed. A missing or bad signature fails the boot, reason on the console
# and in the node record.
NODE_SIGNER=/etc/mkimage/node-signer.cer
node_signed() {
	step "verify the node overlay's signature"
	d=$RUN_DIR/node-check
	mkdir -p "$d"
	node_get "$1" "$d/node.cpio.gz" 2>"$d/err" ||
		fail "cannot download the node overlay $1: $(cat "$d/err")"
	node_get "$1.sig" "$d/node.sig" 2>"$d/err" ||
		fail "cannot download the node overlay's signature $1.sig: $(cat "$d/err")"
	WHY=
	signature_ok "$d/node.cpio.gz" "$d/node.sig" "$NODE_SIGNER" "$REPORT_MAC" || fail "$WHY"
	sha256_is "$d/node.cpio.gz" "$2" || fail "the signed node overlay is not the one its boot script names: $WHY"
	rm -rf "$d"
	say "node overlay $1: signature verified against the node-signing certificate in the signed UKI"
}

# signature_ok FILE SIG CERT MAC: SIG is the RSA PKCS#1 v1.5 signature, by
# the key of CERT (DER), over the SHA-256 of the line `mkimage node overlay
# MAC SHA256` (this machine's MAC, FILE's sha256: an overlay signed for
# another machine does not pass), as the kernel's asymmetric key type
# verifies it (keyctl); else WHY says why.
signature_ok() {
	[ -s "$3" ] || {
		WHY="node overlay refused: no node-signing certificate $3 in the initrd"
		return 1
	}
	[ -s "$2" ] || {
		WHY="node overlay refused: its signature is empty"
		return 1
	}
	smac=$(echo "$4" | tr 'A-F-' 'a-f:')
	hex=$(printf 'mkimage node overlay %s %s\n' "$smac" "$(sha256sum "$1" | cut -d' ' -f1)" | sha256sum | cut -d' ' -f1)
	printf "$(echo "$hex" | sed 's/../\\x&/g')" >"$1.digest"
	# In a session keyring of its own: the key is possessed (a key only
	# linked to the user's keyrings may not be used), and gone afterwards.
	keyctl session - sh -c 'k=$(keyctl padd asymmetric mkimage-node @s <"$1") &&
		keyctl pkey_verify "$k" 0 "$2" "$3" enc=pkcs1 hash=sha256' sh "$3" "$1.digest" "$2" >/dev/null 2>"$1.err"
	rc=$?
	out=$(grep -v '^Joined session keyring' "$1.err" | tr '\n' ' ')
	rm -f "$1.digest" "$1.err"
	[ $rc -eq 0 ] && return 0
	WHY="node overlay refused: its signature does not verify against the node-signing certificate in the signed UKI (${out% }${out:+; }keyctl exited $rc)"
	return 1
}

# urlencode TEXT: printable ASCII only (control characters become spaces,
# anything else is dropped), at most 300 bytes, every byte as %XX.
urlencode() {
	printf '%s' "$1" | tr '\000-\037' ' ' | tr -cd ' -~' | head -c 300 | od -An -v -tx1 | tr -d ' \n' | sed 's/../%&/g'
}

# report STAGE [STEP REASON]: STAGE is one the server knows (network,
# download, verified, mounted, switch-root, failed); failed carries the
# step that failed and why.
report() {
	[ -n "$API" ] && [ -n "$REPORT_MAC" ] || return 0
	# A fetch job may have renewed the token (node_get).
	[ -s "$RUN_DIR/token" ] && TOKEN=$(cat "$RUN_DIR/token")
	url="$API/api/nodes/$REPORT_MAC/event?stage=$1"
	[ $# -ge 3 ] && url="$url&step=$(urlencode "$2")&reason=$(urlencode "$3")"
	if [ -n "$TOKEN" ]; then
		(timeout "$REPORT_TIMEOUT" wget -q -O /dev/null --header "Authorization: Bearer $TOKEN" "$url" >/dev/null 2>&1 &)
	else
		(timeout "$REPORT_TIMEOUT" wget -q -O /dev/null "$url" >/dev/null 2>&1 &)
	fi
	return 0
}
