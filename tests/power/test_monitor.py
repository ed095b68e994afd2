"""The power monitor with a scripted UPS (a fake query) and a hand-driven clock: what the health
report says, the events it seals (and keeps when they cannot be sealed), the low-battery stop,
and the marker that makes the next start say "power-cut shutdown"."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from gateway import alarms
from gateway.errors import StoreError
from gateway.power import nut
from gateway.power.monitor import MARKER_NAME, MAX_PENDING_EVENTS, PowerMonitor, UpsSettings
from gateway.power.tracker import DebounceRule
from gateway.seal import cjson

T0 = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)
SETTINGS = UpsSettings(
    host="127.0.0.1", port=3493, ups="ups", low_runtime_s=300, rule=DebounceRule(confirm_s=4)
)
PASSED = "Done and passed"
MAINS = nut.UpsReading(frozenset({"OL"}), Decimal(100), Decimal(1800), PASSED)
BATTERY = nut.UpsReading(frozenset({"OB", "DISCHRG"}), Decimal(80), Decimal(1200), PASSED)
LOW = nut.UpsReading(frozenset({"OB", "DISCHRG", "LB"}), Decimal(9), Decimal(120), PASSED)


class ScriptedUps:
    def __init__(self) -> None:
        self.now: nut.UpsReading | Exception = MAINS
        self.t = 0.0

    async def query(self, host: str, port: int, ups: str, timeout_s: float) -> nut.UpsReading:
        if isinstance(self.now, Exception):
            raise self.now
        return self.now


class Harness:
    def __init__(self, state_dir: Path, settings: UpsSettings | None = SETTINGS) -> None:
        self.ups = ScriptedUps()
        self.sealed: list[dict[str, Any]] = []
        self.refuse = False
        self.low_battery_calls = 0
        self.monitor = PowerMonitor(
            settings,
            state_dir=state_dir,
            seal_event=self.seal,
            on_low_battery=self.stop,
            query=self.ups.query,
            monotonic=lambda: self.ups.t,
            now=lambda: T0 + timedelta(seconds=self.ups.t),
        )

    async def seal(self, body: dict[str, Any]) -> int:
        if self.refuse:
            raise StoreError("outbox append failed: disk I/O error")
        cjson.dumps(body)  # what sealing does: no floats in canonical JSON
        self.sealed.append(body)
        return len(self.sealed)

    def stop(self) -> None:
        self.low_battery_calls += 1

    def poll(self, until: float, step: float = 2.0) -> None:
        async def run() -> None:
            while self.ups.t <= until:
                await self.monitor.poll_once()
                self.ups.t += step

        asyncio.run(run())

    def events(self) -> list[str]:
        return [b["event"] for b in self.sealed]


def test_no_ups_configured_is_said_never_guessed(tmp_path: Path) -> None:
    h = Harness(tmp_path, settings=None)
    assert h.monitor.snapshot() == {"state": "unknown", "reason": "no UPS configured"}
    assert h.monitor.alarms() == []
    asyncio.run(h.monitor.run())  # returns at once: nothing to poll


def test_on_mains_the_report_carries_the_ups_state(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.poll(4)
    snap = h.monitor.snapshot()
    assert snap["state"] == "mains"
    assert snap["charge_pct"] == Decimal(100)
    assert snap["runtime_s"] == Decimal(1800)
    assert snap["self_test"] == "passed"
    assert snap["ups"] == "ups@127.0.0.1:3493"
    assert h.monitor.alarms() == []
    assert h.sealed == []


def test_mains_lost_and_restored_are_sealed_once_each(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.poll(4)
    h.ups.now = BATTERY
    h.poll(20)
    assert h.monitor.snapshot()["state"] == "battery"
    assert h.monitor.alarms() == [alarms.POWER_ON_BATTERY]
    h.ups.now = MAINS
    h.poll(40)
    assert h.events() == ["mains-lost", "mains-restored"]
    lost, restored = h.sealed
    assert lost["time"] == (T0 + timedelta(seconds=6)).isoformat()
    assert lost["charge_pct"] == Decimal(80)
    assert restored["outage_s"] == Decimal(16)  # 6 -> 22
    assert restored["outage_started"] == lost["time"]
    assert h.monitor.alarms() == []


def test_an_unreachable_ups_is_a_state_and_an_alarm_logged_once(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ups.now = nut.UpsUnreachableError("cannot reach upsd at 127.0.0.1:3493: Connection refused")
    with capture_logs() as logs:
        h.poll(20)
    snap = h.monitor.snapshot()
    assert snap["state"] == "unreachable"
    assert "Connection refused" in snap["error"]
    assert h.monitor.alarms() == [alarms.UPS_UNREACHABLE]
    assert [e["event"] for e in logs] == ["power.ups_unreachable"]
    h.ups.now = MAINS
    h.poll(24)
    assert h.monitor.snapshot()["state"] == "mains"
    assert h.monitor.alarms() == []


def test_a_failed_self_test_is_an_alarm(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ups.now = nut.UpsReading(frozenset({"OL"}), Decimal(100), Decimal(1800), "Done and error")
    h.poll(2)
    assert h.monitor.alarms() == [alarms.UPS_SELF_TEST_FAILED]


def test_events_that_cannot_be_sealed_are_kept_and_sealed_later_in_order(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.poll(4)
    h.refuse = True
    h.ups.now = BATTERY
    h.poll(20)
    h.ups.now = MAINS
    h.poll(40)
    assert h.sealed == []
    h.refuse = False
    h.poll(42)
    assert h.events() == ["mains-lost", "mains-restored"]


def test_a_low_battery_stops_once_after_two_readings_and_seals_mains_lost_first(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.poll(4)
    h.ups.now = LOW  # straight to low: no time to confirm the outage by the debounce
    h.poll(6)
    assert h.low_battery_calls == 0  # one reading is not enough
    h.poll(8)
    assert h.low_battery_calls == 1
    assert h.events() == ["mains-lost"]
    assert h.monitor.stopping_on_battery
    assert h.monitor.snapshot()["state"] == "battery-low"
    assert alarms.POWER_BATTERY_LOW in h.monitor.alarms()
    h.poll(12)
    assert h.low_battery_calls == 1
    body = h.monitor.shutdown_body()
    cjson.dumps(body)
    assert body["event"] == "shutting-down-on-battery"
    assert body["runtime_s"] == Decimal(120)
    assert body["low_battery_flag"] is True
    assert body["outage_started"] == (T0 + timedelta(seconds=6)).isoformat()


def test_runtime_below_the_threshold_is_low_even_without_lb(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.ups.now = nut.UpsReading(frozenset({"OB"}), Decimal(30), Decimal(299))
    h.poll(4)
    assert h.low_battery_calls == 1


def test_the_marker_makes_the_next_start_say_power_cut_and_is_removed_once_reported(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path)
    h.poll(4)
    h.ups.now = LOW
    h.poll(8)
    h.monitor.write_marker()
    marker = json.loads((tmp_path / MARKER_NAME).read_text())
    assert marker["reason"] == "power-cut-shutdown"

    after = Harness(tmp_path)  # the next start, power back
    after.ups.t = 3600.0
    previous = after.monitor.snapshot()["previous_stop"]
    assert previous["reason"] == "power-cut-shutdown"
    assert previous["outage_started"] == (T0 + timedelta(seconds=6)).isoformat()
    after.poll(3610)
    assert after.events() == ["mains-restored"]
    assert after.sealed[0]["outage_s"] == Decimal(3600 - 6)  # first on-mains reading, restarted
    asyncio.run(after.monitor.reported())
    assert not (tmp_path / MARKER_NAME).exists()
    assert "previous_stop" in after.monitor.snapshot()  # still shown for this run


@pytest.mark.parametrize("content", [b"not json", b"{}", b'{"reason": "power-cut-shutdown"}',
                                     b"x" * 5000])
def test_an_unusable_marker_is_ignored_with_a_log_line(tmp_path: Path, content: bytes) -> None:
    (tmp_path / MARKER_NAME).write_bytes(content)
    with capture_logs() as logs:
        h = Harness(tmp_path)
    assert "previous_stop" not in h.monitor.snapshot()
    assert [e["event"] for e in logs] == ["power.marker_unusable"]


def test_no_clinical_value_or_key_in_the_power_log_lines(tmp_path: Path) -> None:
    """The power log lines carry the UPS state and sequence numbers only."""
    h = Harness(tmp_path)
    with capture_logs() as logs:
        h.poll(4)
        h.ups.now = LOW
        h.poll(8)
    keys = {k for e in logs for k in e}
    assert keys <= {"event", "log_level", "state", "previous", "power_event", "seq", "ups",
                    "runtime_s", "charge_pct", "low_battery_flag"}


def test_a_failing_poll_is_logged_and_the_loop_goes_on(tmp_path: Path) -> None:
    """Knowing the power must never end the daemon's task group (and with it the readings)."""
    h = Harness(tmp_path)
    calls = 0

    async def broken(host: str, port: int, ups: str, timeout_s: float) -> nut.UpsReading:
        nonlocal calls
        calls += 1
        if calls >= 3:
            h.monitor.stopping_on_battery = True  # ends the loop after this poll
        raise RuntimeError("a bug")

    h.monitor._query = broken
    fast = UpsSettings(host="127.0.0.1", port=3493, ups="ups", low_runtime_s=300,
                       poll_interval_s=0.2)
    h.monitor.settings = fast
    with capture_logs() as logs:
        asyncio.run(h.monitor.run())
    assert calls == 3
    assert [e["event"] for e in logs] == ["power.poll_failed"] * 3


def test_events_waiting_are_bounded_and_a_dropped_one_is_counted(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    h.refuse = True
    for i in range(MAX_PENDING_EVENTS + 5):
        h.monitor._keep({"event": f"e{i}"})
    snap = h.monitor.snapshot()
    assert snap["events_waiting"] == MAX_PENDING_EVENTS
    assert snap["events_dropped"] == 5
