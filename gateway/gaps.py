"""Gap ledger: an exact account of every reading the gateway had to refuse.

When the outbox quota is reached, readings are refused (never stored ones deleted). Devices with
stored records keep theirs (the gateway did not confirm them) and are asked again later; readings
from live-only devices are gone, so the provider must be told exactly what it will not receive.
The ledger counts refusals per device and lane with the first and last time, and its report
becomes a GAP record (lane ALARM) that travels like any other sealed record.

A reading the gateway cannot use (:class:`UnusableReading`) is accounted for the same way, but at
once and durably: its GAP record is committed before the device is told the reading was accepted.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.model import Measurement


@dataclass(slots=True)
class _Entry:
    count: int
    first: datetime
    last: datetime


class GapLedger:
    def __init__(self) -> None:
        self._entries: dict[tuple[str, str, int], _Entry] = {}
        self.total_refused = 0

    def note(self, measurements: Sequence[Measurement], lane: int, reason: str) -> None:
        for m in measurements:
            key = (str(m.device), reason, lane)
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(1, m.received_at, m.received_at)
            else:
                entry.count += 1
                entry.last = max(entry.last, m.received_at)
                entry.first = min(entry.first, m.received_at)
            self.total_refused += 1

    def __bool__(self) -> bool:
        return bool(self._entries)

    def take(self, *, ongoing: bool, quota_bytes: int, held_bytes: int) -> dict[str, Any]:
        """The GAP record body for everything noted so far; the ledger starts afresh.

        If the record cannot be stored, hand the body back with :meth:`put_back`.
        """
        body = {
            "type": "gap",
            "version": 1,
            "ongoing": ongoing,
            "quota_bytes": quota_bytes,
            "held_bytes": held_bytes,
            "refused": [
                {
                    "device": device,
                    "reason": reason,
                    "lane": lane,
                    "readings": e.count,
                    "first": e.first.isoformat(),
                    "last": e.last.isoformat(),
                }
                for (device, reason, lane), e in sorted(self._entries.items())
            ],
        }
        self._entries.clear()
        return body

    def put_back(self, body: dict[str, Any]) -> None:
        """Merge a report that could not be stored back into the ledger (nothing is forgotten)."""
        for item in body["refused"]:
            key = (item["device"], item["reason"], item["lane"])
            first = datetime.fromisoformat(item["first"])
            last = datetime.fromisoformat(item["last"])
            entry = self._entries.get(key)
            if entry is None:
                self._entries[key] = _Entry(item["readings"], first, last)
            else:
                entry.count += item["readings"]
                entry.first, entry.last = min(entry.first, first), max(entry.last, last)


@dataclass(frozen=True, slots=True)
class UnusableReading:
    """A reading a device handed over that the gateway cannot turn into a Measurement.

    (An ASTM result with a test code not in the table, a unit not admitted for the test, a header
    that names no analyser...). The device is told "accepted" - refusing would make it resend the
    same message for ever and block every later result - so the provider must be told instead.
    ``error`` is the typed error's fixed message and ``fields`` its structured fields (test code,
    unit): identifiers, never a value. ``raw`` is the record as received; it only ever travels
    sealed (encrypted to the provider), so the laboratory can reconcile the result by hand.
    """

    device: str  # DeviceId as text, or the port's name when the analyser could not be identified
    source: str  # the driver, e.g. "serial.astm.crp"
    error: str
    received_at: datetime
    raw: bytes
    fields: tuple[tuple[str, str], ...] = ()
    lane: int = 1  # the lane the reading would have had (spot measurements)

    def __post_init__(self) -> None:
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")


UNUSABLE_REASON = "unusable-result"


def unusable_gap_body(
    readings: Sequence[UnusableReading], *, quota_bytes: int | None, held_bytes: int
) -> dict[str, Any]:
    """A GAP record body (same shape as the quota one) accounting for unusable readings.

    One entry per reading, with reason ``unusable-result`` and what the gateway could not map.
    """
    return {
        "type": "gap",
        "version": 1,
        "ongoing": False,
        "quota_bytes": quota_bytes,
        "held_bytes": held_bytes,
        "refused": [
            {
                "device": u.device,
                "reason": UNUSABLE_REASON,
                "lane": u.lane,
                "readings": 1,
                "first": u.received_at.isoformat(),
                "last": u.received_at.isoformat(),
                "source": u.source,
                "error": u.error,
                "details": dict(u.fields),
                "raw_record": base64.b64encode(u.raw).decode("ascii"),
            }
            for u in readings
        ],
    }
