"""``python -m bench.hostile``: gatewayd's peak RSS under each hostile-device attack, one at a time.

For each attack the real daemon reads one simulated good device (1 reading/s) and one hostile
device for ``--seconds``; the figure is the daemon's VmHWM (peak resident set) at the end, the
median of ``--runs`` runs. ``baseline`` is the good device alone. docs/performance.md keeps the
table; systemd/gatewayd.service's MemoryHigh=/MemoryMax= are sized from it. Loopback and ptys
only; everything lives in a temporary directory that is removed at the end. The last line of
stdout is one JSON object: attack -> {"peak_rss_mb": median, "runs": [...]}.

Examples::

    python -m bench.hostile                       # every attack, 3 runs of 15 s (~12 minutes)
    python -m bench.hostile --runs 1 --seconds 5 --only astm-10mb-frame ble-flood
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import median, say
from bench.rig import BenchRig, Daemon, SimDevice
from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID
from drivers.ble.thermometer import TEMPERATURE_MEASUREMENT_UUID
from rig.ble.peripheral import Peripheral
from rig.ble.profiles import HeartRateSensor, PulseOximeter, Thermometer
from rig.ble.rig import SimulatedBluez
from rig.serial.analyser import AnalyserFaults, AstmAnalyserSim, crp_message
from rig.serial.hostile import Episode, HostileLine
from rig.serial.pty_device import PtyDevice

ESC = "\x1b]0;owned\x07\x1b[2J"
BLE = "A4:C1:38:15:10:01"


@dataclass(frozen=True, slots=True)
class Attack:
    name: str
    serial: tuple[str, str] | None = None  # (kind, extra TOML lines) of the hostile port
    ble: str | None = None  # the hostile BLE device's profile


ATTACKS = (
    Attack("baseline"),
    Attack("astm-random-bytes", ("astm", "")),
    Attack("astm-endless-line", ("astm", "")),
    Attack("astm-10mb-frame", ("astm", "")),
    Attack("astm-control-text", ("astm", "")),
    Attack("astm-hostile-records", ("astm", "")),
    Attack("astm-bad-checksums", ("astm", "")),
    Attack("nonin-random-bytes", ("nonin", 'serial = "501500099"\n')),
    Attack("cms50-10mb-frame", ("cms50", 'serial = "CMS50-99"\n')),
    Attack("modem-endless-line", ("modem", "poll_interval_s = 1\n")),
    Attack("ble-baseline", ble="thermometer"),  # a quiet BLE device: the BLE stack's own share
    Attack("ble-malformed-flood", ble="heart-rate"),
    Attack("ble-huge-values", ble="thermometer"),
    Attack("ble-connect-storm", ble="pulse-oximeter-continuous"),
    Attack("ble-never-answers", ble="thermometer"),
)


def _serial_sim(attack: str, link: Path, seconds: float) -> PtyDevice:
    line = {
        "astm-random-bytes": "random",
        "nonin-random-bytes": "random",
        "astm-endless-line": "endless-line",
        "modem-endless-line": "endless-line",
        "astm-10mb-frame": "big-frame",
        "cms50-10mb-frame": "big-frame",
        "astm-control-text": "control-text",
    }.get(attack)
    if line is not None:
        rate = 2_000_000 if line == "big-frame" else None
        return HostileLine(link, [Episode(line, seconds, rate)])
    return AstmAnalyserSim(link, serial_number=ESC + "S" * 10_000, retry_after_s=0.2)


def _feed(attack: str, sim: PtyDevice) -> Callable[[], None]:
    """What the attack does once a second (nothing for a line that plays by itself)."""
    if not isinstance(sim, AstmAnalyserSim):
        return lambda: None
    if attack == "astm-bad-checksums":
        sim.inject(AnalyserFaults(corrupt_frames=10**9))

        def resend() -> None:
            sim.send_crp("9.9")  # never accepted: every frame's checksum is wrong

        return resend

    def hostile_records() -> None:
        sim.queue_message(["L|1|N"])
        sim.queue_message(["R|1|^^^CRP|5.0|mg/L", "H|\\^&", "L|1|N"])
        sim.queue_message(crp_message("5.0", unit=ESC + "u" * 10_000, serial_number=ESC))

    return hostile_records


def _ble_device(attack: str) -> Peripheral:
    if attack == "ble-malformed-flood":
        flood = HeartRateSensor(BLE, period_s=0.001)
        flood.add_stream(HEART_RATE_MEASUREMENT_UUID, 0.001, lambda: b"\x1f")
        return flood
    if attack == "ble-connect-storm":
        return PulseOximeter(BLE, continuous_period_s=0.2)
    device = Thermometer(BLE)
    if attack == "ble-never-answers":
        device.go_out_of_range()
    return device


def _start_ble_behaviour(attack: str, air: SimulatedBluez, device: Peripheral) -> None:
    if attack == "ble-huge-values":
        payload = b"\x00" + b"\xff" * 65_536
        air.call(lambda: device.every(
            0.05, lambda: device.send_raw(TEMPERATURE_MEASUREMENT_UUID, payload)))
    elif attack == "ble-connect-storm":
        air.call(lambda: device.every(0.3, lambda: device.link.drop() if device.link else None))


@contextlib.contextmanager
def _hostile(
    attack: Attack, work: Path, seconds: float
) -> Iterator[tuple[str, Callable[[], None]]]:
    """The hostile device running; yields (TOML for it, a once-a-second feed)."""
    if attack.serial is not None:
        kind, extra = attack.serial
        link = work / "dev" / attack.name
        sim = _serial_sim(attack.name, link, seconds)
        sim.start()
        try:
            toml = (f'\n[[serial_devices]]\nkind = "{kind}"\nname = "hostile"\n'
                    f'path = "{link}"\n{extra}')
            yield toml, _feed(attack.name, sim)
        finally:
            sim.stop()
    elif attack.ble is not None:
        device = _ble_device(attack.name)
        with SimulatedBluez([device]) as air:  # the daemon inherits the rig's bus address
            _start_ble_behaviour(attack.name, air, device)
            yield f'\n[[ble_devices]]\naddress = "{BLE}"\nprofile = "{attack.ble}"\n', lambda: None
    else:
        yield "", lambda: None


def peak_rss_kb(rig: BenchRig, attack: Attack, work: Path, seconds: float, run: int) -> int:
    broker = rig.start_broker(f"{attack.name}-{run}")
    state = work / f"state-{attack.name}-{run}"
    config = rig.write_config(broker, state, [SimDevice("thermometer", "C0:FF:EE:00:99:01", 1.0)])
    with _hostile(attack, work, seconds) as (toml, feed):
        config.write_text(config.read_text() + toml)
        daemon = Daemon(config, work, f"{attack.name}-{run}")
        daemon.start()
        try:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                feed()
                time.sleep(1.0)
                if daemon.proc is not None and daemon.proc.poll() is not None:
                    raise SystemExit(f"gatewayd exited under {attack.name}: see {daemon.log_path}")
            peak = daemon.sample().hwm_kb
        finally:
            daemon.stop()
    broker.stop()
    return peak


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--only", nargs="*", help="attack names (default: all)")
    args = parser.parse_args(argv)
    chosen = [a for a in ATTACKS if not args.only or a.name in args.only]
    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as tmp:
        work = Path(tmp)
        rig = BenchRig(work)
        try:
            for attack in chosen:
                runs = [
                    peak_rss_kb(rig, attack, work, args.seconds, run) / 1024
                    for run in range(args.runs)
                ]
                mb = round(median(runs), 1)
                out[attack.name] = {"peak_rss_mb": mb, "runs": [round(r, 1) for r in runs]}
                say(f"{attack.name:<24} peak RSS {mb:6.1f} MB  (runs: "
                    + ", ".join(f"{r:.1f}" for r in runs) + ")")
        finally:
            rig.close()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
