#!/bin/sh
# Run inside a fresh network namespace (unshare -n): bring up loopback,
# serve DIR with busybox httpd on 127.0.0.1:PORT, run the given QEMU
# command, and stop both when QEMU exits or this script is terminated.
# usage: netns-qemu.sh DIR PORT QEMU-ARGV...
dir=$1
port=$2
shift 2
ip link set lo up || exit 1
busybox httpd -f -p "127.0.0.1:$port" -h "$dir" &
srv=$!
qemu=
trap 'kill $srv $qemu 2>/dev/null; exit 143' TERM INT HUP
"$@" &
qemu=$!
wait $qemu
rc=$?
kill $srv 2>/dev/null
exit $rc
