"""Signed commands on an enrolled router (issue 20): the command key comes from the enrolment
bundle, and the episode's devices and lifecycle change by command - the real broker, the real
daemon, the real EST enrolment.

- ``device.bind`` starts reading a new device without a restart, and the binding survives one;
- ``device.unbind`` stops reading a device;
- ``return.drain`` stops intake, moves the router to ``returning``, delivers what it holds and
  leaves the physical steps to ``gatewayctl return`` at the depot; device commands are then
  refused ``not-allowed``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.commands import envelope
from provider.commands import BrokerSettings, commands_topic, make_command, public_key_text, publish
from provisioning.state import LifecycleStore, Phase
from tests.integration.rig import wait_for
from tests.provisioning.helpers import GATEWAY, OXI, THERMO, ProvisioningRig

SIMS = [("thermometer", THERMO.address), ("pulse-oximeter", OXI.address)]
OUTCOME_S = 60.0


@pytest.fixture
def prig(tmp_path: Path) -> Iterator[ProvisioningRig]:
    p = ProvisioningRig(tmp_path)
    try:
        p.start()
        yield p
    finally:
        p.close()


def _count(p: ProvisioningRig, address: str, since: int = 0) -> int:
    return sum(1 for _, m in p.rig.received.readings[since:] if m.device.value == address)


class Sender:
    def __init__(self, p: ProvisioningRig, key: ed25519.Ed25519PrivateKey) -> None:
        self.p, self.key, self.counter = p, key, 0
        r = p.rig
        self.broker = BrokerSettings(
            r.broker.host, r.broker.port, r.pki.ca_cert, r.pki.provider_cert, r.pki.provider_key
        )

    def run(self, name: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        self.counter += 1
        command = make_command(GATEWAY, name, args or {}, self.counter)
        publish(self.broker, commands_topic(GATEWAY), envelope.sign(command, self.key))

        def final() -> dict[str, Any] | None:
            return next(
                (
                    e
                    for e in self.p.rig.received.events
                    if e.get("event") == "command"
                    and e.get("command_id") == command.command_id
                    and e.get("outcome") in ("done", "refused", "failed")
                ),
                None,
            )

        wait_for(lambda: final() is not None, OUTCOME_S, f"the outcome of {name}")
        found = final()
        assert found is not None
        return found


def test_devices_bound_and_unbound_by_command_and_a_remote_return_drain(
    prig: ProvisioningRig, tmp_path: Path
) -> None:
    rig = prig.rig
    key = ed25519.Ed25519PrivateKey.generate()
    config = prig.write_config(SIMS)
    token = prig.offer("ep-cmd", (THERMO,), command_key=public_key_text(key))
    qr = tmp_path / "qr.txt"
    qr.write_text(f"homecare-enrol:?gw={GATEWAY}&token={token}\n")
    enrolled = prig.ctl("enrol", "--token-file", str(qr))
    assert enrolled.returncode == 0, enrolled.stderr
    prig.trust_enrolled_key()
    rig.start_daemon(config)
    wait_for(lambda: _count(prig, THERMO.address) >= 3, 60, "the bound thermometer")
    assert _count(prig, OXI.address) == 0  # simulated, in range, but not bound
    send = Sender(prig, key)

    # --- bind the oximeter mid-episode: read at once, no restart -------------------------------
    pid = rig.daemon.pid if rig.daemon else None
    done = send.run("device.bind", OXI.to_json() | {"passkey": None})
    assert done["outcome"] == "done", done
    assert done["result"]["bound_devices"] == 2
    wait_for(lambda: _count(prig, OXI.address) >= 3, 60, "the newly bound oximeter")
    assert rig.daemon is not None
    assert (rig.daemon.pid, rig.daemon.poll()) == (pid, None)  # the same process, running

    # --- unbind the thermometer: no more of its readings ---------------------------------------
    done = send.run("device.unbind", {"transport": "ble", "address": THERMO.address})
    assert (done["outcome"], done["result"]["bound_devices"]) == ("done", 1)
    oxi = _count(prig, OXI.address)
    wait_for(lambda: _count(prig, OXI.address) >= oxi + 5, 60, "oximeter readings go on")
    mark = len(rig.received.readings)
    wait_for(lambda: _count(prig, OXI.address, mark) >= 5, 60, "more oximeter readings")
    assert _count(prig, THERMO.address, mark) == 0

    # --- the binding survives a restart --------------------------------------------------------
    assert rig.stop_daemon() == 0
    mark = len(rig.received.readings)
    rig.start_daemon(config)
    wait_for(lambda: _count(prig, OXI.address, mark) >= 3, 60, "the oximeter after a restart")
    assert _count(prig, THERMO.address, mark) == 0

    # --- remote return drain: intake stops, everything is delivered, the rest is physical -----
    done = send.run("return.drain")
    assert done["outcome"] == "done", done
    assert done["result"]["phase"] == "returning"
    lc = LifecycleStore(rig.state_dir).load()
    assert lc.phase is Phase.RETURNING
    assert "intake-stopped" in lc.return_done
    wait_for(
        lambda: any(
            e.get("event") == "lifecycle-transition" and e.get("to") == "returning"
            for e in rig.received.events
        ),
        30,
        "the transition to returning, sealed",
    )
    wait_for(lambda: rig.outbox_depth() == 0, 60, "everything held delivered")
    mark = len(rig.received.readings)
    refused = send.run("device.bind", THERMO.to_json() | {"passkey": None})
    assert (refused["outcome"], refused["reason"]) == ("refused", "not-allowed")
    assert len(rig.received.readings) == mark  # intake stays stopped
    # The depot's gatewayctl return resumes after the steps done remotely and finishes the
    # physical half; the command counter outlives the episode, the command ledger does not.
    final = prig.ctl("return", timeout_s=120)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "records not delivered: 0" in final.stdout
    assert LifecycleStore(rig.state_dir).load().phase is Phase.FACTORY
    assert rig.daemon is not None
    assert rig.daemon.wait(30) == 0  # the return stopped it
    left = sorted(p.name for p in rig.state_dir.iterdir())
    assert "commands.counter" in left
    assert not any(name.startswith(("commands.db", "binding-changes", "config-overrides"))
                   for name in left)  # fmt: skip
    # The last accepted counter: the bind refused by its handler was accepted (and used one).
    assert (rig.state_dir / "commands.counter").read_text() == f"{send.counter}\n"
