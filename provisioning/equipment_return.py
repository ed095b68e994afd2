"""``gatewayctl return``: drain, account, revoke, erase - resumable after a power cut anywhere.

Steps, in order; each is recorded in lifecycle.json once complete and skipped on a rerun, and
each is safe to repeat (a power cut between doing a step and recording it repeats it):

1. ``intake-stopped``  phase -> returning (persisted first: a restarted daemon starts no driver),
                       then the running daemon cancels its drivers and commits what it holds.
2. ``drained``         wait until the provider acknowledged every record (outbox empty), with
                       progress; ``--force`` records the unsent count instead.
3. ``unbonded``        BLE bonds of the episode's devices are removed (hook, see ``Unbonder``).
4. ``reported``        the signed return report (an EVENT record, sealed with the identity key)
                       is uploaded and acknowledged. Its ``report_id`` is chosen once and kept,
                       so a repeat is a recognisable duplicate upstream.
5. ``service-stopped`` the daemon is told to exit (it holds the database and the keys).
6. ``revoked``         the provider revokes the certificate (mutual TLS with it, before the key
                       is destroyed). The report goes first: a revoked certificate can no longer
                       reach the broker.
7. ``erased``          keys destroyed, database with -wal/-shm and every other state file
                       deleted, the log folder (/var/log/homecare-gateway) emptied and, on a
                       router whose journal holds gatewayd's lines, the journal rotated and
                       vacuumed (device addresses, the episode pseudonym and when readings were
                       taken are no values, but they are the patient's routine); phase ->
                       factory.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from buffer.recovery import epoch_marker
from gateway.config.settings import Config
from gateway.control import ControlError
from gateway.errors import GatewayError
from gateway.progress import NO_PROGRESS, Progress
from provisioning.binding import GENERATION_FILE
from provisioning.bundle import BoundDevice
from provisioning.errors import (
    DaemonStillRunningError,
    DrainIncompleteError,
    RevocationError,
)
from provisioning.est import ClientCert, EstClient
from provisioning.keystore import KeyStore
from provisioning.layout import StateLayout
from provisioning.safepath import SafeTree
from provisioning.state import STATE_FILE, LifecycleStore, Phase

log = structlog.get_logger("provisioning.return")

STEPS = (
    "intake-stopped",
    "drained",
    "unbonded",
    "reported",
    "service-stopped",
    "revoked",
    "erased",
)
# Test seam for the kill -9 tests: SIGKILL ourselves after this step's effects, before it is
# recorded - the worst moment, so the rerun must cope with a step done but not marked done.
CRASH_ENV = "HOMECARE_TEST_KILL_AFTER_STEP"
# Kept through a return: the lifecycle (the router's history), the highest bundle generation
# accepted and the last signed-command counter accepted (gateway/commands/ledger.py; one integer
# each, nothing about the patient) - so neither a bundle nor a command once accepted can be
# replayed onto this router in its next episode.
_KEEP = {STATE_FILE, ".lifecycle.lock", GENERATION_FILE, "commands.counter"}


# systemd's LogsDirectory= for gatewayd.service (systemd/gatewayd.service).
LOGS_DIR = Path("/var/log/homecare-gateway")
UNIT = "gatewayd.service"


class JournalEraser(Protocol):
    def erase(self) -> bool:
        """Erase what the journal keeps of the episode; True if something was erased."""
        ...


class SystemJournal:
    """journald keeps no per-unit files: rotate, then vacuum every archived file.

    Only on a router whose journal holds gatewayd's lines (a development machine or a CI host
    running the tests keeps its journal), and only as root. The router is going back to the
    depot: its whole journal belongs to the episode that ends here.
    """

    def erase(self) -> bool:
        journalctl = shutil.which("journalctl")
        if journalctl is None or os.geteuid() != 0:
            return False
        try:
            probe = subprocess.run(  # noqa: S603 - fixed arguments
                [journalctl, "-u", UNIT, "-n", "1", "-q", "-o", "cat", "--no-pager"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            if probe.returncode != 0 or not probe.stdout.strip():
                return False
            for argv in ([journalctl, "--rotate"], [journalctl, "--vacuum-time=1s"]):
                subprocess.run(argv, capture_output=True, timeout=120, check=False)  # noqa: S603
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("provisioning.journal_not_erased", error=type(exc).__name__)
            return False
        return True


class DaemonLink(Protocol):
    """The control socket (gateway.control.ask bound to the configured socket)."""

    def __call__(self, command: str, timeout_s: float = 10.0, **args: Any) -> Any: ...


class Unbonder(Protocol):
    def unbond(self, device: BoundDevice) -> bool:
        """Remove the bond (pairing keys) with a BLE device; True if one was removed."""
        ...


class NoUnbonder:
    """Until the BLE session manager provides one: nothing to remove (serial/sim rigs)."""

    def unbond(self, device: BoundDevice) -> bool:
        log.info("provisioning.unbond_not_wired", device=device.address)
        return False


@dataclass(frozen=True, slots=True)
class ReturnOptions:
    force: bool = False
    drain_timeout_s: float = 600.0
    report_timeout_s: float = 60.0
    stop_timeout_s: float = 45.0
    poll_s: float = 0.2
    logs_dir: Path | None = LOGS_DIR


@dataclass(frozen=True, slots=True)
class ReturnResult:
    already_factory: bool
    facts: dict[str, Any]


# What the technician sees while a step runs (gatewayctl return shows them with a progress bar).
STEP_LABELS = {
    "intake-stopped": "stopping device intake",
    "drained": "delivering stored records to the provider",
    "unbonded": "removing BLE bonds",
    "reported": "uploading the return report",
    "service-stopped": "stopping the gateway service",
    "revoked": "revoking the certificate",
    "erased": "erasing keys and data",
}


def _left(depth: int) -> str:
    return f"delivering to the provider: {depth} records left"


def _crash_point(step: str) -> None:
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


class EquipmentReturn:
    def __init__(
        self,
        cfg: Config,
        *,
        daemon: DaemonLink,
        keystore: KeyStore,
        est: EstClient,
        devices: tuple[BoundDevice, ...],
        unbonder: Unbonder | None = None,
        options: ReturnOptions | None = None,
        progress: Progress = NO_PROGRESS,
        journal: JournalEraser | None = None,
    ) -> None:
        self.cfg = cfg
        self.layout = StateLayout(cfg.state_dir)
        self.lifecycle = LifecycleStore(cfg.state_dir)
        self.daemon = daemon
        self.keystore = keystore
        self.est = est
        self.devices = devices
        self.unbonder = unbonder or NoUnbonder()
        self.opt = options or ReturnOptions()
        self.progress = progress
        self.journal = journal or SystemJournal()

    def run(self) -> ReturnResult:
        lc = self.lifecycle.load()
        if lc.phase is Phase.FACTORY:
            return ReturnResult(already_factory=True, facts={})
        if lc.phase is not Phase.RETURNING:
            self.lifecycle.transition(Phase.RETURNING, detail={"forced": self.opt.force})
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "intake-stopped": self._stop_intake,
            "drained": self._drain,
            "unbonded": self._unbond,
            "reported": self._report,
            "service-stopped": self._stop_service,
            "revoked": self._revoke,
            "erased": self._erase,
        }
        facts: dict[str, Any] = {}
        task = self.progress.begin("equipment return", total=len(STEPS), unit="steps")
        outcome = "stopped"  # by an error, which propagates to say why
        try:
            for number, step in enumerate(STEPS):
                self.progress.update(task, number, label=f"return: {STEP_LABELS[step]}")
                lc = self.lifecycle.load()
                facts = dict(lc.return_facts)
                if step in lc.return_done:
                    continue
                new_facts = steps[step]()
                _crash_point(step)
                if step == "erased":
                    facts |= new_facts
                    self.lifecycle.transition(Phase.FACTORY)
                    log.info(
                        "provisioning.returned",
                        **{k: v for k, v in facts.items() if k != "erased"},
                    )
                    self.progress.update(task, len(STEPS), label="equipment return")
                    outcome = "done"
                    return ReturnResult(already_factory=False, facts=facts)
                self.lifecycle.step_done(step, **new_facts)
        finally:
            self.progress.end(task, outcome)
        raise AssertionError("unreachable: the erase step ends the return")  # pragma: no cover

    # -- the daemon ---------------------------------------------------------------------------

    def _ask(self, command: str, **args: Any) -> Any | None:
        """None when the daemon is not running; other failures propagate."""
        try:
            return self.daemon(command, **args)
        except ControlError as exc:
            if exc.fields.get("unreachable"):
                return None
            raise

    def _depth(self) -> int | None:
        status = self._ask("status")
        return None if status is None else int(status["outbox"]["depth"])

    # -- the steps ----------------------------------------------------------------------------

    def _stop_intake(self) -> dict[str, Any]:
        answer = self._ask("return.stop_intake", timeout_s=60.0)
        return {
            "started": datetime.now(UTC).isoformat(),
            "intake_stopped_by_daemon": answer is not None,
        }

    def _drain(self) -> dict[str, Any]:
        depth = self._depth()
        if depth is None:
            left = self._offline_depth()
            if left == 0:
                return {"unsent_records": 0}
            if not self.opt.force:
                raise DrainIncompleteError(
                    f"{left} records wait for the provider and the gateway service is not running",
                    hint="start it (systemctl start gatewayd) and run 'gatewayctl return' again",
                )
            return {"unsent_records": left, "forced": True}
        total = depth
        deadline = time.monotonic() + self.opt.drain_timeout_s
        task = self.progress.begin(_left(depth), total=total, unit="records acknowledged")
        outcome = "not finished"
        try:
            while depth:
                self.progress.update(task, max(total - depth, 0), total=total, label=_left(depth))
                if time.monotonic() > deadline:
                    if not self.opt.force:
                        raise DrainIncompleteError(
                            f"{depth} of {total} records are not yet acknowledged by the provider",
                            unsent=depth,
                        )
                    log.warning("provisioning.drain_forced", unsent=depth)
                    outcome = f"{depth} records left undelivered (--force)"
                    return {"unsent_records": depth, "forced": True}
                time.sleep(self.opt.poll_s)
                depth = self._depth()
                if depth is None:
                    raise DrainIncompleteError("the gateway service stopped while draining")
                total = max(total, depth)
            self.progress.update(task, total, total=total, label=_left(0))
            outcome = "all delivered"
        finally:
            self.progress.end(task, outcome)
        return {"unsent_records": 0, "drained_records": total}

    def _offline_depth(self) -> int:
        from buffer.outbox import inspect  # noqa: PLC0415 - only needed with the daemon down

        if not self.cfg.outbox_path.exists():
            return 0
        return inspect(self.cfg.outbox_path).depth

    def _unbond(self) -> dict[str, Any]:
        removed = [
            d.address for d in self.devices if d.transport == "ble" and self.unbonder.unbond(d)
        ]
        return {"devices": len(self.devices), "bonds_removed": removed}

    def _report(self) -> dict[str, Any]:
        lc = self.lifecycle.load()
        report_id = lc.return_facts.get("report_id")
        if report_id is None:
            report_id = str(uuid.uuid4())
            self.lifecycle.update(return_facts={**lc.return_facts, "report_id": report_id})
        facts = self.lifecycle.load().return_facts
        body = {
            "event": "equipment-return",
            "version": 1,
            "report_id": report_id,
            "gateway_id": self.cfg.gateway_id,
            "episode": lc.episode_id,
            "started": facts.get("started"),
            "unsent_records": facts.get("unsent_records", 0),
            "forced": bool(facts.get("forced", False)),
            "devices": facts.get("devices", len(self.devices)),
            "bonds_removed": facts.get("bonds_removed", []),
            "to_erase": {
                "keys": self.keystore.present(),
                "files": [p.name for p in self._outbox_files()] + ["identity", "episode"],
            },
            "time": datetime.now(UTC).isoformat(),
        }
        answer = self._ask("provisioning.event", body=body)
        if answer is None:
            return self._report_failed("the gateway service is not running")
        seq = int(answer["seq"])
        deadline = time.monotonic() + self.opt.report_timeout_s
        while time.monotonic() < deadline:
            pending = self._ask("provisioning.pending", seqs=[seq])
            if pending is not None and not pending["pending"]:
                log.info("provisioning.return_report_delivered", seq=seq)
                return {"report_uploaded": True, "report_seq": seq}
            time.sleep(self.opt.poll_s)
        return self._report_failed("the provider did not acknowledge it in time")

    def _report_failed(self, why: str) -> dict[str, Any]:
        if not self.opt.force:
            raise DrainIncompleteError(f"the return report could not be delivered: {why}")
        log.warning("provisioning.return_report_not_delivered", reason=why)
        return {"report_uploaded": False}

    def _stop_service(self) -> dict[str, Any]:
        if self._ask("return.shutdown") is not None:
            self._wait_daemon_gone()
        return {}

    def _wait_daemon_gone(self) -> None:
        deadline = time.monotonic() + self.opt.stop_timeout_s
        while True:
            try:
                if self._ask("status") is None:
                    return
            except ControlError:
                pass  # answering while it closes down (database already closed): still there
            if time.monotonic() > deadline:
                raise DaemonStillRunningError("the gateway service did not stop")
            time.sleep(self.opt.poll_s)

    def _revoke(self) -> dict[str, Any]:
        client = ClientCert(self.layout.client_cert, self.keystore.tls_key_path())
        if not client.cert_file.exists() or not client.key_file.exists():
            return {"revoked": False, "revocation": "no certificate left to revoke"}
        try:
            self.est.request_revocation(client, reason="equipment-return")
        except GatewayError as exc:
            if not self.opt.force:
                raise RevocationError(
                    f"the provider did not confirm the revocation: {exc.message}"
                ) from None
            log.warning("provisioning.revocation_unconfirmed", error=exc.message)
            return {"revoked": False}
        return {"revoked": True}

    def _outbox_files(self) -> list[Path]:
        # The database, its -wal/-shm/-journal and any damaged copy buffer.recovery set aside.
        # Not the chain-epoch marker (one integer, no record): the next episode's chain must
        # start a new epoch, or the provider would see its sequence numbers as a fork.
        ob = self.cfg.outbox_path
        return sorted(
            p for p in ob.parent.glob(f"{ob.name}*") if p.is_file() and p != epoch_marker(ob)
        )

    def _erase(self) -> dict[str, Any]:
        # A power cut after the service was stopped reboots into a running daemon (phase is still
        # "returning"): it must not hold the database while we delete it.
        if self._ask("status") is not None:
            self._ask("return.shutdown")
            self._wait_daemon_gone()
        destroyed = self.keystore.destroy()
        # Root deletes in the service account's directories: never through a link it planted
        # (provisioning.safepath removes links themselves and walks directories by descriptor).
        removed = []
        ob = self.cfg.outbox_path
        outbox_tree = SafeTree(ob.parent)
        # The outbox, its WAL and journal, and its staging folder (outbox.db.staging: the
        # open chunk's encrypted staged readings) all start with the outbox's name.
        for name in outbox_tree.listdir():
            if name.startswith(ob.name) and ob.parent / name != epoch_marker(ob):
                outbox_tree.remove(name)
                removed.append(name)
        state = SafeTree(self.cfg.state_dir)
        for name in state.listdir():
            if name in _KEEP or self.cfg.state_dir / name == epoch_marker(ob):
                continue
            if state.remove(name):
                removed.append(name)
        logs = self._erase_logs()
        journal = self.journal.erase()
        log.info("provisioning.erased", keys=destroyed, files=removed, logs=len(logs))
        return {"erased": {"keys": destroyed, "files": removed, "logs": logs, "journal": journal}}

    def _erase_logs(self) -> list[str]:
        logs_dir = self.opt.logs_dir
        if logs_dir is None or not logs_dir.is_dir():
            return []
        tree = SafeTree(logs_dir)  # service-owned: links removed themselves, never followed
        names = tree.listdir()
        for name in names:
            tree.remove(name)
        return names
