"""First reading from each attached device, delivered and verified end to end.

Device -> driver in gatewayd -> sealed into the outbox -> MQTT/mTLS over the VPN -> broker ->
provider verifier (signature, hash chain, HPKE opened). One scenario per device of the profile.

PYTEST_DONT_REWRITE: failure messages are the explicit ones (no reprs of readings).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hil.base import HilRig
from hil.checks import assert_verifier_clean, device_of, readings_of
from hil.profile import Capability
from tests.integration.rig import wait_for

FIRST_READING_S = 60.0  # a Nonin stream is sealed in chunks; an ASTM result needs its ACK dance


@pytest.mark.needs(Capability.DELIVERY)
@pytest.mark.timeout_s(150)
def test_first_reading_delivered_and_verified(
    shared_rig: HilRig, device_name: str, ble_reason: str | None,
    timing: Callable[[str, float], None],
) -> None:
    rig = shared_rig
    device = device_of(rig, device_name, ble_reason)
    began = time.monotonic()
    rig.measure(device)
    wait_for(lambda: bool(readings_of(rig.received, device)), FIRST_READING_S,
             f"the first reading from {device.name} ({device.transport} {device.kind}, "
             f"id {device.wire_id}) at the provider")
    timing("waited", time.monotonic() - began)  # the rig was already up and reading
    first = readings_of(rig.received, device)[0]
    assert first.device.value == device.wire_id, f"{device.name}: reading under another id"
    assert first.unit, f"{device.name}: reading without a UCUM unit"
    assert first.mdc_code > 0, f"{device.name}: reading without an MDC type code"
    assert first.value is not None or first.components, f"{device.name}: reading without a value"
    assert_verifier_clean(rig)
