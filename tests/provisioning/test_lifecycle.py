"""The whole life of a router (issue 6), on real parts: EST over HTTPS, mosquitto with client
certificates and a CRL, a gatewayd process, the provider's verifier.

enrol -> bound -> readings delivered -> install-check -> return (killed -9 after every step,
and the daemon too, then resumed) -> nothing left -> old certificate refused -> enrol again for
a new episode with other devices.
"""

from __future__ import annotations

import json
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.equipment_return import CRASH_ENV, STEPS
from provisioning.state import LifecycleStore, Phase
from tests.integration.rig import wait_for
from tests.provisioning.helpers import (
    BP,
    GATEWAY,
    OXI,
    THERMO,
    ProvisioningRig,
    broker_accepts,
)

pytestmark = pytest.mark.integration

NEIGHBOUR = ("pulse-oximeter", OXI.address)  # present in episode 1 but not bound to it
SIMS = [("thermometer", THERMO.address), ("blood-pressure", BP.address), NEIGHBOUR]


@pytest.fixture
def prig(tmp_path: Path) -> Iterator[ProvisioningRig]:
    p = ProvisioningRig(tmp_path)
    try:
        p.start()
        yield p
    finally:
        p.close()


def _addresses(p: ProvisioningRig, since: int = 0) -> set[str]:
    return {m.device.value for _, m in p.rig.received.readings[since:]}


def _events(p: ProvisioningRig, name: str) -> list[dict[str, object]]:
    return [e for e in p.rig.received.events if e.get("event") == name]


def _ready_lines(log: str) -> list[dict[str, object]]:
    lines = [json.loads(x) for x in log.splitlines() if x.startswith("{") and "gateway.ready" in x]
    return [x for x in lines if x.get("event") == "gateway.ready"]


