"""The seams between layers (``typing.Protocol``), wired together at one composition root.

Tests use the in-package fakes in :mod:`gateway.fakes`; production classes live next to their layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.model import Measurement


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC wall clock (timestamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards (intervals)."""
        ...


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


@dataclass(frozen=True, slots=True)
class Leased:
    """A sealed record taken from the outbox for upload; deleted only by ``ack``."""

    seq: int
    lane: int
    record: bytes


class Uplink(Protocol):
    """Publishes one batch of sealed records; returns once the broker acknowledged it."""

    async def publish_batch(self, payload: bytes) -> None: ...
