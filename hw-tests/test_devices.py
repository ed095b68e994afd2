"""Device side: out of radio range / unplugged and back, and a neighbour's device next door.

PYTEST_DONT_REWRITE: failure messages are the explicit ones (no reprs of readings).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hil.base import DeviceRef, HilRig
from hil.checks import assert_verifier_clean, device_of, diagnosed, readings_of
from hil.profile import Capability
from tests.integration.rig import wait_for

OUT_OF_RANGE_READINGS = 3
AWAY_S = 4.0  # how long the device stays out of range after its last reading there
# gatewayctl status findings that name a device the gateway cannot reach.
DEVICE_AWAY = frozenset({"device-out-of-range", "device-unplugged", "device-silent"})


@pytest.mark.needs(Capability.DELIVERY, Capability.OUT_OF_RANGE)
@pytest.mark.timeout_s(210)
def test_device_out_of_range_and_back_stored_records_recovered(
    hil_rig: HilRig, range_device_name: str, ble_reason: str | None,
    timing: Callable[[str, float], None],
) -> None:
    rig = hil_rig
    device = device_of(rig, range_device_name, ble_reason)
    rig.measure(device)
    wait_for(lambda: bool(readings_of(rig.received, device)), 60,
             f"a reading from {device.name} before it leaves")
    before = len(readings_of(rig.received, device))

    rig.out_of_range(device)
    for _ in range(OUT_OF_RANGE_READINGS):
        rig.measure(device)  # kept in the device's memory while the gateway cannot reach it
        time.sleep(0.3)
    away = time.monotonic()
    # The technician's view during the fault: gatewayctl status names the device and why.
    diagnosed(rig, lambda f: device.wire_id.upper() in f["subject"].upper()
              and f["code"] in DEVICE_AWAY, 60, f"{device.name} out of range")
    time.sleep(max(0.0, AWAY_S - (time.monotonic() - away)))
    assert len(readings_of(rig.received, device)) == before, (
        f"{device.name} delivered readings while out of range: the rig's range control did "
        "not take it away"
    )
    rig.back_in_range(device)
    back = time.monotonic()
    want = before + OUT_OF_RANGE_READINGS
    wait_for(lambda: len(readings_of(rig.received, device)) >= want, 90,
             f"the {OUT_OF_RANGE_READINGS} readings {device.name} stored while out of range")
    timing("recovered_after_back", time.monotonic() - back)
    got = readings_of(rig.received, device)
    assert len({(m.device_time, m.raw) for m in got}) >= want, (
        f"{device.name}: {len(got)} readings arrived but fewer than {want} distinct ones"
    )
    confirmed = rig.confirmed(device)
    if confirmed is not None:
        wait_for(lambda: (rig.confirmed(device) or 0) >= want, 30,
                 f"{device.name} to be told its stored readings are safe")
    assert_verifier_clean(rig)


@pytest.mark.needs(Capability.DELIVERY, Capability.BLE, Capability.NEIGHBOUR)
@pytest.mark.timeout_s(120)
def test_neighbours_device_is_ignored(ble_ok: None, hil_rig: HilRig) -> None:
    rig = hil_rig
    neighbours = [DeviceRef(d.name, "ble", d.profile, d.address, False)
                  for d in rig.profile.ble_devices if d.neighbour]
    patient = next(d for d in rig.devices() if d.transport == "ble")
    for n in neighbours:
        rig.measure(n)
    rig.measure(patient)
    wait_for(lambda: bool(readings_of(rig.received, patient)), 60,
             f"a reading from the patient's {patient.name}")
    for n in neighbours:
        rig.measure(n)
    time.sleep(3.0)
    for n in neighbours:
        assert not readings_of(rig.received, n), (
            f"the neighbour's {n.name} ({n.wire_id}) was read and uploaded: invariant 4"
        )
    listed = rig.gatewayctl("devices", "--json").stdout
    for n in neighbours:
        assert n.wire_id not in listed.upper(), f"gatewayctl devices lists the neighbour {n.name}"
    assert_verifier_clean(rig)
