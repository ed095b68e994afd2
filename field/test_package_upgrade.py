"""amd64: upgrading from the previous package version with records waiting in the outbox.

The previous version is built from git (conftest.PREVIOUS_REF, version PREVIOUS_VERSION), installed
by apt on a fresh router and run under systemd with a static configuration (keys in
/etc/homecare-gateway, a pty oximeter). The broker is then made unreachable for this router
(a closed port in gateway.toml) so readings pile up in the outbox; the package built from this
tree is installed over it (postinst restarts the service); with the broker back, every record
is delivered. The session provider's summary (test_service.py, last) proves no gap in this
router's sequence numbers or hash chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from field.conftest import (
    PREVIOUS_VERSION,
    UPGRADE_GATEWAY,
    boot_installed,
    deb_for,
    previous_deb,
)
from field.hostrig import CONFIG_DIR, HostProvider, gateway_toml, install_enrolment
from field.nspawn import Container, wait_until

ARCH = "amd64"
GW = UPGRADE_GATEWAY
UNIT = "gatewayd.service"
CLOSED_PORT = 9  # discard: nothing listens on loopback here


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    yield from boot_installed(ARCH, tmp_path_factory, "amd64-upgrade",
                              deb=previous_deb(ARCH, tmp_path_factory))  # fmt: skip


def outbox(c: Container) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(c.run(["gatewayctl", "outbox", "--json"]).stdout)
    return data


def installed_version(c: Container) -> str:
    return c.run(["dpkg-query", "-W", "-f=${Version}", "homecare-gateway"]).stdout.strip()


def test_previous_version_runs_and_delivers(c: Container, provider: HostProvider) -> None:
    assert installed_version(c) == PREVIOUS_VERSION
    install_enrolment(c, provider, GW, gateway_toml(GW, provider.broker.port))
    c.systemctl("start", UNIT)
    assert c.show(UNIT, "ActiveState") == "active", c.journal(UNIT)
    wait_until(lambda: len(provider.readings(GW)) >= 2, 60, "readings from the previous version")


def test_upgrade_with_a_full_outbox_keeps_every_record(
    c: Container, provider: HostProvider, tmp_path_factory: pytest.TempPathFactory
) -> None:
    body = c.run(["cat", f"{CONFIG_DIR}/gateway.toml"]).stdout
    port_line = f"port = {provider.broker.port}\n"
    assert port_line in body
    c.write_file(f"{CONFIG_DIR}/gateway.toml", body.replace(port_line, f"port = {CLOSED_PORT}\n"),
                 0o640, "root:homecare-gateway")  # fmt: skip
    c.systemctl("restart", UNIT)
    wait_until(lambda: outbox(c)["undelivered_records"] >= 3, 90, "records waiting in the outbox")
    before = outbox(c)
    print(f"before the upgrade: {before}")

    deb = deb_for(ARCH, tmp_path_factory.mktemp(f"dist-{ARCH}"))
    c.copy_in(deb, f"/root/{deb.name}")
    c.run(["apt-get", "install", "-y", f"/root/{deb.name}"], timeout_s=600)
    assert installed_version(c) != PREVIOUS_VERSION
    assert c.show(UNIT, "ActiveState") == "active", c.journal(UNIT, lines=40)
    after = outbox(c)
    print(f"after the upgrade: {after}")
    # Nothing dropped: the records waiting before are still there (new readings may add more).
    assert after["undelivered_records"] >= before["undelivered_records"]
    assert after["last_sequence_number"] >= before["last_sequence_number"]
    assert after["chain_epoch"] == before["chain_epoch"]

    c.write_file(f"{CONFIG_DIR}/gateway.toml", body, 0o640, "root:homecare-gateway")
    c.systemctl("restart", UNIT)
    wait_until(lambda: outbox(c)["undelivered_records"] == 0, 120, "the outbox to drain")
    # Uploads go in sequence order: a reading past the pre-upgrade head means all before it
    # reached the provider (gaps would show as missing= in the session summary).
    wait_until(
        lambda: max((r.seq for r in provider.readings(GW)), default=0)
        > before["last_sequence_number"],
        60,
        "readings past the records kept across the upgrade",
    )
    c.systemctl("stop", UNIT, timeout_s=90)
