"""The daemon's answers on the control socket (``gatewayctl`` talks to these).

``status`` for everyone in the socket's group; the provisioning requests (install-check's
delivery tracking, lifecycle events, the equipment return's intake stop and shutdown) only on an
enrolled router. Each handler takes the decoded request and returns JSON-ready data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from buffer.outbox import Outbox
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
    ) -> None:
        self._writer = writer
        self._db = db
        self._outbox = outbox
        self._health = health
        self._links = links
        self._bound = bound
        self._stop = stop
        self.driver_tasks: list[asyncio.Task[None]] = []
        self.durable_seq: dict[str, int] = {}  # device id -> seq of its latest durable reading

    def handlers(self, provisioned: bool) -> dict[str, Handler]:
        out: dict[str, Handler] = {"status": self.status}
        if provisioned:
            out |= {
                "provisioning.devices": self.bound_devices,
                "provisioning.event": self.submit_event,
                "provisioning.pending": self.pending,
                "return.stop_intake": self.stop_intake,
                "return.shutdown": self.shutdown,
            }
        return out

    def note_durable(self, m: Measurement, seq: int) -> None:
        self.durable_seq[str(m.device.value).upper()] = seq

    async def status(self, _: object) -> dict[str, object]:
        await asyncio.to_thread(self._links.refresh)  # a technician asking wants links as of now
        return await self._health.snapshot()

    async def stop_intake(self, _: object) -> dict[str, object]:
        """Equipment return: no more readings; what was handed over is committed first."""
        for t in self.driver_tasks:
            t.cancel()
        await asyncio.gather(*self.driver_tasks, return_exceptions=True)
        await self._writer.drain()
        log.info("provisioning.intake_stopped", drivers=len(self.driver_tasks))
        return {"stopped_drivers": len(self.driver_tasks)}

    async def submit_event(self, request: Any) -> dict[str, object]:
        body = request.get("body")
        if not isinstance(body, dict):
            raise GatewayError("provisioning.event needs a JSON object 'body'")
        seq = await self._writer.submit_payload(wire.RecordKind.EVENT, body, Lane.ALARM)
        log.info("provisioning.event_sealed", kind=body.get("event"), seq=seq)
        return {"seq": seq}

    async def pending(self, request: Any) -> dict[str, object]:
        seqs = [int(s) for s in request.get("seqs", [])]
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
        asyncio.get_running_loop().call_later(0.2, self._stop.set)  # answer first, then stop
        return {"stopping": True}
