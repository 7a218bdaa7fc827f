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
# accepts it. A signed UKI's command line does not say it: its node overlay
# would be the one thing its signature does not cover.
node_overlay_from() {
	case "$1" in *" overlayfs="*"/node/"*) ;; *) return 0 ;; esac
	if [ "$NODE_OVERLAY" != script ]; then
		say "the boot script names a node overlay; not taken: the command line has no mkimage.node-overlay=script (a signed UKI trusts only what its signature covers)"
		return 0
	fi
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
		OVERLAYS="${OVERLAYS:+$OVERLAYS,}$u"
		OVERLAYS_SHA="${OVERLAYS_SHA:+$OVERLAYS_SHA,}$sha"
		say "node overlay from the boot script of $REPORT_MAC: $u"
		return 0
	done
	return 0
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
