"""The daemon's answers on the control socket (``gatewayctl`` talks to these).

Who may ask what (gateway.control checks the peer's kernel credentials):
- read-only, for root, the service account and the technicians (the socket's group): ``status``,
  ``logs``, ``provisioning.devices``, ``provisioning.pending``;
- root only: ``provisioning.event`` (seals a signed record: one of the defined reports of
  gateway/daemon/reports.py, never caller-made content), ``return.stop_intake`` and
  ``return.shutdown`` (and these two only while an equipment return is in progress: a stop that
  is not a return must not end the daemon with the clean exit systemd does not restart).
The provisioning requests exist only on an enrolled router. Each handler takes the decoded
request and returns JSON-ready data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from buffer.outbox import Outbox
from gateway.control import Authority, Command
from gateway.daemon.reports import checked_report
from gateway.errors import GatewayError
from gateway.model import Measurement
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.health import HealthReporter
from gateway.pipeline.ingest import IngestWriter, Lane
from gateway.seal import wire
from gateway.uplink.linkmon import LinkMonitor
from provisioning import runtime as provisioning

log = structlog.get_logger("gateway.daemon")

Handler = Callable[[Any], Awaitable[Any]]
MAX_PENDING_SEQS = 1000  # provisioning.pending asks about a handful of records


class NotReturningError(GatewayError):
    """A return command arrived while no equipment return is in progress."""

    hint = "start the equipment return with 'gatewayctl return' (it stops the service itself)"


class ControlHandlers:
    """State the handlers share with the daemon: driver tasks, durable seqs, the stop event."""

    def __init__(
        self,
        *,
        writer: IngestWriter,
        db: DatabaseThread,
        outbox: Outbox,
        health: HealthReporter,
        links: LinkMonitor,
        bound: provisioning.BoundDevices,
        stop: asyncio.Event,
        gateway_id: str,
        episode: str | None,
        returning: Callable[[], bool],
        driver_tasks: list[asyncio.Task[None]] | None = None,
        durable_seq: dict[str, int] | None = None,
    ) -> None:
        self._writer = writer
        self._db = db
        self._outbox = outbox
        self._health = health
        self._links = links
        self._bound = bound
        self._stop = stop
        self._gateway_id = gateway_id
        self._episode = episode
        self._returning = returning  # reads the lifecycle file (a thread: file I/O)
        # The running driver tasks (gateway/daemon/intake.py changes the list in place).
        self.driver_tasks: list[asyncio.Task[None]] = (
            driver_tasks if driver_tasks is not None else []
        )
        # device id -> seq of its latest durable reading
        self.durable_seq: dict[str, int] = durable_seq if durable_seq is not None else {}

    def handlers(self, provisioned: bool) -> dict[str, Command]:
        read, root = Authority.READ, Authority.ROOT
        out = {"status": Command(self.status, read)}
        if provisioned:
            out |= {
                "provisioning.devices": Command(self.bound_devices, read),
                "provisioning.pending": Command(self.pending, read),
                "provisioning.event": Command(self.submit_event, root),
                "return.stop_intake": Command(self.stop_intake, root),
                "return.shutdown": Command(self.shutdown, root),
            }
        return out

    async def _require_returning(self, command: str) -> None:
        if not await asyncio.to_thread(self._returning):
            log.warning("control.not_returning", command=command)
            raise NotReturningError(f"{command}: no equipment return is in progress")

    def rebound(self, bound: provisioning.BoundDevices) -> None:
        """Devices were bound or unbound by a signed command: answer with the new list."""
        self._bound = bound

    def note_durable(self, m: Measurement, seq: int) -> None:
        self.durable_seq[str(m.device.value).upper()] = seq

    async def status(self, _: object) -> dict[str, object]:
        await asyncio.to_thread(self._links.refresh)  # a technician asking wants links as of now
        return await self._health.snapshot()

    async def stop_intake(self, _: object) -> dict[str, object]:
        """Equipment return: no more readings; what was handed over is committed first."""
        await self._require_returning("return.stop_intake")
        for t in self.driver_tasks:
            t.cancel()
        await asyncio.gather(*self.driver_tasks, return_exceptions=True)
        await self._writer.drain()
        log.info("provisioning.intake_stopped", drivers=len(self.driver_tasks))
        return {"stopped_drivers": len(self.driver_tasks)}

    async def submit_event(self, request: Any) -> dict[str, object]:
        body = checked_report(
            request.get("body"), gateway_id=self._gateway_id, episode=self._episode
        )
        seq = await self._writer.submit_payload(wire.RecordKind.EVENT, body, Lane.ALARM)
        log.info("provisioning.event_sealed", kind=body["event"], seq=seq)
        return {"seq": seq}

    async def pending(self, request: Any) -> dict[str, object]:
        seqs = request.get("seqs", [])
        if (
            not isinstance(seqs, list)
            or len(seqs) > MAX_PENDING_SEQS
            or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seqs)
        ):
            # An answer, not a dropped connection: the asker learns what was wrong.
            raise GatewayError(f"'seqs' must be a list of at most {MAX_PENDING_SEQS} numbers")
        pending = await self._db.run(self._outbox.pending, seqs)
        return {"pending": sorted(pending)}

    async def bound_devices(self, _: object) -> list[dict[str, object]]:
        listed = self._bound.devices or ()
        durable = self.durable_seq
        seqs = [durable[d.address.upper()] for d in listed if d.address.upper() in durable]
        pending = await self._db.run(self._outbox.pending, seqs)
        out: list[dict[str, object]] = []
        for d in listed:
            seq = durable.get(d.address.upper())
            out.append(
                {
                    "transport": d.transport,
                    "address": d.address,
                    "profile": d.profile,
                    "durable_seq": seq,
                    "delivered": seq is not None and seq not in pending,
                }
            )
        return out

    async def shutdown(self, _: object) -> dict[str, object]:
        # Only a real return ends the daemon this way: it exits 0, which systemd (Restart=
        # on-failure) does not restart - right after a return, a silent gateway otherwise.
        await self._require_returning("return.shutdown")
        asyncio.get_running_loop().call_later(0.2, self._stop.set)  # answer first, then stop
        return {"stopping": True}
