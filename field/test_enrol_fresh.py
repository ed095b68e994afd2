"""amd64, a router out of the box: the provider profile, `gatewayctl enrol` with the token alone,
the service under real systemd, equipment return (the unit is then skipped) and purge.

The provider's side runs on the host: the rig's EST service (provider/est.py, test CA, one-time
tokens), a broker and a verifier of its own (the router makes its own record-signing key at
enrolment, so the verifier starts once the EST service has seen it). The container shares the
host's network, so the profile's EST URL and the bundle's broker are on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from field.conftest import boot_installed
from field.hostrig import (
    CONFIG_DIR,
    PROFILE_PACKAGE,
    SERIAL_ID,
    SERIAL_LINK,
    SERIAL_TABLE,
    EstAuthority,
    EstService,
    HostProvider,
    install_profile,
    start_serial_sim,
)
from field.nspawn import Container, wait_until
from provisioning.bundle import BoundDevice, EnrolmentBundle

ARCH = "amd64"
GW = "gw-field-fresh"
UNIT = "gatewayd.service"
EPISODE = "ep-field-fresh"


@dataclass
class Desk:
    """The care provider: EST service, bundle-signing key, broker and verifier."""

    base: Path
    provider: HostProvider
    authority: Any
    est: Any
    signing_key: ed25519.Ed25519PrivateKey
    signing_pub: Path

    def offer(self) -> str:
        """The logistics desk assigns the router to an episode: a signed bundle and a token."""
        now = datetime.now(UTC)
        bundle = EnrolmentBundle(
            gateway_id=GW,
            episode_id=EPISODE,
            not_before=now - timedelta(hours=1),
            not_after=now + timedelta(days=2),
            broker_host="127.0.0.1",
            broker_port=self.provider.broker.port,
            broker_ca_pem=self.provider.pki.ca_cert.read_text(),
            provider_hpke_public_pem=self.provider.pki.hpke_pub.read_text(),
            devices=(BoundDevice("serial", SERIAL_ID, "nonin", 60.0),),
            test_episode=True,
        )
        # Signed when the router fetches it, bound to its certificate's key (issue 16).
        self.authority.offer_bundle(GW, bundle, self.signing_key)
        token: str = self.authority.new_token(GW)
        return token

    def enrolled_key(self) -> Path:
        """The record-signing key the router sent in its CSR, for the verifier."""
        key = serialization.load_der_public_key(self.authority.signing_keys[GW])
        path = self.base / f"{GW}.pub"
        path.write_bytes(key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ))  # fmt: skip
        return path


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    yield from boot_installed(ARCH, tmp_path_factory, "amd64-fresh")


@pytest.fixture(scope="module")
def desk(c: Container, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desk]:
    base = tmp_path_factory.mktemp("fresh-provider")
    provider = HostProvider(base, [])
    provider.start_broker()
    authority = EstAuthority(provider.pki, base / "crl.pem")
    est = EstService(authority)
    est.start()
    key = ed25519.Ed25519PrivateKey.generate()
    pub = base / "bundle-signing.pub"
    pub.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ))  # fmt: skip
    try:
        yield Desk(base, provider, authority, est, key, pub)
    finally:
        est.stop()
        provider.stop()


def test_fresh_router_has_only_the_provider_profile(c: Container, desk: Desk) -> None:
    """The depot set the router's name (its label); the provider's profile package is installed."""
    c.run(["hostname", GW])
    c.write_file("/etc/hostname", GW + "\n")
    install_profile(c, desk.est.url, desk.provider.pki.ca_cert, desk.signing_pub, desk.base)
    assert c.run(["test", "-e", f"{CONFIG_DIR}/gateway.toml"], check=False).returncode == 1
    # The profile package shares the directory; it must keep the gateway's owner and mode.
    perms = c.run(["stat", "-c", "%U:%G %a", CONFIG_DIR]).stdout.strip()
    assert perms == "root:homecare-gateway 750"
    c.systemctl("start", UNIT)
    assert c.show(UNIT, "ActiveState") == "inactive"
    assert c.show(UNIT, "ConditionResult") == "no"


def test_a_token_on_the_command_line_is_refused(c: Container, desk: Desk) -> None:
    token = desk.offer()
    proc = c.run(["gatewayctl", "enrol", "--token", token], check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[P-TOKEN] a token on the command line" in proc.stderr
    assert token not in proc.stdout + proc.stderr
    assert token in desk.authority.tokens  # not spent


def test_enrol_with_the_token_alone_writes_gateway_toml(c: Container, desk: Desk) -> None:
    token = desk.offer()
    typed = token.lower().replace("-", " ")  # as a person types it from the delivery note
    proc = c.run(["gatewayctl", "enrol", "--token-file", "-"], input_text=typed + "\n",
                 timeout_s=120, check=False)  # fmt: skip
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert f"enrolled: router {GW}, episode {EPISODE}, 1 device(s) bound" in proc.stdout
    perms = c.run(["stat", "-c", "%U:%G %a", f"{CONFIG_DIR}/gateway.toml"]).stdout.strip()
    assert perms == "root:homecare-gateway 640"
    written = c.run(["cat", f"{CONFIG_DIR}/gateway.toml"]).stdout
    assert f'id = "{GW}"' in written
    assert token not in written
    assert typed not in written
    check = c.run(["gatewayd", "--check-config"], check=False)
    assert check.returncode == 0, check.stderr
    lifecycle = json.loads(c.run(["gatewayctl", "lifecycle", "--json"]).stdout)
    assert lifecycle["state"] == "bound"
    assert lifecycle["episode"] == EPISODE


def test_the_enrolled_service_starts_and_delivers(c: Container, desk: Desk) -> None:
    # Wired devices are configured per router ([[serial_devices]]); the bundle binds them.
    start_serial_sim(c, "nonin", SERIAL_LINK, "--scenario")
    c.sh(f"cat >> {CONFIG_DIR}/gateway.toml", input_text="\n" + SERIAL_TABLE)
    desk.provider.start(keys={GW: desk.enrolled_key()})
    c.systemctl("start", UNIT)
    assert c.show(UNIT, "ActiveState") == "active", c.journal(UNIT)
    wait_until(lambda: len(desk.provider.readings(GW)) >= 3, 90,
               "3 verified readings from the enrolled router")  # fmt: skip


def test_install_check_passes(c: Container) -> None:
    proc = c.run(["gatewayctl", "install-check", "--timeout", "60", "--json"], timeout_s=300,
                 check=False)  # fmt: skip
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_return_then_the_unit_is_skipped(c: Container, desk: Desk) -> None:
    proc = c.run(["gatewayctl", "return", "--json", "--drain-timeout", "120"], timeout_s=300,
                 check=False)  # fmt: skip
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    assert facts["state"] == "factory"
    assert facts["unsent_records"] == 0
    assert facts["report_uploaded"] is True
    assert facts["revoked"] is True
    assert c.show(UNIT, "ActiveState") in ("inactive", "deactivating")
    wait_until(lambda: c.show(UNIT, "ActiveState") == "inactive", 60, "the service to stop")
    c.systemctl("start", UNIT)  # ExecCondition=gatewayd --check-enrolled: skipped, not failed
    assert c.show(UNIT, "ActiveState") == "inactive"
    assert c.show(UNIT, "Result") == "exec-condition", c.journal(UNIT, lines=20)
    assert c.systemctl("is-failed", UNIT, check=False).stdout.strip() != "failed"
    desk.provider.stop()
    summary = [ln for ln in desk.provider.output().splitlines() if ln.startswith("summary:")]
    assert summary, desk.provider.output()[-2000:]
    print(summary[-1])
    for clean in ("missing=0", "signature_failures=0", "chain_breaks=0", "other_failures=0"):
        assert clean in summary[-1], summary[-1]


def test_purge_removes_state_configuration_logs_and_user(c: Container) -> None:
    c.systemctl("stop", "field-sim-spo2.service", check=False)
    c.run(["apt-get", "purge", "-y", "homecare-gateway"], timeout_s=300)
    for path in ("/var/lib/homecare-gateway", "/var/log/homecare-gateway",
                 "/opt/homecare-gateway"):  # fmt: skip
        assert c.run(["test", "-e", path], check=False).returncode == 1, path
    assert c.run(["id", "homecare-gateway"], check=False).returncode != 0
    # The provider's profile belongs to its own package: only that is left in the directory.
    left = c.run(["find", CONFIG_DIR, "-mindepth", "1", "-maxdepth", "1"]).stdout.split()
    assert sorted(left) == [f"{CONFIG_DIR}/profile", f"{CONFIG_DIR}/provider.toml"], left
    c.run(["apt-get", "purge", "-y", PROFILE_PACKAGE], timeout_s=300)
    assert c.run(["test", "-e", CONFIG_DIR], check=False).returncode == 1
    for package in ("homecare-gateway", PROFILE_PACKAGE):
        assert c.run(["dpkg", "-s", package], check=False).returncode != 0, package
