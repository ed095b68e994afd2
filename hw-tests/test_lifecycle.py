"""Equipment return and re-enrolment: drain to the provider, erase, reset, bind a new episode.

Written against ``hil.base.Lifecycle`` (provisioning is built in parallel); skipped with the reason
when this build's gatewayctl has no ``return`` command.

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


@pytest.mark.needs(Capability.DELIVERY)
@pytest.mark.timeout_s(720)
def test_equipment_return_drains_erases_and_reenrols(
    lifecycle_ok: None, hil_rig: HilRig, timing: Callable[[str, float], None]
) -> None:
    rig = hil_rig
    lifecycle = CliLifecycle(rig)
    wait_for(lambda: len(rig.received.readings) >= 10, 60, "readings before the return")
    began = time.monotonic()
    facts = lifecycle.return_equipment()
    timing("return", time.monotonic() - began)
    # Nothing the devices handed over may be left behind on a router going back to the depot.
    assert facts.get("state") == "factory", f"return ended in state {facts.get('state')!r}"
    assert not facts.get("forced"), "the return needed --force"
    assert facts.get("unsent_records", 0) == 0, f"{facts['unsent_records']} records not delivered"
    assert facts.get("revoked"), "the gateway certificate was not confirmed revoked"
    assert_verifier_clean(rig)
    for d in rig.devices():
        confirmed = rig.confirmed(d)
        got = sum(1 for _, m in rig.received.readings if m.device.value == d.wire_id)
        if confirmed is not None:
            assert got >= confirmed, f"{d.name}: {confirmed - got} safe readings not delivered"
    assert rig.outbox_depth() in (0, -1, None), "the outbox still holds records after return"
    phase, episode = lifecycle.state()
    assert phase == "factory", f"after return the gateway is {phase!r}, bound to {episode!r}"

    lifecycle.enrol(NEW_EPISODE)
    phase, episode = lifecycle.state()
    assert (phase, episode) == ("bound", NEW_EPISODE), f"after enrol: {phase!r}, {episode!r}"
    count = len(rig.received.readings)
    wait_for(lambda: len(rig.received.readings) > count, 90, "readings in the new episode")
    assert_verifier_clean(rig)
