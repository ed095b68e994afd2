"""The whole spine with real pieces: gatewayd process -> mosquitto (mutual TLS) -> verifier."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig.devices import expected_reading
from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration

THERMO = ("thermometer", "C0:FF:EE:00:00:01")
BP = ("blood-pressure", "C0:FF:EE:00:00:02")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def assert_exactly_what_devices_produced(rig: Rig, counts: dict[tuple[str, str], int]) -> None:
    by_device: dict[str, list[int]] = {}
    for _, m in rig.received.readings:
        kind = next(k for k, a in counts if a == m.device.value)
        exp = expected_reading(kind, m.device.value, m.device_record_id or -1)
        assert (m.mdc_code, m.value, m.unit, m.components) == (
            exp.mdc_code,
            exp.value,
            exp.unit,
            exp.components,
        ), f"reading {m.device_record_id} of {kind} altered"
        assert m.device_time is not None
        by_device.setdefault(m.device.value, []).append(m.device_record_id or -1)
    for (_, addr), n in counts.items():
        assert sorted(by_device.get(addr, [])) == list(range(1, n + 1)), f"readings of {addr}"


def test_readings_arrive_verified_complete_and_unaltered_across_a_broker_outage(rig: Rig) -> None:
    counts = {THERMO: 50, BP: 20}
    rig.start_provider()
    config = rig.write_config([(*THERMO, 0.1, counts[THERMO]), (*BP, 0.25, counts[BP])])
    rig.start_daemon(config)
    total = sum(counts.values())

    wait_for(lambda: len(rig.received.readings) >= 8, 30, "the first readings to be verified")
    rig.broker.stop()  # the provider's broker goes away; devices keep measuring
    time.sleep(2.0)
    during = len(rig.received.readings)
    assert rig.daemon is not None
    assert rig.daemon.poll() is None, rig.log_text()
    assert rig.outbox_depth() > 0, "readings taken during the outage must be held in the outbox"
    rig.broker.start()

    wait_for(lambda: len(rig.received.readings) >= total, 60, f"all {total} readings")
    wait_for(lambda: rig.outbox_depth() == 0, 15, "the outbox to drain")
    assert during < total, "the outage did not overlap the readings"

    summary = rig.verifier.summary()
    assert summary["missing"] == 0, summary
    assert summary["signature_failures"] == 0
    assert summary["chain_breaks"] == 0
    assert summary["failures"] == {}
    chain = rig.verifier.chain
    top = max(seq for seq, _ in rig.received.readings)
    assert chain.missing(rig.gateway_id, 1) == []
    assert chain.received(rig.gateway_id, 1) >= top, "record sequence numbers are contiguous"
    assert rig.received.health >= 1, "a health report arrives on its own topic"
    assert len(rig.received.readings) == total
    assert_exactly_what_devices_produced(rig, counts)
    assert rig.stop_daemon() == 0, rig.log_text()
    assert_no_clinical_values_logged(rig)


def assert_no_clinical_values_logged(rig: Rig) -> None:
    """Debug-level JSON log lines carry counts and sequence numbers, never a reading's value.

    Whole numbers would collide with counts, so the check uses the decimal readings (every
    temperature and every blood-pressure mean here has a fraction).
    """
    values = {str(m.value) for _, m in rig.received.readings if m.value is not None}
    values |= {str(c.value) for _, m in rig.received.readings for c in m.components}
    values = {v for v in values if "." in v}
    assert len(values) > 5
    lines = [json.loads(line) for line in rig.log_text().splitlines() if line.startswith("{")]
    assert len(lines) > 10
    for event in lines:
        for key, field in event.items():
            if key == "timestamp":  # "…:36.512Z" would look like 36.5
                continue
            text = json.dumps(field)
            assert not any(v in text for v in values), f"{event['event']}.{key}: clinical value?"


def test_readings_taken_before_the_broker_was_ever_reachable_survive_a_restart(rig: Rig) -> None:
    """Durable from the first second: no broker yet, daemon stopped and started again."""
    counts = {THERMO: 15}
    rig.broker.start()
    rig.broker.stop()  # the port is known, nobody listens
    config = rig.write_config([(*THERMO, 0.05, counts[THERMO])])
    rig.start_daemon(config)
    wait_for(lambda: rig.outbox_depth() >= 5, 30, "readings committed while offline")
    rig.stop_daemon()
    held = rig.outbox_depth()
    assert held >= 1

    rig.start_provider()  # same port as before
    rig.start_daemon(config)  # the sim device starts counting again: a new run of readings
    wait_for(
        lambda: rig.outbox_depth() == 0 and len(rig.received.readings) >= 15,
        60,
        "held and new readings",
    )
    summary = rig.verifier.summary()
    assert summary["missing"] == 0, summary
    assert summary["signature_failures"] == 0
    assert summary["chain_breaks"] == 0
    assert summary["test_readings"] == summary["readings"]  # the rig is a test episode: HTEST
    assert rig.stop_daemon() == 0, rig.log_text()


def test_sigterm_commits_and_exits_cleanly(rig: Rig) -> None:
    rig.start_provider()
    rig.start_daemon(rig.write_config([(*THERMO, 0.05, 1000)]))
    wait_for(lambda: len(rig.received.readings) >= 5, 30, "readings")
    assert rig.stop_daemon() == 0, rig.log_text()
    assert "gateway.stopped" in rig.log_text()


def test_post_quantum_suite_is_switched_on_by_configuration(tmp_path: Path) -> None:
    rig = Rig(tmp_path, pq=True)
    try:
        rig.start_provider()
        rig.start_daemon(rig.write_config([(*THERMO, 0.05, 10)]))
        wait_for(lambda: len(rig.received.readings) >= 10, 30, "readings under the hybrid suite")
        assert rig.verifier.summary()["failures"] == {}
        assert "mlkem768-x25519" in rig.log_text()  # the daemon says which suite it seals with
        assert_exactly_what_devices_produced(rig, {THERMO: 10})
    finally:
        rig.close()


def test_daemon_tells_systemd_ready_watchdog_and_stopping(rig: Rig, tmp_path: Path) -> None:
    """sd_notify: READY=1 once up (even before the broker answers), WATCHDOG=1 every
    WatchdogSec/2 while every loop turns (a broker outage is no stall), STOPPING=1 on SIGTERM."""
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(30)
        rig.broker.start()
        rig.broker.stop()  # no broker: READY must not wait for the uplink
        env = {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}  # pings every 0.5 s
        rig.start_daemon(rig.write_config([(*THERMO, 1.0, 3)]), env)
        first = sock.recv(4096).decode()
        assert "READY=1" in first.splitlines()
        assert any(line.startswith("STATUS=uplink") for line in first.splitlines())
        pings = 0
        while pings < 3:  # each within the socket's 30 s timeout, or recv raises
            pings += "WATCHDOG=1" in sock.recv(4096).decode().splitlines()
        rig.stop_daemon()
        rest = []
        sock.settimeout(2)
        with contextlib.suppress(TimeoutError):
            while True:
                rest.append(sock.recv(4096).decode())
        assert "STOPPING=1" in "\n".join(rest).splitlines()


def test_damaged_outbox_is_kept_replaced_and_reported(rig: Rig) -> None:
    rig.start_provider()
    config = rig.write_config([(*THERMO, 0.05, 5)])
    rig.start_daemon(config)
    wait_for(lambda: len(rig.received.readings) >= 5, 30, "first readings")
    assert rig.stop_daemon() == 0
    db = rig.state_dir / "outbox.db"
    db.write_bytes(b"\x00garbage after a bad flash write" * 100)
    rig.start_daemon(config)
    wait_for(
        lambda: any(r.get("event") == "outbox-replaced" for r in rig.received.events),
        30,
        "the outbox-replaced event",
    )
    event = next(r for r in rig.received.events if r.get("event") == "outbox-replaced")
    assert (event["previous_epoch"], event["new_epoch"]) == (1, 2)
    assert rig.daemon is not None
    assert rig.daemon.poll() is None
    assert any(p.name.startswith("outbox.db.corrupt-") for p in rig.state_dir.iterdir())
    # Lanes go out in priority order (the alarm before health and readings), so a later seq can
    # arrive before an earlier one for a moment: the new epoch must become complete, gap-free.
    wait_for(
        lambda: rig.verifier.chain.missing(rig.gateway_id, 2) == [],
        30,
        "every record of the new epoch",
    )
    assert rig.verifier.summary()["chain_breaks"] == 0
    assert rig.stop_daemon() == 0


def test_broker_refusal_is_retried_alarmed_and_deletes_nothing(rig: Rig) -> None:
    """The ACL denies the topic (PUBACK 0x87): nothing leaves the outbox, the daemon keeps going."""
    rig.start_provider()
    config = rig.write_config([(*THERMO, 0.05, 20)], topic_prefix='"homecare/v0"')
    rig.start_daemon(config)
    wait_for(lambda: "uplink.batch_failed" in rig.log_text(), 30, "the refusal")

    def status() -> dict[str, object]:
        try:
            return rig.status(config)
        except ValueError:  # the control socket is answering a restart of the uplink
            return {}

    def all_stored() -> bool:
        ingest = status().get("ingest")
        return isinstance(ingest, dict) and ingest.get("committed_readings") == 20

    wait_for(all_stored, 60, "all 20 readings stored")
    assert rig.daemon is not None
    assert rig.daemon.poll() is None
    assert '"kind": "refused"' in rig.log_text()
    now = status()
    outbox, uplink = now["outbox"], now["uplink"]
    assert isinstance(outbox, dict)
    assert isinstance(uplink, dict)
    # Every record sealed is still in the outbox (last_seq counts them: one epoch, none acked).
    assert uplink["delivered_records"] == 0
    assert rig.outbox_depth() >= outbox["last_seq"] > 0
    assert rig.received.readings == []
    assert rig.stop_daemon() == 0
