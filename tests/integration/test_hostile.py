"""No device can take the gateway down: the real daemon reads every driver kind while hostile
devices feed the real input paths, and the good devices' readings all arrive.

Hostile on pseudo-terminals (real pyserial in the daemon): random bytes, an endless line, a 10 MB
frame and ESC-laden text on an ASTM port, a Nonin port, a CMS50 port and the modem's AT port; an
analyser whose header fields hold control characters and 10 kB values, with records out of order;
an analyser whose every frame has a bad checksum. Hostile in the simulated BlueZ (real bleak):
malformed notifications at the link's full rate, values far longer than an attribute may be, a
connect/disconnect storm, and a bound device that never answers. Good: an analyser, a BLE
thermometer with stored readings, and a simulated device of the timer plug-in.

Bounded: ATTACK_S of attack, then the good devices' last readings are awaited; about two and a
half minutes in all on a loaded two-core machine.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from drivers.ble.heart_rate import HEART_RATE_MEASUREMENT_UUID
from drivers.ble.thermometer import TEMPERATURE_MEASUREMENT_UUID
from rig.ble.profiles import HeartRateSensor, PulseOximeter, Thermometer
from rig.ble.rig import SimulatedBluez
from rig.serial.analyser import AnalyserFaults, AstmAnalyserSim, crp_message
from rig.serial.hostile import Episode, HostileLine
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

ATTACK_S = 60.0
UNIT = Path(__file__).resolve().parents[2] / "systemd" / "gatewayd.service"


def _unit_memory_high_kib() -> int:
    """The unit's MemoryHigh= (systemd/gatewayd.service): the cap the daemon must stay under."""
    for line in UNIT.read_text().splitlines():
        if line.startswith("MemoryHigh="):
            value = line.partition("=")[2].strip()
            assert value.endswith("M"), value
            return int(value[:-1]) * 1024
    raise AssertionError("systemd/gatewayd.service has no MemoryHigh=")


RSS_CAP_KIB = _unit_memory_high_kib()
ESC = "\x1b]0;owned\x07\x1b[2J\x1b[31m"
EVIL_SERIAL = ESC + "S" * 10_000  # a 10 kB header field with control characters

GOOD_TH, FLOOD, HUGE, STORM, SILENT = (f"A4:C1:38:15:00:0{i}" for i in range(1, 6))
SIM = "C0:FF:EE:00:15:01"
SIM_COUNT = 100
GOOD_TH_READINGS = 20


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def _serial_block(kind: str, name: str, path: Path, extra: str = "") -> str:
    return f'\n[[serial_devices]]\nkind = "{kind}"\nname = "{name}"\npath = "{path}"\n{extra}'


def _ble_block(address: str, profile: str) -> str:
    return f'\n[[ble_devices]]\naddress = "{address}"\nprofile = "{profile}"\n'


def _noise(link: Path, *kinds: str, big_rate: int = 2_000_000) -> HostileLine:
    episodes = [
        Episode(k, 12.0 if k == "big-frame" else 4.0, big_rate if k == "big-frame" else None)
        for k in kinds
    ]
    return HostileLine(link, episodes, name=f"hostile-{link.name}")


