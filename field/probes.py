"""Run a command inside the shipped unit's sandbox, to learn what that sandbox allows.

``install_probe_unit`` turns the installed ``gatewayd.service`` into a template
``gwprobe@.service``: every sandbox, user and directory setting stays exactly as shipped; only
what makes it a long-running notify daemon is swapped (``Type=oneshot``, ``ExecStart`` runs
the probe script named by the instance, output to a file, no conditions, no watchdog, no
restart). So a probe sees the same
address families, seccomp filter, W^X policy, /proc view and capabilities the daemon gets.
"""

from __future__ import annotations

from dataclasses import dataclass

from field.nspawn import Container

UNIT = "/lib/systemd/system/gatewayd.service"
PROBE_UNIT = "/etc/systemd/system/gwprobe@.service"
_DROPPED = (
    "Type=", "NotifyAccess=", "ExecCondition=", "ExecStart=", "WatchdogSec=", "WatchdogSignal=",
    "ConditionPathExists=", "Restart=", "RestartSec=", "RestartPreventExitStatus=",
)  # fmt: skip

# Python snippets run with the package's own interpreter (its cffi, its libffi), as the daemon.
PY = "/opt/homecare-gateway/current/bin/python"
PYTHON_PROBES = {
    "cffi-callback": (
        "import cffi; ffi = cffi.FFI(); cb = ffi.callback('int(int)', lambda x: x + 1); "
        "print('cffi callback', cb(41))"
    ),
    "ctypes-callback": (
        "import ctypes; f = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1); "
        "print('ctypes callback', f(41))"
    ),
    "wx-mmap": (
        "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | "
        "mmap.PROT_EXEC); print('W+X mapping allowed')"
    ),
    "imports": (
        "import cryptography.hazmat.primitives.hpke, orjson, dbus_fast, serial, bleak, paho.mqtt"
        ".client, sqlite_utils, gateway.daemon, gateway.cli; print('imports ok')"
    ),
    "proc": (
        "import os\n"
        "for p in ('/proc/self/status', '/proc/1/status', '/proc/meminfo', '/proc/uptime',"
        " '/proc/loadavg', '/proc/net/route', '/proc/sys/kernel/random/boot_id', '/proc/stat'):\n"
        "    try:\n        open(p).read(); print('ok  ', p)\n"
        "    except OSError as e:\n        print('FAIL', p, e.strerror)\n"
        "print('pids', len([x for x in os.listdir('/proc') if x.isdigit()]))"
    ),
    "syscalls": (
        "import os, resource, socket\n"
        "tests = [('setrlimit', lambda: resource.setrlimit(resource.RLIMIT_NOFILE,"
        " resource.getrlimit(resource.RLIMIT_NOFILE))), ('nice', lambda: os.nice(1)),"
        " ('sched_setaffinity', lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),"
        " ('AF_NETLINK', lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),"
        " ('AF_PACKET', lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()),"
        " ('AF_BLUETOOTH', lambda: socket.socket(socket.AF_BLUETOOTH, socket.SOCK_SEQPACKET,"
        " 0).close()),"
        " ('AF_UNIX', lambda: socket.socket(socket.AF_UNIX).close()),"
        " ('AF_INET6', lambda: socket.socket(socket.AF_INET6).close()),"
        " ('chown', lambda: os.chown('/var/lib/homecare-gateway', -1, 0)),"
        " ('mknod', lambda: os.mknod('/var/lib/homecare-gateway/x', 0o600 | 0o20000,"
        " os.makedev(1, 3)))]\n"
        "for name, fn in tests:\n"
        "    try:\n        fn(); print('ok  ', name)\n"
        "    except OSError as e:\n        print('FAIL', name, e.strerror)\n"
    ),
}


@dataclass
class ProbeResult:
    status: int
    output: str


PROBE_DIR = "/usr/local/lib/field-probes"
OUT_DIR = "/run/field-probes"


def install_probe_unit(c: Container) -> str:
    """Write gwprobe@.service from the installed unit; returns the generated unit text."""
    shipped = c.run(["cat", UNIT]).stdout
    lines: list[str] = []
    for line in shipped.splitlines():
        if line.startswith(_DROPPED):
            continue
        lines.append(line)
        if line.strip() == "[Service]":
            # Output goes to a file systemd opens before it applies the sandbox: no journal race.
            lines += [
                "Type=oneshot",
                f"ExecStart={PROBE_DIR}/%i",
                f"StandardOutput=truncate:{OUT_DIR}/%i.out",
                "StandardError=inherit",
            ]
    text = "\n".join(lines) + "\n"
    c.write_file(PROBE_UNIT, text)
    c.run(["mkdir", "-p", PROBE_DIR, OUT_DIR])
    c.systemctl("daemon-reload")
    return text


def run_probe(c: Container, name: str, script: str) -> ProbeResult:
    """Run ``script`` (an executable file's text) as gatewayd would be run; exit and output."""
    unit = f"gwprobe@{name}.service"
    c.write_file(f"{PROBE_DIR}/{name}", script, 0o755)
    c.systemctl("reset-failed", unit, check=False)
    c.systemctl("start", unit, check=False, timeout_s=120)
    status = int(c.show(unit, "ExecMainStatus") or "-1")
    out = c.run(["cat", f"{OUT_DIR}/{name}.out"], check=False).stdout
    return ProbeResult(status, out)


def shell_probe(c: Container, name: str, command: str) -> ProbeResult:
    return run_probe(c, name, f"#!/bin/sh\n{command}\n")


def python_probe(c: Container, name: str) -> ProbeResult:
    return run_probe(c, name, f"#!{PY}\n{PYTHON_PROBES[name]}\n")
