"""Over a real WireGuard tunnel between network namespaces: long outage, silent partition.

The gateway runs in a "home" namespace, mosquitto and the provider in a "provider" namespace,
joined only by wireguard-go. Outages drop tunnel traffic with iptables inside the home namespace
(DROP: no RST, no ICMP - the connection goes silent, as when a 5G cell or a VPN concentrator
vanishes). Bounded: VPN_OUTAGE_S (default 20) seconds of outage.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.integration import netns
from tests.integration.rig import Rig, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def vpn_rig(tmp_path: Path) -> Iterator[Rig]:
    reason = netns.available()
    if reason:
        pytest.skip(reason)
    vpn = netns.VpnRig(tmp_path)
    vpn.up()
    rig = Rig(tmp_path, vpn=vpn)
    try:
        yield rig
    finally:
        rig.close()
        vpn.down()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def log_time(rig: Rig, event: str) -> datetime | None:
    for line in rig.log_text().splitlines():
        if line.startswith("{") and f'"event": "{event}"' in line:
            return datetime.fromisoformat(json.loads(line)["timestamp"])
    return None


def test_long_outage_over_the_vpn_delivers_everything_in_order_and_stays_quiet(
    vpn_rig: Rig,
) -> None:
    rig, vpn = vpn_rig, vpn_rig.vpn
    assert vpn is not None
    outage_s = float(os.environ.get("VPN_OUTAGE_S", "20"))
    thermo = ("thermometer", "C0:FF:EE:00:00:41", 0.1, int(10 * (outage_s + 10)))
    bp = ("blood-pressure", "C0:FF:EE:00:00:42", 0.5, int(2 * (outage_s + 10)))
    total = thermo[3] + bp[3]
    rig.start_provider()
    wan = vpn.home_wan_interface
    config = rig.write_config(
        [thermo, bp], vpn_interface=f'"{vpn.wg_home}"', wan_interfaces=f'["{wan}"]'
    )
    rig.start_daemon(config)
    wait_for(lambda: len(rig.received.readings) >= 10, 60, "the first readings over the VPN")
    assert rig.daemon is not None
    handshake = vpn.handshake_age_s()
    assert handshake is not None
    links = rig.status(config)["links"]  # the link monitor, through gatewayctl status
    assert links["vpn"]["state"] == "up", links
    assert 0 <= float(links["vpn"]["handshake_age_s"]) < 60
    assert links["vpn"]["route_via_vpn"] is True
    assert links["wan-route"] == {"interface": wan, "kind": "modem", "carries": "vpn"}, links

    vpn.black_hole()
    cpu_before, began = cpu_seconds(rig.daemon.pid), time.monotonic()
    time.sleep(outage_s)
    cpu_during = cpu_seconds(rig.daemon.pid) - cpu_before
    held = rig.outbox_depth()
    during = len(rig.received.readings)
    vpn.restore()
    outage = time.monotonic() - began

    wait_for(lambda: len(rig.received.readings) >= total, 120, f"all {total} readings")
    wait_for(lambda: rig.outbox_depth() == 0, 30, "the outbox to drain")
    print(
        f"\nVPN outage {outage:.1f} s: daemon CPU {cpu_during:.2f} s "
        f"({100 * cpu_during / outage:.1f} % of one core), {held} records held, "
        f"{during} of {total} readings had arrived before the tunnel came back"
    )
    assert held > 0
    assert during < total
    # A reconnect busy loop would burn a whole core; the daemon must wait quietly.
    assert cpu_during < 0.5 * outage
    by_device: dict[str, list[int]] = {}
    for _, m in rig.received.readings:  # arrival order
        by_device.setdefault(m.device.value, []).append(m.device_record_id or -1)
    for addr, ids in by_device.items():
        assert ids == sorted(ids), f"{addr}: readings arrived out of order"
        assert ids == list(range(1, len(ids) + 1)), f"{addr}: readings missing"
    assert rig.verifier.summary()["missing"] == 0
    assert rig.stop_daemon() == 0


def test_silent_partition_then_kill_9_loses_nothing_and_is_detected(
    vpn_rig: Rig, tmp_path: Path
) -> None:
    rig, vpn = vpn_rig, vpn_rig.vpn
    assert vpn is not None
    memory = tmp_path / "thermometer-memory.json"
    rig.start_provider()
    config = rig.write_config([])
    config.write_text(
        config.read_text()
        + '\n[[sim_devices]]\nkind = "thermometer"\naddress = "C0:FF:EE:00:00:43"\n'
        f'interval_s = 0.05\nmemory = "{memory}"\n'
    )
    rig.start_daemon(config)
    wait_for(lambda: len(rig.received.readings) >= 10, 60, "the first readings")

    vpn.black_hole()
    cut = datetime.now().astimezone()
    wait_for(lambda: log_time(rig, "uplink.batch_failed") is not None, 60, "half-open detection")
    detected = log_time(rig, "uplink.batch_failed")
    assert detected is not None
    detection_s = (detected - cut).total_seconds()
    time.sleep(1.0)
    assert rig.stop_daemon(signal.SIGKILL) == -signal.SIGKILL
    held = rig.outbox_depth()
    vpn.restore()

    rig.start_daemon(config)
    time.sleep(2.0)
    wait_for(lambda: rig.outbox_depth() == 0, 60, "everything held to be delivered")
    assert rig.stop_daemon() == 0
    time.sleep(0.5)
    confirmed = int(json.loads(memory.read_text())["confirmed"])
    got = {m.device_record_id for _, m in rig.received.readings}
    print(
        f"\nsilent partition: half-open connection detected after {detection_s:.1f} s "
        f"(keepalive 5 s); {held} records held across kill -9; {confirmed} readings confirmed"
    )
    assert set(range(1, confirmed + 1)) <= got, "a reading confirmed to the device was lost"
    assert detection_s < 3 * 5 + 5  # within two keepalive periods (+ slack for a busy machine)
    summary = rig.verifier.summary()
    assert summary["missing"] == 0, summary
    assert summary["chain_breaks"] == 0


def test_nothing_leaves_when_the_route_bypasses_the_vpn(vpn_rig: Rig) -> None:
    """The configured VPN interface is not the one the kernel routes through: no connection."""
    rig = vpn_rig
    rig.start_provider()
    config = rig.write_config(
        [("thermometer", "C0:FF:EE:00:00:44", 0.1, 50)], vpn_interface='"wg-elsewhere"'
    )
    rig.start_daemon(config)
    wait_for(lambda: "uplink.connect_failed" in rig.log_text(), 30, "the refused connection")
    time.sleep(1.0)
    status = rig.status(config)
    assert "vpn-down" in status["alarms"]
    assert rig.outbox_depth() > 0
    assert rig.received.readings == []
    broker_log = (rig.base / "broker" / "mosquitto.log").read_text()
    assert rig.gateway_id not in broker_log, "the gateway must not even have connected"
    assert rig.stop_daemon() == 0
