"""The neighbours' set is capped: a street of health devices (or one rotating random addresses)
cannot grow the gateway's memory; beyond the cap they are only flagged as more."""

from __future__ import annotations

from drivers.ble.discovery import MAX_NEIGHBOURS, AdvertiserTally

HEALTH_THERMOMETER = "00001809-0000-1000-8000-00805f9b34fb"


def test_neighbours_past_the_cap_are_flagged_not_remembered() -> None:
    tally = AdvertiserTally(["A4:C1:38:00:00:01"])
    for i in range(MAX_NEIGHBOURS * 4):
        tally.saw(f"C0:{i >> 16 & 0xFF:02X}:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}:00:00",
                  [HEALTH_THERMOMETER])
    assert len(tally.ignored) == MAX_NEIGHBOURS
    assert tally.snapshot() == {"ignored_advertisers": MAX_NEIGHBOURS, "beyond_cap": True}
    tally.saw("A4:C1:38:00:00:01", [HEALTH_THERMOMETER])  # ours is never counted
    assert "A4:C1:38:00:00:01" not in tally.ignored
