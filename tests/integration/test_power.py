"""Power cuts at home, against NUT's real upsd with the dummy-ups driver (rig/nut.py).

The daemon runs as a process with a ``[power]`` table pointing at the rig's upsd; the UPS state
is scripted by rewriting dummy-ups's file and every step waits for a condition (upsd reporting
the new state, the daemon's snapshot, a record at the provider's verifier), never a fixed sleep.
Power-off is the rig's recording plug-in (rig/power.py), so the test machine stays on.

Bounded: about 40 s for the four tests on a quiet machine; loopback only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control import ControlError, ask
from gateway.power.monitor import MARKER_NAME
from rig import power as rig_power
from rig.devices import expected_reading
from rig.nut import NutRig
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

THERMOMETER = "C0:FF:EE:00:00:61"
OXIMETER = "C0:FF:EE:00:00:62"  # a continuous stream, sealed in 60 s chunks
STREAM = (
    f'\n[[sim_devices]]\nkind = "pulse-oximeter"\naddress = "{OXIMETER}"\ninterval_s = 0.1\n'
    "stream = true\n"
)
STEP_S = 20.0  # generous deadline for each awaited condition (a loaded 2-core machine)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[NutRig]:
    base = tmp_path / "nut"
    base.mkdir()
    with NutRig(base) as nut:
        yield nut


def config(
    rig: Rig, ups: NutRig, *, memory: Path | None = None, stream: bool = False, **power: object
) -> Path:
    path = rig.write_config([])
    settings = {"poll_interval_s": 0.3, "confirm_s": 1.0, "low_runtime_s": 300, **power}
    sims = (
        f'\n[[sim_devices]]\nkind = "thermometer"\naddress = "{THERMOMETER}"\ninterval_s = 0.2\n'
        + (f'memory = "{memory}"\n' if memory else "count = 100000\n")
    )
    path.write_text(
        path.read_text().replace("[uplink]", "[outbox]\nstream_chunk_s = 60\n\n[uplink]")
        + "\n[health]\ninterval_s = 1\n"
        + f'\n[power]\nups = "{ups.ups}"\nhost = "{ups.host}"\nport = {ups.port}\n'
        + 'power_off = "rig-record"\n'
        + "".join(f"{k} = {v}\n" for k, v in settings.items())
        + sims
        + (STREAM if stream else "")
    )
    return path


def status(rig: Rig) -> dict[str, Any]:
    try:
        answer: dict[str, Any] = ask(rig.control_socket, "status", timeout_s=5)
    except (ControlError, OSError):
        return {}
    return answer


def power_of(rig: Rig) -> dict[str, Any]:
    p: dict[str, Any] = status(rig).get("power") or {}
    return p


def events(rig: Rig) -> list[str]:
    return [str(e["event"]) for e in rig.received.events]


def event(rig: Rig, name: str) -> dict[str, Any]:
    return next(dict(e) for e in rig.received.events if e["event"] == name)


def set_and_wait(
    rig: Rig, ups: NutRig, status_flags: str, *, charge_pct: float = 100, runtime_s: float = 1800
) -> None:
    """Script the UPS, wait for upsd to report it and for the daemon to have read it."""
    ups.set_state(status_flags, charge_pct=charge_pct, runtime_s=runtime_s)
    ups.wait_state(STEP_S)
    on_battery = "OB" in status_flags.split()
    wait_for(
        lambda: power_of(rig).get("on_battery") is on_battery, STEP_S, f"the daemon: {status_flags}"
    )


def test_mains_lost_then_restored_is_two_sealed_events_and_shows_in_status(
    rig: Rig, ups: NutRig
) -> None:
    rig.start_provider()
    rig.start_daemon(config(rig, ups))
    wait_for(lambda: power_of(rig).get("state") == "mains", STEP_S, "power: on mains")
    assert status(rig)["alarms"] == [] or "power" not in " ".join(status(rig)["alarms"])

    went = time.monotonic()
    set_and_wait(rig, ups, "OB DISCHRG", charge_pct=87, runtime_s=1500)
    wait_for(lambda: "mains-lost" in events(rig), STEP_S, "mains-lost at the provider")
    wait_for(lambda: "power-on-battery" in status(rig).get("alarms", []), STEP_S, "the alarm")
    snap = status(rig)
    assert snap["power"]["state"] == "battery"
    assert snap["power"]["outage_since"] is not None
    codes = {f["code"] for f in rig.status(rig.base / "gateway.toml")["findings"]}
    assert "power-on-battery" in codes

    set_and_wait(rig, ups, "OL CHRG", charge_pct=88, runtime_s=1500)
    came = time.monotonic()
    wait_for(lambda: "mains-restored" in events(rig), STEP_S, "mains-restored at the provider")
    assert events(rig) == ["mains-lost", "mains-restored"]
    restored = event(rig, "mains-restored")
    assert restored["outage_started"] == event(rig, "mains-lost")["time"]
    assert 0 < float(restored["outage_s"]) <= came - went + 2
    assert rig.received.lanes  # the events travelled as sealed records
    wait_for(lambda: "power-on-battery" not in status(rig).get("alarms", []), STEP_S, "no alarm")
    assert rig.stop_daemon() == 0
    health = [h["power"] for h in rig.received.health_reports if "power" in h]
    assert {p["state"] for p in health} >= {"mains", "battery"}
    assert rig.verifier.summary()["signature_failures"] == 0


def test_low_battery_stops_cleanly_powers_off_and_the_restart_says_power_cut(
    rig: Rig, ups: NutRig, tmp_path: Path
) -> None:
    memory = tmp_path / "thermometer.json"  # a stored-records device: confirms are checkable
    rig.start_provider()
    cfg = config(rig, ups, memory=memory, stream=True)
    rig.start_daemon(cfg)
    wait_for(lambda: len(rig.received.readings) >= 5, STEP_S, "readings before the cut")

    set_and_wait(rig, ups, "OB DISCHRG", charge_pct=60, runtime_s=1200)
    wait_for(lambda: "mains-lost" in events(rig), STEP_S, "mains-lost")
    ups.set_state("OB DISCHRG LB", charge_pct=8, runtime_s=120)
    ups.wait_state(STEP_S)
    assert rig.daemon is not None
    wait_for(lambda: rig.daemon is not None and rig.daemon.poll() is not None, 40, "clean stop")
    assert rig.daemon.returncode == 0, rig.log_text()[-3000:]
    assert len(rig_power.requests(rig.state_dir)) == 1, "power-off was not requested"
    assert (rig.state_dir / MARKER_NAME).exists()
    log = rig.log_text()
    for step in ("power.battery_low_stopping", "power.shutdown_sealed", "outbox.checkpointed",
                 "power.power_off_requested"):
        assert step in log, step
    # The uplink was up: the final record went out before the power-off, nothing is left.
    wait_for(lambda: "shutting-down-on-battery" in events(rig), 10, "the last record")
    assert rig.outbox_depth() == 0
    assert not (rig.state_dir / "outbox.db-wal").exists() or (
        (rig.state_dir / "outbox.db-wal").stat().st_size == 0
    )
    stopped_at = len(rig.received.health_reports)
    # The open stream chunk (60 s, never full in this test) was sealed by the clean stop.
    streamed = [m for _, m in rig.received.readings if m.device.value == OXIMETER]
    assert streamed, "the open stream chunk was not sealed and sent before the power-off"

    # Power returns; systemd starts the daemon again.
    ups.set_state("OL CHRG", charge_pct=9, runtime_s=200)
    ups.wait_state(STEP_S)
    rig.start_daemon(cfg)
    wait_for(lambda: "mains-restored" in events(rig), STEP_S, "mains-restored after restart")
    wait_for(lambda: len(rig.received.health_reports) > stopped_at, STEP_S, "a health report")
    first = rig.received.health_reports[stopped_at]
    assert first["power"]["previous_stop"]["reason"] == "power-cut-shutdown"
    wait_for(lambda: not (rig.state_dir / MARKER_NAME).exists(), STEP_S, "marker removed")

    # Let the device's backlog (readings taken while the router was off) drain, stop cleanly.
    confirmed_before = json.loads(memory.read_text())["confirmed"]
    wait_for(
        lambda: json.loads(memory.read_text())["confirmed"] > confirmed_before + 5,
        STEP_S,
        "readings after the restart",
    )
    wait_for(lambda: rig.outbox_depth() == 0, STEP_S, "the outbox to drain")
    assert rig.stop_daemon() == 0
    wait_for(
        lambda: rig.verifier.summary()["missing"] == 0, STEP_S, "every record at the provider"
    )

    # In order, and no stream-chunk-lost: the stop was clean.
    assert events(rig) == ["mains-lost", "shutting-down-on-battery", "mains-restored"]
    lost, restored = event(rig, "mains-lost"), event(rig, "mains-restored")
    assert restored["outage_started"] == lost["time"]
    confirmed = int(json.loads(memory.read_text())["confirmed"])
    got = {m.device_record_id for _, m in rig.received.readings if m.device.value == THERMOMETER}
    assert set(range(1, confirmed + 1)) <= got, "a confirmed reading was lost"
    for _, m in rig.received.readings:
        if m.device.value != THERMOMETER:
            continue
        exp = expected_reading("thermometer", THERMOMETER, m.device_record_id or -1)
        assert (m.value, m.components) == (exp.value, exp.components)  # nothing altered
    summary = rig.verifier.summary()
    assert summary["chain_breaks"] == 0, summary
    assert summary["signature_failures"] == 0
    assert summary["failures"] == {}


def test_an_unreachable_ups_is_reported_and_recovers(rig: Rig, ups: NutRig) -> None:
    rig.start_provider()
    rig.start_daemon(config(rig, ups))
    wait_for(lambda: power_of(rig).get("state") == "mains", STEP_S, "power: on mains")
    ups.stop_upsd()
    wait_for(lambda: power_of(rig).get("state") == "unreachable", STEP_S, "power: unreachable")
    snap = status(rig)
    assert "ups-unreachable" in snap["alarms"]
    assert "cannot reach upsd" in snap["power"]["error"]
    codes = {f["code"] for f in rig.status(rig.base / "gateway.toml")["findings"]}
    assert "ups-unreachable" in codes
    wait_for(
        lambda: any("ups-unreachable" in h["alarms"] for h in rig.received.health_reports),
        STEP_S,
        "the alarm in a health report at the provider",
    )
    ups.start_upsd()
    wait_for(lambda: power_of(rig).get("state") == "mains", STEP_S, "power: back on mains")
    assert events(rig) == []  # not knowing is not a power cut
    assert rig.stop_daemon() == 0


def test_a_flapping_ups_does_not_flood_alarms(rig: Rig, ups: NutRig) -> None:
    """confirm_s = 0 lets every flap count as an outage: the rate limit (3 per window) holds."""
    rig.start_provider()
    rig.start_daemon(config(rig, ups, confirm_s=0))
    wait_for(lambda: power_of(rig).get("state") == "mains", STEP_S, "power: on mains")
    flaps = 6
    for _ in range(flaps):
        set_and_wait(rig, ups, "OB DISCHRG", runtime_s=1500)
        set_and_wait(rig, ups, "OL", runtime_s=1500)
    wait_for(lambda: "power-flapping" in events(rig), STEP_S, "the flapping event")
    wait_for(lambda: "power-flapping" in status(rig).get("alarms", []), STEP_S, "the alarm")
    assert rig.stop_daemon() == 0
    assert events(rig) == ["mains-lost", "mains-restored"] * 3 + ["power-flapping"], events(rig)
