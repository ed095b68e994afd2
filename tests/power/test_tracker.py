"""The debounce rule of gateway/power/tracker.py, pinned with a hand-driven clock: blips raise
nothing, a confirmed outage is one "mains lost" and one "mains restored" with its length, and a
flapping UPS costs at most ``2 * max_outages + 2`` events per window however fast it flaps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.power.tracker import DebounceRule, PowerEvent, PowerTracker, Supply

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
RULE = DebounceRule(confirm_s=10.0, window_s=600.0, max_outages=3)


class Feed:
    """Readings at given monotonic seconds; collects every event."""

    def __init__(self, tracker: PowerTracker) -> None:
        self.tracker = tracker
        self.events: list[PowerEvent] = []

    def at(self, t: float, on_battery: bool | None) -> list[PowerEvent]:
        new = self.tracker.observe(on_battery, t, T0 + timedelta(seconds=t))
        self.events += new
        return new

    def hold(self, start: float, end: float, on_battery: bool, step: float = 2.0) -> None:
        t = start
        while t <= end:
            self.at(t, on_battery)
            t += step

    def names(self) -> list[str]:
        return [e.event for e in self.events]


def flapping(tracker: PowerTracker) -> bool:
    return tracker.flapping  # read afresh (mypy would keep the narrowed value of an attribute)


def test_starting_on_mains_is_no_event() -> None:
    f = Feed(PowerTracker(RULE))
    f.hold(0, 60, on_battery=False)
    assert f.events == []
    assert f.tracker.supply is Supply.MAINS


def test_an_outage_is_confirmed_after_confirm_s_and_restored_with_its_length() -> None:
    f = Feed(PowerTracker(RULE))
    f.hold(0, 10, on_battery=False)
    f.hold(12, 20, on_battery=True)  # 8 s on battery: not yet
    assert f.events == []
    f.at(22, True)  # 10 s since the first on-battery reading at 12
    assert f.events == [PowerEvent("mains-lost", T0 + timedelta(seconds=12))]
    assert f.tracker.outage_since == T0 + timedelta(seconds=12)
    f.hold(24, 100, on_battery=True)
    f.hold(102, 112, on_battery=False)
    assert f.names() == ["mains-lost", "mains-restored"]
    restored = f.events[1]
    assert restored.at == T0 + timedelta(seconds=102)
    assert restored.outage_s == 90.0  # 12 -> 102
    assert restored.outage_started == T0 + timedelta(seconds=12)
    assert f.tracker.outage_since is None


def test_blips_shorter_than_confirm_s_raise_nothing_and_are_counted() -> None:
    f = Feed(PowerTracker(RULE))
    f.at(0, False)
    t = 2.0
    for _ in range(50):  # 50 blips of 4 s on battery, 4 s on mains
        f.hold(t, t + 4, on_battery=True)
        f.hold(t + 6, t + 10, on_battery=False)
        t += 12
    assert f.events == []
    assert f.tracker.blips == 50
    assert f.tracker.supply is Supply.MAINS


def test_a_flapping_ups_costs_a_bounded_number_of_events_per_window() -> None:
    f = Feed(PowerTracker(RULE))
    f.at(0, False)
    t = 2.0
    for _ in range(20):  # 20 confirmed outages of 12 s, 12 s apart, within 600 s
        f.hold(t, t + 12, on_battery=True)
        f.hold(t + 14, t + 26, on_battery=False)
        t += 28
    names = f.names()
    assert names[:6] == ["mains-lost", "mains-restored"] * 3
    assert names[6:] == ["power-flapping"], names
    assert f.events[6].outages_in_window == 4
    assert flapping(f.tracker)
    assert len(f.events) <= 2 * RULE.max_outages + 2
    # A whole quiet window later: one event closes the period with what was not sealed.
    f.hold(t, t + 700, on_battery=False, step=10)
    assert f.names()[-1] == "power-flapping-ended"
    ended = f.events[-1]
    assert ended.outages_not_sealed == 17
    assert ended.supply is Supply.MAINS
    assert not flapping(f.tracker)
    # ... and the next outage is sealed one by one again.
    t += 710
    f.hold(t, t + 12, on_battery=True)
    assert f.names()[-1] == "mains-lost"


def test_flapping_that_ends_on_battery_still_seals_the_restore() -> None:
    f = Feed(PowerTracker(DebounceRule(confirm_s=1, window_s=100, max_outages=1)))
    f.at(0, False)
    f.hold(1, 3, on_battery=True)
    f.hold(4, 6, on_battery=False)
    f.hold(7, 9, on_battery=True)  # the second outage in the window: flapping
    assert f.names() == ["mains-lost", "mains-restored", "power-flapping"]
    f.hold(10, 120, on_battery=True, step=5)  # quiet (no new outage) for a window, on battery
    assert f.names()[-1] == "power-flapping-ended"
    assert f.events[-1].supply is Supply.BATTERY
    f.hold(121, 123, on_battery=False)
    assert f.names()[-1] == "mains-restored"


def test_a_low_battery_confirms_the_outage_at_once() -> None:
    f = Feed(PowerTracker(RULE))
    f.at(0, False)
    f.at(2, True)
    assert f.events == []
    events = f.tracker.confirm_battery_now(3, T0 + timedelta(seconds=3))
    assert [e.event for e in events] == ["mains-lost"]
    assert events[0].at == T0 + timedelta(seconds=2)  # the first on-battery reading
    assert f.tracker.confirm_battery_now(4, T0 + timedelta(seconds=4)) == []


def test_an_outage_carried_over_a_power_cut_shutdown_is_restored_with_its_whole_length() -> None:
    went = T0 - timedelta(minutes=45)
    f = Feed(PowerTracker(RULE, outage_since=went))
    assert f.tracker.supply is Supply.BATTERY
    f.hold(0, 10, on_battery=False)
    assert f.names() == ["mains-restored"]
    assert f.events[0].outage_started == went
    assert f.events[0].outage_s == 45 * 60.0


def test_unknown_readings_change_nothing() -> None:
    f = Feed(PowerTracker(RULE))
    f.at(0, False)
    f.hold(2, 100, on_battery=True)
    for t in range(101, 200):
        f.at(t, None)
    assert f.names() == ["mains-lost"]
    assert f.tracker.supply is Supply.BATTERY
