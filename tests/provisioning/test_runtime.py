"""Which configured drivers the daemon starts for a bound episode (invariant 4)."""

from __future__ import annotations

from pathlib import Path

from gateway.config.serial import SerialDeviceConfig
from gateway.config.settings import SimDeviceConfig
from provisioning.bundle import BoundDevice
from provisioning.runtime import BoundDevices

THERMO = BoundDevice("ble", "AA:BB:CC:00:00:01", "thermometer", 60.0)
ASTM = BoundDevice("serial", "/dev/ttyUSB0", "astm", 3600.0)


def sim(kind: str, address: str) -> SimDeviceConfig:
    return SimDeviceConfig(kind, address, 1.0, None, None)


def serial(kind: str, path: str) -> SerialDeviceConfig:
    return SerialDeviceConfig(
        kind, f"{kind}0", path, None, "none", "UTC", None, 1.0, 90, 0, 30.0, 60.0
    )


def test_only_bound_devices_are_admitted() -> None:
    bound = BoundDevices(intake=True, devices=(THERMO, ASTM))
    assert bound.admits_sim(sim("thermometer", "aa:bb:cc:00:00:01"))  # case does not matter
    assert not bound.admits_sim(sim("thermometer", "AA:BB:CC:00:00:09"))  # the neighbour's
    assert not bound.admits_sim(
        sim("blood-pressure", THERMO.address)
    )  # same address, other profile
    assert bound.admits_serial(serial("astm", "/dev/ttyUSB0"))
    assert not bound.admits_serial(serial("astm", "/dev/ttyUSB1"))
    assert bound.ble() == (THERMO,)


def test_while_returning_nothing_is_read_but_the_modem_is_still_watched() -> None:
    returning = BoundDevices(intake=False, devices=(THERMO, ASTM))
    assert not returning.admits_sim(sim("thermometer", THERMO.address))
    assert not returning.admits_serial(serial("astm", "/dev/ttyUSB0"))
    assert returning.admits_serial(serial("modem", "/dev/ttyUSB2"))
    assert returning.ble() == ()


def test_without_provisioning_the_configuration_decides(tmp_path: Path) -> None:
    free = BoundDevices(intake=True, devices=None)
    assert free.admits_sim(sim("thermometer", "anything"))
    assert free.admits_serial(serial("astm", "/dev/ttyS0"))
