#!/usr/bin/env python3
"""The test BMC's hands: ipmi_sim's `chassis_control` and `lan_config_program`.

    bmc-control.py STATEDIR chassis get|set PARM [VAL]...
    bmc-control.py STATEDIR lan get PARM...

ipmi_sim keeps the boot flags (chassis bootparam 5) only through a
chassis_control program, and once one is configured it also owns power. So
power goes to the VM's QEMU through its QMP socket (STATEDIR/qmp.sock):
"off" is the machine stopped and reset (it boots afresh when it runs
again), "on" is it running, a reset is `system_reset`. Without a socket (a
BMC with no VM) power is a file. The boot device is a file. `lan get`
answers the BMC's LAN address and MAC as ipmi_sim asks for them.
"""
import json
import os
import socket
import sys

state, kind, op, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
qmp_path = os.path.join(state, "qmp.sock")


def qmp(command):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(qmp_path)
    f = s.makefile("rw")
    json.loads(f.readline())
    for cmd in ("qmp_capabilities", command):
        f.write(json.dumps({"execute": cmd}) + "\n")
        f.flush()
        while True:
            reply = json.loads(f.readline())
            if "return" in reply or "error" in reply:
                break
    s.close()
    return reply.get("return")


def read(name, default):
    try:
        with open(os.path.join(state, name)) as f:
            return f.read().strip()
    except OSError:
        return default


def write(name, value):
    with open(os.path.join(state, name), "w") as f:
        f.write(value + "\n")


def power_get():
    if os.path.exists(qmp_path):
        return "1" if qmp("query-status").get("running") else "0"
    return read("power", "0")


def power_set(value):
    with open(os.path.join(state, "calls"), "a") as f:
        f.write("power %s\n" % value)
    if not os.path.exists(qmp_path):
        write("power", value)
    elif value == "1":
        qmp("cont")
    else:
        qmp("stop")
        qmp("system_reset")


if kind == "lan":
    lan = {
        "ip_addr": read("lan_ip", "127.0.0.1"),
        "ip_addr_src": "static",
        "mac_addr": read("lan_mac", "52:54:00:be:ef:01"),
        "subnet_mask": "255.0.0.0",
        "default_gw_ip_addr": "0.0.0.0",
        "default_gw_mac_addr": "00:00:00:00:00:00",
        "backup_gw_ip_addr": "0.0.0.0",
        "backup_gw_mac_addr": "00:00:00:00:00:00",
    }
    if op == "get":
        for p in args:
            print("%s:%s" % (p, lan.get(p, "0")))
    sys.exit(0)

if op == "get":
    for p in args:
        if p == "power":
            print("power:" + power_get())
        elif p == "boot":
            print("boot:" + read("boot", "default"))
        else:
            print("Invalid parameter: " + p)
            sys.exit(1)
elif op == "set":
    while args:
        p, v, args = args[0], args[1], args[2:]
        if p == "power":
            power_set(v)
        elif p == "reset":
            if os.path.exists(qmp_path):
                qmp("system_reset")
        elif p == "boot":
            write("boot", v)
        elif p == "identify":
            args = args[1:]
else:
    sys.exit(1)
