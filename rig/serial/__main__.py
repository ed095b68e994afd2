"""Run one simulated serial device as a process (``kill -9`` it to pull the plug for real).

    python -m rig.serial astm  --link /tmp/rig/dev/serial/by-id/usb-Sim_CRP-if00-port0 \\
        --crp 5.0 --reply-timeout 15 --retry-after 2
    python -m rig.serial nonin --link /tmp/rig/dev/homecare/spo2 --scenario
    python -m rig.serial cms50 --link /tmp/rig/dev/homecare/spo2
    python -m rig.serial modem --link /tmp/rig/dev/homecare/modem-at

It prints JSON lines on stdout - ``{"event": "ready", "link": ..., "tty": ...}`` first, then what
happens (``delivered``, ``reply`` for the analyser) - and reads commands on stdin, one a line:
``unplug``, ``replug``, ``quit``, and per kind ``crp VALUE [UNIT]`` / ``corrupt N`` (astm),
``set spo2_pct=85 sensor_off=1 streaming=0`` (oximeters), ``urc TEXT`` / ``silent on|off`` /
``set rssi=99 cereg=3 c5greg=3 sim=absent`` (modem).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drivers.serial.astm_link import LinkTimers
from drivers.serial.astm_records import parse_ts
from rig.serial.analyser import AnalyserFaults, AstmAnalyserSim
from rig.serial.modem import ModemSim
from rig.serial.oximeter import DESATURATION_SCENARIO, Cms50Sim, NoninSim, OximeterSim
from rig.serial.pty_device import PtyDevice

KINDS = ("astm", "nonin", "cms50", "modem")


def _emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def _build(args: argparse.Namespace) -> PtyDevice:
    link = Path(args.link)
    if args.kind == "astm":
        timers = LinkTimers(reply_s=args.reply_timeout)
        analyser = AstmAnalyserSim(link, timers=timers, retry_after_s=args.retry_after)
        if args.hang_after_frames is not None:  # before anything is queued: the first transfer
            analyser.inject(AnalyserFaults(hang_after_frames=args.hang_after_frames, hang_s=3600))
        completed = parse_ts(args.completed) if args.completed else None  # analyser local time
        for value in args.crp:
            analyser.send_crp(value, completed=completed)
        return analyser
    if args.kind == "modem":
        return ModemSim(link)
    scenario = DESATURATION_SCENARIO if args.scenario else ()
    kind = NoninSim if args.kind == "nonin" else Cms50Sim
    return kind(link, scenario=scenario)


def _command(device: PtyDevice, line: str) -> bool:
    """Apply one stdin command; False to quit."""
    word, _, rest = line.strip().partition(" ")
    if word == "quit":
        return False
    if word == "unplug":
        device.unplug()
    elif word == "replug":
        device.replug()
    elif word == "crp" and isinstance(device, AstmAnalyserSim):
        value, _, unit = rest.strip().partition(" ")
        device.send_crp(value or "5.0", unit=unit.strip() or "mg/L")
    elif word == "corrupt" and isinstance(device, AstmAnalyserSim):
        device.inject(AnalyserFaults(corrupt_frames=int(rest or "1")))
    elif word == "set" and isinstance(device, OximeterSim):
        changes = dict(item.split("=", 1) for item in rest.split())
        device.set(
            **{
                k: v in ("1", "true", "on") if k in ("sensor_off", "streaming") else int(v)
                for k, v in changes.items()
            }
        )
    elif word == "urc" and isinstance(device, ModemSim):
        device.urc(rest.strip())
    elif word == "silent" and isinstance(device, ModemSim):
        device.set(silent=rest.strip() == "on")
    elif word == "set" and isinstance(device, ModemSim):
        changes = dict(item.split("=", 1) for item in rest.split())
        device.set(**{k: v if k == "sim" else int(v) for k, v in changes.items()})
    else:
        _emit(event="unknown-command", line=line.strip()[:80])
    return True


def _report(device: PtyDevice, stop: threading.Event) -> None:
    """Print the analyser's progress as it happens (what tests of the process wait for)."""
    replies = delivered = 0
    while not stop.wait(0.02):
        if not isinstance(device, AstmAnalyserSim):
            continue
        with device.lock:
            new_replies = device.replies[replies:]
            new_delivered = device.delivered[delivered:]
        replies += len(new_replies)
        delivered += len(new_delivered)
        for reply in new_replies:
            _emit(
                event="reply",
                message=reply.message,
                record_type=reply.record_type,
                final=reply.final,
                reply=reply.reply,
            )
        for key in new_delivered:
            _emit(event="delivered", message=key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rig.serial", description="simulated serial device on a pty"
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--link", required=True, help="symlink to create for the device")
    parser.add_argument("--crp", action="append", default=[], help="astm: queue a CRP result")
    parser.add_argument("--reply-timeout", type=float, default=15.0, help="astm: reply timer")
    parser.add_argument("--retry-after", type=float, default=2.0, help="astm: resend delay")
    parser.add_argument(
        "--completed", help="astm: the results' completion time, YYYYMMDDHHMMSS (default none)"
    )
    parser.add_argument(
        "--hang-after-frames",
        type=int,
        help="astm: go deaf and silent after N frames of the first transfer (then kill -9 it)",
    )
    parser.add_argument("--scenario", action="store_true", help="oximeters: scripted episode")
    args = parser.parse_args(argv)
    device = _build(args).start()
    _emit(event="ready", kind=args.kind, link=args.link, tty=device.slave_path)
    stop = threading.Event()
    reporter = threading.Thread(target=_report, args=(device, stop), daemon=True)
    reporter.start()
    try:
        for line in sys.stdin:
            try:
                if not _command(device, line):
                    break
            except (ValueError, TypeError) as exc:  # a typo on stdin must not kill the device
                _emit(event="bad-command", line=line.strip()[:80], error=str(exc)[:120])
        else:  # stdin closed: keep running until killed (a device does not stop by itself)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        reporter.join(timeout=1.0)
        device.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