def test_hostile_devices_never_stop_the_gateway_and_good_readings_all_arrive(
    rig: Rig, tmp_path: Path
) -> None:
    dev = tmp_path / "dev"
    good = AstmAnalyserSim(dev / "astm-good", retry_after_s=0.5)
    evil = AstmAnalyserSim(dev / "astm-evil", serial_number=EVIL_SERIAL, retry_after_s=0.5)
    badsum = AstmAnalyserSim(dev / "astm-badsum", retry_after_s=0.2)
    noise = {
        "astm-noise": _noise(dev / "astm-noise", "random", "endless-line", "big-frame",
                             "control-text"),
        "nonin-evil": _noise(dev / "nonin-evil", "random", "control-text", "endless-line"),
        "cms50-evil": _noise(dev / "cms50-evil", "random", "big-frame"),
        "modem-evil": _noise(dev / "modem-evil", "endless-line", "random", "control-text"),
    }
    serial_sims = [good, evil, badsum, *noise.values()]

    thermometer = Thermometer(GOOD_TH)
    # 200 malformed notifications a second, for the whole attack (the simulated radio's own
    # loop must still serve the other devices: a faster flood starves the simulator, not us).
    flood = HeartRateSensor(FLOOD, period_s=0.005)
    flood.add_stream(HEART_RATE_MEASUREMENT_UUID, 0.005, lambda: b"\x1f")  # flags, no value
    huge = Thermometer(HUGE)
    storm = PulseOximeter(STORM, continuous_period_s=0.2)
    silent = Thermometer(SILENT)
    silent.go_out_of_range()

    rig.start_provider()
    config = rig.write_config([])
    config.write_text(
        config.read_text()
        + f'\n[[sim_devices]]\nkind = "thermometer"\naddress = "{SIM}"\ninterval_s = 0.5\n'
        f"count = {SIM_COUNT}\n"
        + "\n[health]\ninterval_s = 5\n"
        + _serial_block("astm", "astm-good", dev / "astm-good")
        + _serial_block("astm", "astm-evil", dev / "astm-evil")
        + _serial_block("astm", "astm-badsum", dev / "astm-badsum")
        + _serial_block("astm", "astm-noise", dev / "astm-noise")
        + _serial_block("nonin", "nonin-evil", dev / "nonin-evil", 'serial = "501500015"\n')
        + _serial_block("cms50", "cms50-evil", dev / "cms50-evil", 'serial = "CMS50-15"\n')
        + _serial_block("modem", "modem-evil", dev / "modem-evil", "poll_interval_s = 1\n")
        + _ble_block(GOOD_TH, "thermometer")
        + _ble_block(FLOOD, "heart-rate")
        + _ble_block(HUGE, "thermometer")
        + _ble_block(STORM, "pulse-oximeter-continuous")
        + _ble_block(SILENT, "thermometer")
    )
    for sim in serial_sims:
        sim.start()
    peaks: list[int] = []
    try:
        with SimulatedBluez([thermometer, flood, huge, storm, silent], set_env=False) as air:
            rig.start_daemon(config, air.env())
            wait_for(lambda: '"gateway.ready"' in rig.log_text(), 60, "the daemon to start")

            # The attack: hostile devices all along, good devices measuring meanwhile.
            badsum.inject(AnalyserFaults(corrupt_frames=10**9))  # every frame, at line rate
            air.call(lambda: huge.every(0.1, lambda: huge.send_raw(
                TEMPERATURE_MEASUREMENT_UUID, b"\x00" + b"\xff" * 65_536)))
            air.call(lambda: storm.every(1.0, lambda: storm.link.drop() if storm.link else None))
            sent_good: list[Decimal] = []
            keys: list[int] = []
            start = time.monotonic()
            n = 0
            while time.monotonic() - start < ATTACK_S:
                assert rig.daemon is not None
                assert rig.daemon.poll() is None, rig.log_text()[-3000:]
                rss = rig.rss_kib()
                if rss is not None:
                    peaks.append(rss)
                if n % 3 == 0 and len(sent_good) < GOOD_TH_READINGS:
                    value = Decimal(f"36.{len(sent_good) % 10}")
                    air.call(lambda v=value: thermometer.measure(v))  # type: ignore[misc]
                    sent_good.append(value)
                if n % 5 == 0:
                    keys.append(good.send_crp(f"{5 + len(keys) / 10:.1f}",
                                              specimen=f"S-{len(keys):04d}"))
                if n % 10 == 0:
                    badsum.send_crp("9.9")  # never accepted: every frame's checksum is wrong
                if n % 7 == 0:  # out of order, control characters, 10 kB values
                    evil.queue_message(["L|1|N"])
                    evil.queue_message(["R|1|^^^CRP|5.0|mg/L", "H|\\^&", "L|1|N"])
                    evil.queue_message(crp_message("5.0", unit=ESC + "u" * 10_000,
                                                   serial_number=EVIL_SERIAL))
                n += 1
                time.sleep(1.0)
            for line in noise.values():
                line.stop()  # the attack ends; the good devices' last readings must follow

            def good_arrived() -> bool:
                got = [m for _, m in rig.received.readings]
                return (
                    sum(m.device.value == SIM for m in got) == SIM_COUNT
                    and sum(m.device.value == GOOD_TH for m in got) == len(sent_good)
                    and sum(m.source.startswith("serial.astm") for m in got) == len(keys)
                )

            wait_for(good_arrived, 60, "every good reading at the provider")
            assert sorted(good.delivered) == sorted(keys), "the good analyser got every ACK"
            status = rig.status(config)
            logs_out = subprocess.run(
                [sys.executable, "-m", "gateway.cli.main", "logs", "--lines", "2000",
                 "--config", str(config)],
                capture_output=True, check=False, timeout=60,
            ).stdout
            expected = _hostile_alarms(status)
            with contextlib.suppress(AssertionError):
                wait_for(lambda: expected <= _health_alarms(rig), 60, "health alarms")
            assert expected - _health_alarms(rig) == set(), _health_alarms(rig)
            # The last device to be attacked (a BLE device connects when the radio lets it) may
            # have been counted after the first look: status as of now, once health has it all.
            status = rig.status(config)
            assert rig.daemon is not None
            assert rig.daemon.poll() is None, "the daemon must never exit"
            assert rig.stop_daemon() == 0, rig.log_text()[-3000:]
    finally:
        for sim in serial_sims:
            sim.stop()

    # Good: every reading arrived exactly as sent, none missing in the chain.
    th = [m.value or Decimal(0) for _, m in rig.received.readings if m.device.value == GOOD_TH]
    assert sorted(th) == sorted(sent_good)
    summary = rig.verifier.summary()
    assert summary["missing"] == 0, summary
    assert summary["failures"] == {}, summary
    # Memory stayed under the cap at every sample.
    assert peaks
    assert max(peaks) < RSS_CAP_KIB, f"peak RSS {max(peaks)} KiB"
    # Each hostile episode is visible in status and in health.
    devices = {d["driver"]: d for d in status["devices"]}
    rejected = {name: devices[name]["rejected_input"] for name in _HOSTILE_DRIVERS}
    assert all(count > 0 for count in rejected.values()), rejected
    alarms = set(status["alarms"])
    assert expected <= alarms, sorted(alarms)
    states = {d["device"]: d["state"] for d in status["devices"]}
    assert states[f"btmac:{SILENT}"] != "connected"  # never answered
    log = rig.log_text()
    storm_events = [e for e in ('"ble.disconnected"', '"ble.connect_failed"') if e in log]
    assert storm_events, "the storm left no trace"
    assert not any(a.startswith("driver-restarting") for a in alarms), alarms
    # No device text reaches a log or a terminal unescaped.
    raw_log = rig.log_path.read_bytes()
    for text, what in ((raw_log, "the daemon's log"), (logs_out, "gatewayctl logs")):
        controls = {b for b in set(text) if b < 0x20 and b not in (0x0A, 0x09)} | (
            {0x7F} & set(text))
        assert not controls, f"control bytes {sorted(controls)} in {what}"
        assert b"owned\x07" not in text
    print(f"\nhostile test: peak RSS {max(peaks) / 1024:.0f} MiB over {len(peaks)} samples; "
          f"rejected input {rejected}")


_HOSTILE_DRIVERS = (
    "serial.astm.astm-evil", "serial.astm.astm-badsum", "serial.astm.astm-noise",
    "serial.nonin.nonin-evil", "serial.cms50.cms50-evil", "serial.modem.modem-evil",
)


def _health_alarms(rig: Rig) -> set[str]:
    """Every alarm a health report that reached the provider carried."""
    return {str(a) for report in rig.received.health_reports for a in report.get("alarms") or ()}


def _hostile_alarms(status: dict[str, Any]) -> set[str]:
    """device-input-rejected for every hostile device that sends input (the storm and the
    silent device send none: their state shows them)."""
    by_driver = {d["driver"]: d["device"] for d in status["devices"]}
    ids = [by_driver[name] for name in _HOSTILE_DRIVERS] + [f"btmac:{FLOOD}", f"btmac:{HUGE}"]
    return {f"device-input-rejected:{i}" for i in ids}
