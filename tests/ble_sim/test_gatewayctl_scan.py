"""gatewayctl scan with the real bleak against the simulated BlueZ: bound vs neighbour."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.main import EXIT_OK, EXIT_PROBLEM, main
from rig.ble.profiles import Thermometer, WeightScale, neighbour
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, NEIGHBOUR, OTHER
from tests.factories import VALID_CONFIG as VALID
from tests.factories import write_config as write


def test_scan_marks_the_bound_thermometer_and_its_neighbours_without_their_data(
    sim: StartRig, files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bound = Thermometer(BOUND, name="TH-patient", rssi=-55, manufacturer_data={0x0157: b"\x99"})
    sim(bound, neighbour(bound, NEIGHBOUR), WeightScale(OTHER, rssi=-70))
    config = write(files, VALID.replace("C0:FF:EE:00:00:01", BOUND.lower()))
    args = ["scan", "--seconds", "0.6", "--serial-dir", str(files / "none"), "--config"]
    assert main([*args, str(config), "--json"]) == EXIT_OK
    out, err = capsys.readouterr()
    found = json.loads(out)
    assert "listening" not in err  # --json: no progress
    assert [(a["address"], a["bound"], a["services"][:1]) for a in found["ble"]] == [
        (BOUND, True, ["thermometer"]),
        (OTHER, False, ["weight-scale"]),
        (NEIGHBOUR, False, ["thermometer"]),
    ]
    assert found["ble"][0]["name"] == "TH-patient"
    assert found["ble"][0]["rssi_dbm"] in (-55, -56)
    assert set(found["ble"][0]) == {"address", "name", "rssi_dbm", "services", "bound", "connected"}
    assert found["ble"][0]["connected"] is False  # no daemon here to be connected to
    assert found["serial"] == []
    assert main([*args, str(config)]) == EXIT_OK
    out, err = capsys.readouterr()
    lines = out.splitlines()
    # Not a terminal: the scan window as plain lines on stderr, how it began and how it ended.
    assert err.splitlines()[0] == "listening for BLE advertisements ..."
    assert err.splitlines()[-1].startswith("listening for BLE advertisements: 3 heard (")
    assert lines[0].split()[:2] == ["ADDRESS", "NAME"]
    assert lines[1].split()[:2] == ["bound", BOUND]
    assert lines[3].split()[:2] == ["neighbour", NEIGHBOUR]


def test_scan_without_bluez_fails_with_a_hint(
    files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={files / 'no-bus'}")
    config = write(files, VALID)
    assert main(["scan", "--seconds", "0.2", "--config", str(config)]) == EXIT_PROBLEM
    err = capsys.readouterr().err
    assert "Bluetooth scan failed" in err
    assert "bluetoothctl show" in err