def check_enrolled(config: Path) -> tuple[int, str]:
    """``gatewayd --check-enrolled`` (the unit's ExecCondition): exit code, "not enrolled" or ""."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.daemon.main", "--config", str(config), "--check-enrolled"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc.returncode, "not enrolled" if "not enrolled" in proc.stderr else proc.stderr


def _scan_for_secrets(state_dir: Path) -> list[str]:
    found = []
    for path in state_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if (
                b"PRIVATE KEY" in data
                or data.startswith(b"SQLite format 3")
                or b"CERTIFICATE" in data
            ):
                found.append(str(path))
    return found


def test_full_lifecycle_enrol_collect_return_with_kills_and_enrol_again(
    prig: ProvisioningRig, tmp_path: Path
) -> None:
    rig = prig.rig
    config = prig.write_config(SIMS)
    state = LifecycleStore(rig.state_dir)

    # systemd's ExecCondition skips the unit on a router that is not enrolled (exit 1) ...
    assert check_enrolled(config) == (1, "not enrolled")
    # ... and the daemon itself refuses to run there (exit 2: systemd won't loop).
    rig.start_daemon(config)
    assert rig.daemon is not None
    assert rig.daemon.wait(20) == 2
    assert "P-NOT-ENROLLED" in rig.log_text()

    # --- enrol with the token from the delivery note's QR code --------------------------------
    token = prig.offer("ep-one", (THERMO, BP))
    qr = tmp_path / "qr.txt"
    qr.write_text(f"homecare-enrol:?gw={GATEWAY}&token={token}\n")
    done = prig.ctl("enrol", "--token-file", str(qr))
    assert done.returncode == 0, done.stderr
    assert "episode ep-one, 2 device(s) bound" in done.stdout
    assert token not in done.stdout + done.stderr
    assert state.load().phase is Phase.BOUND
    assert check_enrolled(config) == (0, "")
    keys = rig.state_dir / "keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in keys.iterdir()} == {
        "signing.key": 0o600,
        "tls.key": 0o600,
    }
    prig.trust_enrolled_key()

    # --- collect: only the bound devices are read -----------------------------------------------
    rig.start_daemon(config)
    wait_for(lambda: {THERMO.address, BP.address} <= _addresses(prig), 30, "both bound devices")
    # Lifecycle transitions made while the daemon was down reach the provider once it runs.
    wait_for(lambda: len(_events(prig, "lifecycle-transition")) >= 2, 15, "transition events")
    assert [(e["from"], e["to"]) for e in _events(prig, "lifecycle-transition")] == [
        ("factory", "enrolled"),
        ("enrolled", "bound"),
    ]

    check = prig.ctl("install-check", "--timeout", "30")
    assert check.returncode == 0, check.stdout + check.stderr
    lines = check.stdout.splitlines()
    assert any(line.startswith("PASS  thermometer AA:BB:CC:00:00:01") for line in lines)
    # PASS with time sync, WARN without (as in status and selftest); never FAIL on the rig.
    assert any(line.startswith(("PASS  clock", "WARN  clock")) for line in lines)
    assert any(line.startswith("SKIP  vpn") for line in lines)
    assert any(line.startswith("PASS  record") for line in lines)
    wait_for(lambda: bool(_events(prig, "installation-check")), 15, "installation record")
    assert _events(prig, "installation-check")[0]["passed"] is True
    shown = prig.ctl("lifecycle")
    assert shown.returncode == 0, shown.stderr
    assert {"state    bound", "episode  ep-one"} <= set(shown.stdout.splitlines())
    phase = json.loads(prig.ctl("lifecycle", "--json").stdout)
    assert (phase["state"], phase["episode"], phase["return_done"]) == ("bound", "ep-one", [])

    # An attacker's copy of the identity, taken now: it works until the return revokes it.
    stolen = tmp_path / "stolen"
    stolen.mkdir()
    shutil.copy(rig.state_dir / "identity" / "client.crt", stolen / "client.crt")
    shutil.copy(keys / "tls.key", stolen / "tls.key")
    probe = (
        rig.broker.host,
        rig.broker.port,
        rig.pki.ca_cert,
        stolen / "client.crt",
        stolen / "tls.key",
    )
    assert broker_accepts(*probe)

    # --- return, killed -9 after each step's effect, resumed by running it again --------------
    for step in STEPS:
        killed = prig.ctl("return", env={CRASH_ENV: step}, timeout_s=120)
        assert killed.returncode == -signal.SIGKILL, (step, killed.stdout, killed.stderr)
        if step == "drained":
            # A power cut takes the daemon too; it comes back in 'returning' and reads nothing.
            rig.stop_daemon(signal.SIGKILL)
            starts = len(_ready_lines(rig.log_text()))
            rig.start_daemon(config)
            wait_for(lambda: len(_ready_lines(rig.log_text())) > starts, 20, "restart")  # noqa: B023 - called at once
            assert _ready_lines(rig.log_text())[-1]["drivers"] == 0
            # The technician can see where the interrupted return stands (the rerun recorded
            # the step killed before its record; this one is done but not yet recorded).
            phase = json.loads(prig.ctl("lifecycle", "--json").stdout)
            assert (phase["state"], phase["return_done"]) == ("returning", ["intake-stopped"])
            assert "steps done: intake-stopped" in prig.ctl("lifecycle").stdout
    final = prig.ctl("return", timeout_s=120)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "the router is in the factory state" in final.stdout
    assert "records not delivered: 0" in final.stdout
    assert "certificate revoked: yes" in final.stdout
    assert state.load().phase is Phase.FACTORY
    assert check_enrolled(config) == (1, "not enrolled")  # a returned router stays quiet
    assert rig.daemon is not None  # the return stopped it
    assert rig.daemon.poll() is not None
    again = prig.ctl("return")
    assert again.returncode == 0
    assert "already in the factory state" in again.stdout

    reports = _events(prig, "equipment-return")
    assert reports, "the return report reached the provider"
    assert {r["report_id"] for r in reports} == {reports[0]["report_id"]}  # repeats share an id
    assert reports[-1]["unsent_records"] == 0
    assert set(reports[-1]["to_erase"]["keys"]) == {"signing.key", "tls.key"}  # type: ignore[index]

    # Nothing left: no key, no certificate, no database (only the lifecycle, the epoch marker
    # and the highest bundle generation accepted).
    assert _scan_for_secrets(rig.state_dir) == []
    assert sorted(p.name for p in rig.state_dir.iterdir()) == [
        ".lifecycle.lock",
        "bundle.generation",
        "lifecycle.json",
        "outbox.db.epoch",
    ]  # (no command was accepted in this episode: no commands.counter either)
    # The old certificate is refused by the broker (CRL), the provider's own still works.
    assert not broker_accepts(*probe)
    assert rig.subscriber is not None
    assert rig.subscriber.wait_subscribed(15)

    # --- the next patient: a new episode with other devices -------------------------------------
    before = len(rig.received.readings)
    token2 = prig.offer("ep-two", (OXI,))
    # Typed by a person: lower case, spaces instead of dashes; read from standard input.
    done = prig.ctl("enrol", "--token-file", "-", stdin=token2.lower().replace("-", " "))
    assert done.returncode == 0, done.stderr
    assert state.load().episode_id == "ep-two"
    prig.trust_enrolled_key()
    rig.start_daemon(config)
    wait_for(lambda: OXI.address in _addresses(prig, before), 30, "the new episode's device")
    time.sleep(1.0)
    assert _addresses(prig, before) == {OXI.address}  # the previous episode's devices are ignored
    # The daemon answers status once its control socket is up; under load give it a moment.
    answers: list[str] = []

    def answered() -> bool:
        answers.append(prig.ctl("status", "--json").stdout)
        return bool(answers[-1].strip())

    wait_for(answered, 30, "gatewayctl status --json to answer")
    status = json.loads(answers[-1])
    assert status["episode"] == "ep-two"
