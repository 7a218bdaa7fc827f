#!/bin/sh
# Run inside a fresh network (and mount) namespace (unshare -n -m): bring up
# loopback, serve DIR with busybox httpd on 127.0.0.1:PORT, optionally
# answer DNS for one name with dnsmasq on 127.0.0.1:53 (DNS is NAME=ADDR,
# or - for none; this namespace's /etc/resolv.conf then points there, so
# QEMU's user-mode DNS at 10.0.2.3 forwards to it), run the given QEMU
# command, and stop everything when QEMU exits or this script is terminated.
# usage: netns-qemu.sh DIR PORT [DNS] QEMU-ARGV...
dir=$1
port=$2
shift 2
dns=-
case "$1" in -) shift ;; *=*) dns=$1; shift ;; esac
ip link set lo up || exit 1
busybox httpd -f -p "127.0.0.1:$port" -h "$dir" &
srv=$!
dnsd=
qemu=
trap 'kill $srv $dnsd $qemu 2>/dev/null; exit 143' TERM INT HUP
if [ "$dns" != - ]; then
	conf=$(mktemp)
	echo "nameserver 127.0.0.1" > "$conf"
	mount --bind "$conf" /etc/resolv.conf || { kill $srv; exit 1; }
	rm -f "$conf"
	dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts --pid-file --user=root \
		--listen-address=127.0.0.1 --bind-interfaces --port=53 --log-queries --log-facility=- \
		--address="/${dns%%=*}/${dns#*=}" &
	dnsd=$!
fi
"$@" &
qemu=$!
wait $qemu
rc=$?
kill $srv $dnsd 2>/dev/null
exit $rc
