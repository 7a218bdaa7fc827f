#!/bin/sh
# mkimage boot-test's in-guest checks (the assertions of the boot config's
# `boot_test.expect`, one block each, follow this prelude). Each prints
# `mkimage-check: N out LINE` lines and `mkimage-check: N exit RC`, and the
# script ends with `mkimage-check: done`; boot-test reads them off the
# serial console.

# report N RC TEXT...: one assertion's output and exit status.
report() {
	n=$1
	rc=$2
	shift 2
	printf '%s\n' "$*" | while IFS= read -r l; do echo "mkimage-check: $n out $l"; done
	echo "mkimage-check: $n exit $rc"
}

# ready N LIMIT: the machine counts as ready when mkimage-booted.service has
# reported `booted` (or, booted without a boot server, at multi-user.target).
# Fails when that came more than LIMIT seconds after basic.target, with the
# failed units and systemd-analyze's critical chain: which unit held it (a
# unit that failed after a timeout is not in the chain; it is in the list).
ready() {
	systemctl is-system-running --wait >/dev/null 2>&1
	at() { systemctl show -p ActiveEnterTimestampMonotonic --value "$1"; }
	unit=mkimage-booted.service
	[ "$(at $unit)" -gt 0 ] 2>/dev/null || unit=multi-user.target
	gap=$((($(at $unit) - $(at basic.target)) / 1000000))
	if [ "$gap" -le "$2" ]; then
		report "$1" 0 "$unit $gap s after basic.target"
	else
		report "$1" 1 "$unit $gap s after basic.target; failed units: $(systemctl --failed --no-legend --plain | cut -d' ' -f1 | tr '\n' ' ')
what held it: $(systemd-analyze critical-chain --no-pager "$unit" 2>&1)"
	fi
}

