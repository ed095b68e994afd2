"""Fixtures for the simulated-BlueZ tests: every test starts its own private bus and bluetoothd
(``sim(...)``), torn down after the test whatever happened."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from rig.ble.peripheral import Peripheral
from rig.ble.rig import SimulatedBluez
from rig.ble.timing import Timing

StartRig = Callable[..., SimulatedBluez]


@pytest.fixture
def sim() -> Iterator[StartRig]:
    """``sim(*peripherals, timing=..., bonded=[...])`` starts a rig for this test only."""
    rigs: list[SimulatedBluez] = []

    def start(*peripherals: Peripheral, timing: Timing | None = None,
              bonded: tuple[str, ...] = ()) -> SimulatedBluez:
        rig = SimulatedBluez(peripherals, timing=timing, bonded=bonded).start()
        rigs.append(rig)
        return rig

    yield start
    for rig in reversed(rigs):
        rig.stop()
