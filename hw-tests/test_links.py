"""Outages of the links between the home and the hospital: power, WAN, broker certificate.

Every scenario ends with the provider proving completeness (no missing sequence number, no
chain break) and, where the rig can tell, every reading a device was told is safe delivered.

PYTEST_DONT_REWRITE: failure messages are the explicit ones (no reprs of readings).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import pytest

from hil.base import DeviceRef, HilRig
from hil.checks import (
    assert_contiguous,
    assert_in_order,
    assert_verifier_clean,
    diagnosed,
    readings_of,
)
from hil.profile import Capability
from tests.integration.rig import wait_for

WAN_OUTAGE_S = float(os.environ.get("HIL_WAN_OUTAGE_S", "5"))
POWER_CUTS = int(os.environ.get("HIL_POWER_CUTS", "2"))
BACKLOG = 60  # records held in the outbox before an upload is cut (sim rig)


def numbered(rig: HilRig) -> list[DeviceRef]:
    """Devices whose readings carry their own record numbers (stored-records devices): the
    steady simulated ones always, a meter only if it was used in the scenario."""
    return [d for d in rig.devices() if d.keeps_records and d.transport != "serial"
            and (d.transport == "sim" or readings_of(rig.received, d))]


def settle(rig: HilRig, timeout_s: float) -> None:
    """Wait until nothing is held: every reading a device was told is safe has arrived, and the
    outbox is empty (sim rig); on a real rig until the provider sees no hole."""
    for d in rig.devices():
        def delivered(d: DeviceRef = d) -> bool:
            confirmed = rig.confirmed(d)
            if confirmed is None:
                return True
            if d.transport == "serial":
                return len(readings_of(rig.received, d)) >= confirmed
            got = {m.device_record_id for m in readings_of(rig.received, d)}
            return set(range(1, confirmed + 1)) <= got
        wait_for(delivered, timeout_s, f"every reading {d.name} was told is safe to arrive")
    wait_for(lambda: rig.outbox_depth() in (0, None), timeout_s, "the outbox to drain")
    wait_for(lambda: rig.verifier_summary()["missing"] == 0, timeout_s,
             "the provider to have every sequence number")


def more_than(rig: HilRig, count: int, device: DeviceRef | None = None) -> Callable[[], bool]:
    """A wait_for predicate: more than ``count`` readings (of ``device``) have arrived."""
    if device is None:
        return lambda: len(rig.received.readings) > count
    return lambda: len(readings_of(rig.received, device)) > count


def flowing(rig: HilRig, at_least: int, timeout_s: float = 60) -> int:
    wait_for(lambda: len(rig.received.readings) >= at_least, timeout_s,
             f"{at_least} readings to reach the provider")
    return len(rig.received.readings)


@pytest.mark.needs(Capability.DELIVERY, Capability.POWER_CUT)
@pytest.mark.timeout_s(180)
def test_power_cut_in_the_middle_of_an_upload_loses_nothing(
    hil_rig: HilRig, profile_has_wan: bool, timing: Callable[[str, float], None]
) -> None:
    """Odd cuts land while batches are published but not acknowledged (the WAN is down, so the
    upload is stalled mid-flight: deterministic); even cuts land just after the backlog upload
    resumed (a race the rig may lose). Each cut: power off, WAN back, power on."""
    rig = hil_rig
    flowing(rig, 10)
    held_at_cut: list[int | None] = []
    for cut in range(1, POWER_CUTS + 1):
        if profile_has_wan:
            rig.wan_drop()
            if rig.outbox_depth() is None:
                time.sleep(10)  # real rig: readings keep coming; give them time to pile up
            else:
                wait_for(lambda: (rig.outbox_depth() or 0) >= BACKLOG, 60,
                         f"{BACKLOG} records held during the WAN drop")
            if cut % 2 == 0:
                before = len(rig.received.readings)
                rig.wan_restore()
                wait_for(more_than(rig, before), 60,
                         "the backlog upload to resume")
        rig.power_cut()
        held_at_cut.append(rig.outbox_depth())
        if profile_has_wan and cut % 2 == 1:
            rig.wan_restore()
        began = time.monotonic()
        rig.power_restore()
        rig.wait_daemon_up(rig.profile.boot_timeout_s)
        timing(f"cut{cut}_answering_again", time.monotonic() - began)
    if profile_has_wan and held_at_cut[0] is not None:
        assert held_at_cut[0] > 0, "the first cut found nothing held: it was not mid-upload"
    began = time.monotonic()
    settle(rig, rig.profile.boot_timeout_s)
    timing("drained_after_last_cut", time.monotonic() - began)
    for d in numbered(rig):
        assert_contiguous(rig.received, d)
    assert_verifier_clean(rig)


@pytest.mark.needs(Capability.DELIVERY, Capability.WAN_DROP)
@pytest.mark.timeout_s(int(WAN_OUTAGE_S) + 210)
def test_wan_outage_then_everything_arrives_in_order(
    hil_rig: HilRig, ble_reason: str | None, timing: Callable[[str, float], None]
) -> None:
    rig = hil_rig
    flowing(rig, 10)
    devices = [d for d in rig.devices() if not (d.transport == "ble" and ble_reason)]
    counts = {d.name: len(readings_of(rig.received, d)) for d in devices}
    rig.wan_drop()
    began = time.monotonic()
    for d in devices:
        rig.measure(d)  # taken during the outage: must arrive afterwards
    # The technician's view during the outage (kept up until it shows): the uplink is named.
    diagnosed(rig, lambda f: f["subject"] in ("uplink", "vpn", "wan-route")
              and f["severity"] == "problem", 60, "the WAN outage")
    time.sleep(max(0.0, WAN_OUTAGE_S - (time.monotonic() - began)))
    during = len(rig.received.readings)
    held = rig.outbox_depth()
    rig.wan_restore()
    restored = time.monotonic()
    timing("outage", restored - began)
    if held is not None:
        assert held > 0, "nothing was held in the outbox during the WAN outage: was it real?"
    settle(rig, 120)
    timing("recovery", time.monotonic() - restored)
    assert len(rig.received.readings) > during, "no reading arrived after the WAN came back"
    for d in devices:
        if d.kind in ("nonin", "cms50"):
            continue  # a live stream: chunks taken before the outage may be all there was
        wait_for(more_than(rig, counts[d.name], d), 60,
                 f"the reading {d.name} took during the outage")
    for d in numbered(rig):
        assert_in_order(rig.received, d)
        assert_contiguous(rig.received, d)
    assert_verifier_clean(rig)


@pytest.mark.needs(Capability.DELIVERY, Capability.BROKER_ROTATION)
@pytest.mark.timeout_s(150)
def test_broker_certificate_rotated_gateway_reconnects(
    hil_rig: HilRig, timing: Callable[[str, float], None]
) -> None:
    rig = hil_rig
    flowing(rig, 10)
    before = rig.broker_fingerprint()
    rig.rotate_broker_cert()
    began = time.monotonic()
    after = rig.broker_fingerprint()
    assert after != before, "the broker still presents the old certificate after the rotation"
    count = len(rig.received.readings)
    wait_for(lambda: len(rig.received.readings) >= count + 10, 90,
             "readings through the broker's new certificate")
    timing("reconnect", time.monotonic() - began)
    uplink = json.loads(rig.gatewayctl("status", "--json").stdout)["uplink"]
    assert uplink["state"] == "connected", f"gatewayctl status after the rotation: {uplink}"
    settle(rig, 60)
    assert_verifier_clean(rig)
