"""gatewayctl against a running daemon over the control socket (status, exit codes, access).

The support bundle's markers test is in test_commands_live.py, with every other command.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.rig import Rig, rig_fixture, wait_for

pytestmark = pytest.mark.integration
THERMO = ("thermometer", "C0:FF:EE:00:00:31", 0.5, 1000)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from rig_fixture(tmp_path)


def gatewayctl(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "gateway.cli.main", *args]
    if user is not None:  # drop to another user, without its groups
        cmd = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_status_shows_a_healthy_gateway_and_exits_0(rig: Rig) -> None:
    rig.start_provider()
    config = rig.write_config([THERMO])
    rig.start_daemon(config)
    wait_for(lambda: len(rig.received.readings) >= 2, 30, "readings")
    proc = gatewayctl("status", "--config", str(config))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "uplink       connected" in proc.stdout
    assert "btmac:C0:FF:EE:00:00:31" in proc.stdout
    as_json = json.loads(gatewayctl("status", "--config", str(config), "--json").stdout)
    assert as_json["uplink"]["state"] == "connected"
    assert as_json["devices"][0]["silent"] is False
    # Every critical loop is watched (the watchdog's view), each driver by name, none stalled.
    loops = as_json["loops"]
    assert {"outbox-writer", "uplink", "driver.sim.thermometer"} <= set(loops)
    assert not any(state["stalled"] for state in loops.values()), loops
    mode = stat.S_IMODE(os.stat(rig.control_socket).st_mode)
    assert mode == 0o660


def test_status_says_unhealthy_when_the_broker_is_gone(rig: Rig) -> None:
    rig.broker.start()
    rig.broker.stop()
    config = rig.write_config([THERMO])
    rig.start_daemon(config)
    wait_for(rig.control_socket.exists, 30, "the control socket")
    proc = gatewayctl("status", "--config", str(config))
    assert proc.returncode == 1
    assert "cannot reach broker" in proc.stdout


def test_status_without_a_daemon_exits_3_with_a_hint(rig: Rig) -> None:
    rig.broker.start()
    rig.broker.stop()
    proc = gatewayctl("status", "--config", str(rig.write_config([THERMO])))
    assert proc.returncode == 3
    assert "not running" in proc.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_socket_refuses_a_user_outside_the_group(rig: Rig) -> None:
    rig.broker.start()
    rig.broker.stop()
    config = rig.write_config([THERMO])
    rig.start_daemon(config)
    wait_for(rig.control_socket.exists, 30, "the control socket")
    # Let "nobody" reach the socket file itself, so only the socket's own mode decides.
    for folder in (rig.control_socket.parent, *rig.control_socket.parents):
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | 0o001)
    config.chmod(0o644)
    for f in rig.base.rglob("*"):
        if f.is_file() and f.suffix in {".toml"}:
            f.chmod(0o644)
    proc = gatewayctl("status", "--config", str(config), user="nobody")
    assert proc.returncode == 3
    assert "permission denied" in proc.stderr.lower(), proc.stderr


def test_devices_uplink_test_and_selftest_against_a_running_daemon(rig: Rig) -> None:
    rig.start_provider()
    config = rig.write_config([THERMO])
    rig.start_daemon(config)
    wait_for(lambda: len(rig.received.readings) >= 1, 30, "a reading")

    devices = gatewayctl("devices", "--config", str(config))
    assert devices.returncode == 0, devices.stdout + devices.stderr
    assert "btmac:C0:FF:EE:00:00:31" in devices.stdout

    uplink = gatewayctl("uplink-test", "--config", str(config), "--json")
    assert uplink.returncode == 0, uplink.stdout + uplink.stderr
    checks = {c["name"]: c for c in json.loads(uplink.stdout)}
    assert checks["broker"]["ok"] is True
    assert "CONNACK" in checks["broker"]["detail"]
    # The test used its own client id: the daemon's connection is still up and delivering.
    before = len(rig.received.readings)
    wait_for(lambda: len(rig.received.readings) > before, 30, "readings after the uplink test")

    selftest = gatewayctl("selftest", "--config", str(config), "--json")
    results = {c["name"]: c["ok"] for c in json.loads(selftest.stdout)}
    assert results["signing key"] is True
    assert results["provider key"] is True
    assert results["outbox"] is True
    assert results["daemon"] is True
    # Without chrony here the clock check may fail; the exit code must then say so.
    assert selftest.returncode == (0 if all(results.values()) else 1)


def test_uplink_test_reports_an_unreachable_broker(rig: Rig) -> None:
    rig.broker.start()
    rig.broker.stop()
    proc = gatewayctl("uplink-test", "--config", str(rig.write_config([THERMO])))
    assert proc.returncode == 1
    assert "FAIL  broker" in proc.stdout
