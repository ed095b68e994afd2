"""The seams between layers (``typing.Protocol``), wired together at one composition root.

The outbox (buffer.outbox.Outbox) and the uplink (gateway.uplink.mqtt.MqttUplink) are concrete
classes tested against a real SQLite file and a real broker; tests fake the driver side with
:mod:`gateway.pipeline.fakes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from gateway.model import Measurement


class Driver(Protocol):
    """A device-side source of measurements.

    ``measurements()`` yields readings as the device hands them over. The pipeline calls
    ``committed()`` once those readings are durable in the outbox; only then may the driver confirm
    to the device (advance a RACP cursor, delete device-side records).
    """

    name: str

    def measurements(self) -> AsyncIterator[Measurement]: ...

    async def committed(self, measurements: Sequence[Measurement]) -> None: ...


class Notifier(Protocol):
    """Service-manager notifications (sd_notify); a no-op outside systemd."""

    def notify(self, *states: str) -> None: ...
