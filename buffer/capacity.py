"""Capacity policy: what the outbox still accepts as it fills up (a pure decision).

The quota caps the sealed bytes the outbox holds. As it fills, the least urgent lanes are refused
first: health telemetry, then continuous-stream chunks, and spot measurements and alarms last.
Nothing already stored is ever deleted to make room. Gap records (what was refused, and when) are
small and always admitted, up to a reserve above the quota, so the provider always learns of a gap.
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

    def level(self, held_bytes: int) -> float:
        return held_bytes / self.quota_bytes if self.quota_bytes else 0.0
