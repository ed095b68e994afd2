"""Return with the provider's broker unreachable: refused without --force, accounted with it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.state import LifecycleStore, Phase
from tests.integration.rig import wait_for
from tests.provisioning.helpers import THERMO, ProvisioningRig

pytestmark = pytest.mark.integration


@pytest.fixture
def prig(tmp_path: Path) -> Iterator[ProvisioningRig]:
    p = ProvisioningRig(tmp_path)
    try:
        p.start()
        yield p
    finally:
        p.close()


def test_undeliverable_records_block_the_return_until_forced_and_are_counted(
    prig: ProvisioningRig,
) -> None:
    rig = prig.rig
    config = prig.write_config([("thermometer", THERMO.address)])
    token = prig.offer("ep-force", (THERMO,))
    assert prig.ctl("enrol", "--token-file", "-", stdin=token).returncode == 0
    prig.trust_enrolled_key()
    rig.start_daemon(config)
    wait_for(lambda: bool(rig.received.readings), 30, "a first reading delivered")
    rig.broker.stop()  # the hospital is unreachable from now on
    wait_for(lambda: rig.outbox_depth() > 0, 20, "readings waiting in the outbox")

    refused = prig.ctl("return", "--drain-timeout", "1")
    assert refused.returncode == 1
    assert "[P-DRAIN]" in refused.stderr
    assert "not yet acknowledged by the provider" in refused.stderr
    assert LifecycleStore(rig.state_dir).load().phase is Phase.RETURNING
    assert (rig.state_dir / "keys" / "signing.key").exists()  # nothing erased yet

    forced = prig.ctl("return", "--force", "--drain-timeout", "1", timeout_s=120)
    assert forced.returncode == 0, forced.stdout + forced.stderr
    unsent = int(forced.stdout.split("records not delivered: ")[1].split()[0])
    assert unsent > 0
    assert "(--force)" in forced.stdout
    assert "return report uploaded: NO" in forced.stdout
    assert "certificate revoked: yes" in forced.stdout  # the enrolment service was reachable
    assert LifecycleStore(rig.state_dir).load().phase is Phase.FACTORY
    assert not (rig.state_dir / "keys").exists()
    assert not (rig.state_dir / "outbox.db").exists()
