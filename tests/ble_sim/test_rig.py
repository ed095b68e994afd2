"""The rig's plumbing: private bus, bluetoothctl stub, environment, scenario files, the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from rig.ble.bus import PrivateBus
from rig.ble.clock import DeviceClock
from rig.ble.errors import SimError
from rig.ble.peripheral import Pairing, PairingMethod
from rig.ble.profiles import Thermometer
from rig.ble.rig import SimulatedBluez
from rig.ble.scenario import load, parse
from rig.ble.stored import GlucoseMeter
from rig.ble.stub import stub_dir
from rig.ble.timing import Timing
from tests.ble.helpers import wall
from tests.ble_sim.helpers import BOUND, NEIGHBOUR, RawClient

ROOT = Path(__file__).resolve().parents[2]


def test_private_bus_starts_reports_its_address_and_cleans_up() -> None:
    bus = PrivateBus()
    address = bus.start()
    directory = bus.directory
    try:
        assert address.startswith(f"unix:path={directory}/")
        assert bus.running
    finally:
        bus.stop()
    assert bus.address == ""
    assert not directory.exists()


def test_rig_sets_and_restores_the_environment(tmp_path: Path) -> None:
    before = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    with SimulatedBluez([Thermometer(BOUND)]) as rig:
        assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == rig.address
        version = subprocess.run(["bluetoothctl", "--version"], capture_output=True, check=True,
                                 text=True, env=rig.env())
        assert version.stdout.strip() == "bluetoothctl: 5.66"
    assert os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") == before
    assert (stub_dir(tmp_path) / "bluetoothctl").exists()


def test_scenario_parsing_and_its_errors() -> None:
    scenario = parse({
        "timing": {"forget_after_s": 1.5},
        "devices": [
            {"kind": "glucose-meter", "address": BOUND, "bonded": True, "stored": 3,
             "pairing": {"method": "passkey", "passkey": 42},
             "clock": {"zone_min": 60, "unset": True}},
            {"kind": "thermometer", "address": NEIGHBOUR, "options": {"fahrenheit": True}}],
        "events": [{"at_s": 1, "device": BOUND, "action": "out_of_range"},
                   {"at_s": 2, "action": "restart_bluetoothd", "args": {"down_s": 0.5}}]})
    meter = scenario.device(BOUND)
    assert isinstance(meter, GlucoseMeter)
    assert meter.store.keys == [1, 2, 3]
    assert meter.pairing == Pairing(PairingMethod.PASSKEY_ENTRY, 42)
    assert meter.clock.now() is None
    assert scenario.bonded == [BOUND]
    assert scenario.timing == Timing(forget_after_s=1.5)
    bad: list[dict[str, Any]] = [{"devices": [{"kind": "toaster", "address": BOUND}]},
           {"events": [{"action": "explode"}]},
           {"events": [{"action": "measure"}]},
           {"devices": [{"kind": "thermometer", "address": BOUND, "options": {"x": 1}}]},
           {"timing": {"warp": 9}}]
    for data in bad:
        with pytest.raises(SimError):
            parse(data)


def test_shipped_scenarios_parse() -> None:
    for path in sorted((ROOT / "rig/ble/scenarios").glob("*.json")):
        scenario = load(path)
        assert scenario.devices, path


def test_device_clock_drifts_and_is_set_by_a_collector() -> None:
    """100 ppm over 10 000 s is one second ahead; a Current Time write puts it right."""
    now = [0.0]
    fixed = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)
    clock = DeviceClock(zone=timedelta(hours=2), drift_ppm=100, utc_now=lambda: fixed,
                        monotonic=lambda: now[0])
    assert clock.now() == wall(2024, 5, 1, 10, 0, 0)
    now[0] = 10_000.0
    assert clock.now() == wall(2024, 5, 1, 10, 0, 1)
    clock.set(wall(2024, 5, 1, 10, 0, 0))
    assert clock.error() == timedelta(0)


async def test_cli_serves_a_scenario_until_terminated(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m rig.ble`` prints the environment, owns org.bluez with the scenario's
    devices (bonded ones exported at once), and exits 0 on SIGTERM."""
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps({"devices": [
        {"kind": "thermometer", "address": BOUND, "bonded": True}]}))
    env_file = tmp_path / "sim.env"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "rig.ble", str(scenario), "--env-file", str(env_file),
        "--seconds", "20", cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            lines = [(await proc.stdout.readline()).decode().strip() for _ in range(3)]
        assert lines[2] == "bluez-sim: ready"
        address = shlex.split(lines[0].split("=", 1)[1])[0]
        assert env_file.read_text().startswith("export DBUS_SYSTEM_BUS_ADDRESS=")
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", address)
        async with RawClient() as raw:
            path = f"/org/bluez/hci0/dev_{BOUND.replace(':', '_')}"
            assert await raw.prop(path, "org.bluez.Device1", "Paired") is True
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
