"""One GHS observation characteristic of one connection: notified values in, decoded
observations (or typed errors) out. The pure core the BLE session pumps 0x2B8B / 0x2BDD into.

``feed`` never raises: each outcome is a ``HealthObservation`` to map (``readings()``, and
``unusable()`` to account for), or a ``DecodeError`` to log and count (a ``SegmentationError``
when segments were lost or refused, a plain ``DecodeError`` when a whole body is malformed).
Bounded by the reassembler's caps (drivers/ble/ghs_segment.py).
"""

from __future__ import annotations

from drivers.ble.ghs import (
    LIVE_HEALTH_OBSERVATIONS_UUID,
    STORED_HEALTH_OBSERVATIONS_UUID,
    HealthObservation,
)
from drivers.ble.ghs_segment import MAX_BODY_BYTES, MAX_SEGMENTS, Reassembler
from gateway.errors import DecodeError


class ObservationStream:
    __slots__ = ("_reassembler", "stored")

    def __init__(self, *, stored: bool, max_body_bytes: int = MAX_BODY_BYTES,
                 max_segments: int = MAX_SEGMENTS) -> None:
        self.stored = stored
        uuid16 = STORED_HEALTH_OBSERVATIONS_UUID if stored else LIVE_HEALTH_OBSERVATIONS_UUID
        self._reassembler = Reassembler(uuid16, max_body_bytes=max_body_bytes,
                                        max_segments=max_segments)

    @property
    def uuid16(self) -> int:
        return self._reassembler.uuid16

    def reset(self) -> None:
        """A new connection: forget a body left half-received by the last one."""
        self._reassembler.reset()

    def feed(self, payload: bytes) -> tuple[HealthObservation | DecodeError, ...]:
        out: list[HealthObservation | DecodeError] = []
        for item in self._reassembler.feed(payload):
            if isinstance(item, DecodeError):
                out.append(item)
                continue
            try:
                out.append(HealthObservation.decode_body(item, stored=self.stored))
            except DecodeError as err:
                out.append(err)
        return tuple(out)
