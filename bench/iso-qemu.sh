# qemu_until for bench/iso.sh (sourced; also inside its network namespace).
# qemu_until LOG PATTERN TIMEOUT QEMU-ARGS…: boot QEMU (TCG, as boot-test
# runs it) with QEMU-ARGS, wait for PATTERN on the serial console (an event,
# not a sleep), stop QEMU by its pid; prints the seconds it took.
qemu_until() {
    local log=$1 pattern=$2 timeout=$3 pid i s e
    shift 3
    rm -f "$log"
    s=$(date +%s.%N)
    qemu-system-x86_64 -accel tcg,thread=single -smp 2 -m 1536 -nodefaults -display none -no-reboot -snapshot -serial "file:$log" "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    for ((i = 0; i < timeout * 2; i++)); do
        grep -a -q -E "$pattern" "$log" 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    e=$(date +%s.%N)
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    grep -a -q -E "$pattern" "$log" || { echo "VM never printed /$pattern/; tail of $log:" >&2; tail -c 3000 "$log" >&2; return 1; }
    echo "$e - $s" | bc -l | xargs printf '%.0f'
}

