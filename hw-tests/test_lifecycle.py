"""Equipment return and re-enrolment: drain to the provider, unbond, revoke, erase, reset, then
enrol for a new episode. The rig's gateway is enrolled as in the field (EST with a one-time
token, a signed bundle binding the rig's devices); skipped with the reason when this build's
gatewayctl has no ``return`` command or the rig cannot get enrolment tokens.

PYTEST_DONT_REWRITE: failure messages are the explicit ones (no reprs of readings).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from hil.base import CliLifecycle, HilRig
from hil.checks import assert_verifier_clean
from hil.profile import Capability
from tests.integration.rig import wait_for

NEW_EPISODE = "ep-hil-reenrol"


@pytest.fixture
def lifecycle_ok(lifecycle_reason: str | None) -> None:
    if lifecycle_reason:
        pytest.skip(lifecycle_reason)


def _delivered(rig: HilRig, since: int = 0) -> set[str]:
    return {m.device.value for _, m in rig.received.readings[since:]}


@pytest.mark.needs(Capability.DELIVERY, Capability.ENROLMENT)
@pytest.mark.timeout_s(720)
def test_equipment_return_drains_erases_and_reenrols(
    lifecycle_ok: None, enrolled_rig: HilRig, timing: Callable[[str, float], None]
) -> None:
    rig = enrolled_rig
    lifecycle = CliLifecycle(rig, token_for=rig.enrolment_token, after_enrol=rig.after_enrolment)
    phase, episode = lifecycle.state()
    assert phase == "bound", f"the rig's gateway is {phase!r} before the return"
    wait_for(lambda: len(rig.received.readings) >= 10, 60, "readings before the return")
    identity = rig.capture_identity()
    if identity is not None:
        assert rig.broker_accepts(identity), "the gateway's own certificate is refused already"
    began = time.monotonic()
    facts = lifecycle.return_equipment()
    timing("return", time.monotonic() - began)
    # Nothing the devices handed over may be left behind on a router going back to the depot.
    assert facts.get("state") == "factory", f"return ended in state {facts.get('state')!r}"
    assert not facts.get("forced"), "the return needed --force"
    assert facts.get("unsent_records", 0) == 0, f"{facts['unsent_records']} records not delivered"
    assert facts.get("report_uploaded"), "the return report did not reach the provider"
    assert facts.get("revoked"), "the gateway certificate was not confirmed revoked"
    ble = {d.wire_id for d in rig.devices() if d.transport == "ble"}
    unbonded = set(facts.get("bonds_removed", []))
    assert unbonded == ble, f"BLE bonds removed {sorted(unbonded)}, bound BLE {sorted(ble)}"
    assert_verifier_clean(rig)
    for d in rig.devices():
        confirmed = rig.confirmed(d)
        got = sum(1 for _, m in rig.received.readings if m.device.value == d.wire_id)
        if confirmed is not None:
            assert got >= confirmed, f"{d.name}: {confirmed - got} safe readings not delivered"
    assert rig.outbox_depth() in (0, -1, None), "the outbox still holds records after return"
    phase, episode = lifecycle.state()
    assert phase == "factory", f"after return the gateway is {phase!r}, bound to {episode!r}"
    if identity is not None:
        assert not rig.broker_accepts(identity), "the broker still accepts the old certificate"

    count = len(rig.received.readings)
    began = time.monotonic()
    lifecycle.enrol(NEW_EPISODE)
    phase, episode = lifecycle.state()
    assert (phase, episode) == ("bound", NEW_EPISODE), f"after enrol: {phase!r}, {episode!r}"
    # Every device comes back in the new episode (BLE ones pair afresh: their bonds were removed).
    for d in rig.devices():
        rig.measure(d)
    wanted = {d.wire_id for d in rig.devices()}
    wait_for(lambda: wanted <= _delivered(rig, count), 120, "a reading from every device in the "
             "new episode")
    timing("re-enrolment", time.monotonic() - began)
    assert_verifier_clean(rig)
