"""The upload task: outbox -> batches -> broker, deleting rows only on PUBACK.

Batches are leased in lane/sequence order and several may be in flight (the broker acknowledges
each on its own). A lost connection or a refused batch ends the pump: every lease is released so
the same records go out again after reconnecting. Duplicates are fine (the provider de-duplicates);
a record is never deleted before the broker acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

import structlog

from buffer.outbox import Outbox, StoredRecord
from gateway.errors import GatewayError, UploadError
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.ingest import Lane
from gateway.seal import wire
from gateway.uplink.mqtt import ConnectionLostError, MqttUplink
from gateway.uplink.retry import FailureKind, classify, connect_retrying

log = structlog.get_logger("gateway.upload")


@dataclass(frozen=True, slots=True)
class UploadSettings:
    topic: str  # observation, gap and event records
    health_topic: str  # health records (lane HEALTH) have a topic of their own
    batch_max_records: int = 500
    batch_max_bytes: int = 256 * 1024
    window: int = 4  # batches in flight at once
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 60.0


_TLS_ALERT = " alert "  # OpenSSL's words for a peer's TLS alert: "sslv3 alert certificate revoked"


class UploadLoop:
    def __init__(
        self,
        outbox: Outbox,
        db: DatabaseThread,
        uplink: MqttUplink,
        settings: UploadSettings,
        wake: asyncio.Event,
    ) -> None:
        self._outbox = outbox
        self._db = db
        self._uplink = uplink
        self._settings = settings
        self._wake = wake
        self.state = "starting"
        self.delivered_records = 0
        self.delivered_batches = 0
        self.last_error: str | None = None
        # The last error since the last good connection in which the broker's TLS stack said
        # why it refused us (an alert such as "certificate revoked"). Under TLS 1.3 the alert
        # races the socket's close, so one attempt names it and the next may see a bare EOF;
        # keeping it lets gatewayctl status name the cause whichever attempt came last.
        self.last_tls_alert: str | None = None
        self.refused = False  # the broker said no (ACL, quota, identity): someone must act
        self.outside_vpn = False  # the route to the broker does not go through the VPN
        self.last_progress = 0.0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.last_progress = loop.time()
        while True:
            self.state = "connecting"
            async for attempt in connect_retrying(
                self._settings.backoff_initial_s, self._settings.backoff_max_s
            ):
                with attempt:
                    self.last_progress = loop.time()  # trying is progress; a hang is not
                    try:
                        await self._uplink.connect()
                    except UploadError as exc:
                        self.last_error = exc.one_line()
                        if _TLS_ALERT in self.last_error.lower():
                            self.last_tls_alert = self.last_error
                        kind = classify(exc).kind
                        self.refused = kind is FailureKind.REFUSED
                        self.outside_vpn = kind is FailureKind.OUTSIDE_VPN
                        raise
            self.state = "connected"
            self.connected.set()
            self.last_error = self.last_tls_alert = None
            self.refused = self.outside_vpn = False
            log.info("uplink.connected", host=self._uplink.settings.host)
            try:
                await self._pump()
            except GatewayError as exc:  # upload failures, and a database error while leasing
                decision = classify(exc)
                self.last_error = exc.one_line()
                self.refused = decision.kind is FailureKind.REFUSED
                log.warning("uplink.batch_failed", error=exc.message, kind=str(decision.kind))
                wait_s = max(decision.min_wait_s, self._settings.backoff_initial_s)
            else:  # pragma: no cover - _pump only returns by raising
                wait_s = 0.0
            finally:
                self.connected.clear()
                await self._db.run(self._outbox.release_all)
                await self._uplink.close()
            self.state = "backoff"
            await asyncio.sleep(wait_s)

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[int]] = set()
        lost: asyncio.Future[bool] = asyncio.ensure_future(self._uplink.lost.wait())
        try:
            while True:
                while len(in_flight) < self._settings.window:
                    batch = await self._db.run(
                        self._outbox.lease,
                        self._settings.batch_max_records,
                        self._settings.batch_max_bytes,
                    )
                    if not batch:
                        break
                    in_flight.add(asyncio.create_task(self._send(batch), name="upload.batch"))
                waiting: set[asyncio.Future[Any]] = {lost, *in_flight}
                wake: asyncio.Future[Any] | None = None
                if not in_flight:
                    # Idle: sleep until the writer commits something (or a second passes).
                    self.last_progress = loop.time()
                    self._wake.clear()
                    wake = asyncio.ensure_future(self._wake.wait())
                    waiting.add(wake)
                done, _ = await asyncio.wait(
                    waiting, timeout=1.0, return_when=asyncio.FIRST_COMPLETED
                )
                if wake is not None:
                    wake.cancel()
                if lost in done or not self._uplink.alive():
                    # Whatever is still in flight was not acknowledged: it is released and sent
                    # again after reconnecting (a duplicate at worst, never a loss). alive() also
                    # catches a network thread that ended without telling us.
                    raise ConnectionLostError("connection lost")
                for task in in_flight & done:
                    in_flight.discard(task)
                    self.delivered_records += task.result()  # raises the batch's UploadError
                    self.delivered_batches += 1
                    self.last_progress = loop.time()
        finally:
            lost.cancel()
            for task in in_flight:
                task.cancel()
            for task in in_flight:
                with contextlib.suppress(asyncio.CancelledError, UploadError):
                    await task

    async def _send(self, batch: list[StoredRecord]) -> int:
        payload = wire.encode_batch([r.record for r in batch])
        topic = (
            self._settings.health_topic if batch[0].lane == Lane.HEALTH else self._settings.topic
        )
        await self._uplink.publish(topic, payload)
        # The broker has the batch: now, and only now, the rows may go.
        await self._db.run(self._outbox.ack, [r.seq for r in batch])
        log.debug("uplink.batch_acked", records=len(batch), first_seq=batch[0].seq)
        return len(batch)
