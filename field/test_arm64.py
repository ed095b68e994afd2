"""arm64: the package built on amd64 for arm64, installed in an arm64 Debian 12 under qemu-user.

Emulated timings are printed for orientation only - they say nothing about a router's speed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from field.conftest import COUNTS, TIMINGS, boot_installed, gateway_id
from field.hostrig import HostProvider, gateway_toml, install_enrolment
from field.nspawn import Container, wait_until

ARCH = "arm64"
GW = gateway_id(ARCH)
UNIT = "gatewayd.service"
CONFIG = "/etc/homecare-gateway/gateway.toml"
# A Health Thermometer measurement (0x2A1C): flags 0 (Celsius, no time stamp), FLOAT 370e-1.
TEMPERATURE_HEX = "00720100ff"


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    yield from boot_installed(ARCH, tmp_path_factory, "arm64-smoke")


def _timed(c: Container, name: str, argv: list[str]) -> str:
    started = time.monotonic()
    proc = c.run(argv, timeout_s=300)
    TIMINGS[f"{name} {ARCH} (emulated)"] = round(time.monotonic() - started, 2)
    return proc.stdout


def test_really_arm64(c: Container) -> None:
    assert c.run(["uname", "-m"]).stdout.strip() == "aarch64"
    assert c.run(["dpkg", "--print-architecture"]).stdout.strip() == "arm64"
    site = "/opt/homecare-gateway/current/lib/python3.11/site-packages"
    so = f"{site}/cryptography/hazmat/bindings/_rust.abi3.so"
    head = c.run(["od", "-An", "-tu2", "-j18", "-N2", so]).stdout.strip()
    assert head == "183", f"e_machine {head}: not an aarch64 object"


def test_version_and_decode(c: Container) -> None:
    assert "gatewayd" in _timed(c, "gatewayd --version", ["gatewayd", "--version"])
    out = _timed(c, "gatewayctl decode", ["gatewayctl", "decode", "--uuid", "2a1c",
                                          "--hex", TEMPERATURE_HEX])
    assert "37" in out, out


def test_check_config(c: Container, provider: HostProvider) -> None:
    install_enrolment(c, provider, GW, gateway_toml(GW, provider.broker.port, interval_s=2.0))
    out = _timed(c, "gatewayd --check-config", ["gatewayd", "--config", CONFIG, "--check-config"])
    assert "is valid" in out


def test_shipped_sandbox_under_qemu_user(c: Container) -> None:
    """What an emulated systemd can do: qemu-user cannot set up the unit's namespaces, so the
    shipped unit does not run here (on a real arm64 router it does, as on amd64). Recorded, not
    asserted away: if qemu learns it, this test says so."""
    c.systemctl("start", UNIT, check=False, timeout_s=180)
    journal = c.journal(UNIT, lines=40)
    print(journal)
    if c.show(UNIT, "ActiveState") == "active":
        c.systemctl("stop", UNIT, timeout_s=120)
        return
    assert "Failed to set up IPC namespacing" in journal or "NAMESPACE" in journal, journal
    pytest.xfail("qemu-user: the unit's namespaces cannot be set up under emulation")


def test_runs_30s_and_delivers(c: Container, provider: HostProvider) -> None:
    """30 s of simulated readings, verified by the provider on the host: the daemon as a
    transient notify service of the container's systemd, as the service user, without the
    namespace/seccomp sandbox (which needs a real arm64 kernel interface, see above)."""
    started = time.monotonic()
    c.run(
        [
            "systemd-run", "--unit=gatewayd-emulated", "-p", "Type=notify",
            "-p", "NotifyAccess=main", "-p", "User=homecare-gateway",
            "-p", "Group=homecare-gateway", "-p", "StateDirectory=homecare-gateway",
            "-p", "RuntimeDirectory=homecare-gateway", "-p", "UMask=0077",
            "-p", "TimeoutStartSec=180s", "-E", "PYTHONFAULTHANDLER=1",
            "/opt/homecare-gateway/current/bin/gatewayd", "--config", CONFIG,
        ],
        timeout_s=240,
    )
    unit = "gatewayd-emulated.service"
    TIMINGS[f"start to READY {ARCH} (emulated)"] = round(time.monotonic() - started, 2)
    assert c.show(unit, "ActiveState") == "active", c.journal(unit, lines=40)
    before = len(provider.readings(GW))
    run_until = time.monotonic() + 30
    wait_until(lambda: time.monotonic() >= run_until, 40, "a 30 s run", 1.0)
    assert c.show(unit, "ActiveState") == "active", c.journal(unit, lines=40)
    stop_started = time.monotonic()
    c.systemctl("stop", unit, timeout_s=120)
    TIMINGS[f"systemctl stop {ARCH} (emulated)"] = round(time.monotonic() - stop_started, 2)
    # The pty oximeter's interval readings travel in stream chunks that a clean stop seals: count
    # what the 30 s delivered once the stop has sent the last chunk, not what happened to land
    # inside the window (2 to 15 seen, depending on the load). Emulated: not a rate.
    wait_until(lambda: len(provider.readings(GW)) - before >= 3, 60, "the run's readings", 1.0)
    got = len(provider.readings(GW)) - before
    COUNTS[f"readings verified from a 30 s run {ARCH} (emulated)"] = got
