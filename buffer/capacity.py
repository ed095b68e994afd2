"""Capacity policy: what the outbox still accepts as it fills up (a pure decision).

The quota caps the sealed bytes the outbox holds. As it fills, the least urgent lanes are refused
first: health telemetry, then continuous-stream chunks, and spot measurements and alarms last.
Nothing already stored is ever deleted to make room. Gap records (what was refused, and when) are
small and always admitted, up to a reserve above the quota, so the provider always learns of a gap.

The bound, and what may exceed the quota: the writer checks every sealed record against its
limit inside the commit transaction (:meth:`CapacityPolicy.fits`), where the records already
queued or in flight are counted too; a record that does not fit is refused (its readings are not
confirmed to the device and appear in the next gap record) and takes no sequence number. So the
outbox never holds more than ``quota_bytes`` of readings, and never more than ``quota_bytes * (1 +
GAP_RESERVE_FRACTION)`` in all: only accounting records (gap records and gateway events) may use
the reserve above the quota. The one exception is the ``stream-chunk-lost`` event sealed once at
start-up (a few hundred bytes), which must exist whatever the level. The admission check at
enqueue time (:meth:`CapacityPolicy.admits`) is only the early, cheap refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

# Fraction of the quota at which each lane stops being accepted (lane numbers as in Lane).
LANE_LIMITS = {0: 1.0, 1: 1.0, 2: 0.95, 3: 0.90}
GAP_RESERVE_FRACTION = 0.05


@dataclass(frozen=True, slots=True)
class CapacityPolicy:
    quota_bytes: int

    def admits(self, lane: int, held_bytes: int) -> bool:
        """May a record of ``lane`` be added while ``held_bytes`` are held?"""
        return held_bytes < self.quota_bytes * LANE_LIMITS.get(lane, 1.0)

    def admits_gap_record(self, held_bytes: int) -> bool:
        return held_bytes < self.quota_bytes * (1.0 + GAP_RESERVE_FRACTION)

    def limit_bytes(self, lane: int, *, accounting: bool) -> float:
        """The most the outbox may hold once a record of ``lane`` is added (module docstring)."""
        if accounting:
            return self.quota_bytes * (1.0 + GAP_RESERVE_FRACTION)
        return self.quota_bytes * LANE_LIMITS.get(lane, 1.0)

    def fits(self, lane: int, held_bytes: int, record_bytes: int, *, accounting: bool) -> bool:
        """May a sealed record of ``record_bytes`` join the ``held_bytes`` already stored?"""
        return held_bytes + record_bytes <= self.limit_bytes(lane, accounting=accounting)

    def level(self, held_bytes: int) -> float:
        return held_bytes / self.quota_bytes if self.quota_bytes else 0.0
