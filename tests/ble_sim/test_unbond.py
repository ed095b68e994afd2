"""Equipment return removes the episode's BLE bonds: BluezUnbonder against the simulated BlueZ
with the real dbus-fast (Adapter1.RemoveDevice), idempotent, bounded, with a typed error."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.ble.unbond import BluezUnbonder, UnbondError
from provisioning.bundle import BoundDevice
from rig.ble.scenario import KINDS
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, NEIGHBOUR, OTHER


def _bound(address: str) -> BoundDevice:
    return BoundDevice("ble", address, "thermometer", 60.0)


def test_unbond_removes_the_bond_and_the_device_object_then_is_idempotent(
    sim: StartRig,
) -> None:
    mine, theirs = KINDS["thermometer"](BOUND), KINDS["thermometer"](NEIGHBOUR)
    rig = sim(mine, theirs, bonded=(BOUND, NEIGHBOUR))
    assert rig.call(lambda: rig.service.device(BOUND)) is not None  # exported as bonded

    unbonder = BluezUnbonder(timeout_s=5)
    assert unbonder.unbond(_bound(BOUND)) is True
    assert rig.call(lambda: set(rig.service.bonds)) == {NEIGHBOUR}  # only the episode's device
    assert rig.call(lambda: rig.service.device(BOUND)) is None
    # A resumed return asks again: already gone is not an error.
    assert unbonder.unbond(_bound(BOUND)) is False


def test_unknown_skipped_and_serial_devices_are_not_removed(sim: StartRig) -> None:
    rig = sim(KINDS["thermometer"](BOUND), bonded=(BOUND,))
    assert BluezUnbonder().unbond(_bound(OTHER)) is False  # BlueZ never saw it
    assert BluezUnbonder(skip=[BOUND.lower()]).unbond(_bound(BOUND)) is False
    assert BluezUnbonder().unbond(BoundDevice("serial", "AS0012345", "astm", 60.0)) is False
    assert rig.call(lambda: set(rig.service.bonds)) == {BOUND}


def test_no_system_bus_is_a_typed_error_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'no-bus'}")
    with pytest.raises(UnbondError) as caught:
        BluezUnbonder(timeout_s=2).unbond(_bound(BOUND))
    assert caught.value.device == BOUND
    assert "bluetoothd" in caught.value.one_line()


def test_a_bus_without_bluez_is_a_typed_error(sim: StartRig) -> None:
    rig = sim()
    rig.run(rig.service.stop)  # bluetoothd gone, the bus stays
    with pytest.raises(UnbondError, match="not reachable"):
        BluezUnbonder(timeout_s=2).unbond(_bound(BOUND))
