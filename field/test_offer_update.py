"""amd64, real systemd: a good update that arrives through the signed ``update.offer`` command
(issue 20), not dropped into the inbox by hand as in test_release_updates.py.

The package of this tree (V0) is installed by apt, with ``[updates]`` (a release key made here)
and a command key pinned in the state directory (a router set up without enrolment). On the
host: the provider's HTTPS service (provider/est.py) serves the V1 release artifact over mutual
TLS, and the provider signs and publishes ``update.offer`` on the router's command topic (the
session's broker, its ACL). The router's gatewayd verifies the manifest, downloads the artifact
with its own certificate into the updater's inbox, and the root updater (started by its .path
unit) installs V1, switches, and keeps it once V1 is READY and delivering.
Named so it runs before test_service.py, whose last test stops the session's provider.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from field.conftest import (
    OFFER_GATEWAY,
    REPORT,
    TIMINGS,
    deb_for,
    release_deb,
    require,
    root_for,
    timed,
)
from field.hostrig import CONFIG_DIR, HostProvider, gateway_toml, install_enrolment
from field.nspawn import Container, booted, wait_until
from gateway.commands import envelope
from gateway.daemon.overrides import COMMAND_KEY_FILE
from provider import release_tool
from provider.commands import (
    BrokerSettings,
    commands_topic,
    make_command,
    public_key_text,
    publish,
)
from provider.est import EstAuthority, EstService
from provider.release_offer import offer_args, read_manifest, release_url
from provider.release_offer import publish as publish_release

ARCH = "amd64"
GW = OFFER_GATEWAY
UNIT = "gatewayd.service"
GATE_S = 45
STATE = "/var/lib/homecare-gateway-update/state.json"
RELEASE_KEY = ed25519.Ed25519PrivateKey.generate()
COMMAND_KEY = ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def release_service(tmp_path_factory: pytest.TempPathFactory, provider: HostProvider
                    ) -> Iterator[tuple[EstService, EstAuthority]]:  # fmt: skip
    base = tmp_path_factory.mktemp("release-service")
    authority = EstAuthority(provider.pki, base / "crl.pem", releases_dir=base / "releases")
    service = EstService(authority, "127.0.0.1")
    service.start()
    try:
        yield service, authority
    finally:
        service.stop()


def _v1(v0: str) -> str:
    if v0.count(".") < 3:
        return f"{v0}.1"
    head, _, last = v0.rpartition(".")
    return f"{head}.{int(last) + 1}"


def _releases(tmp: pytest.TempPathFactory) -> tuple[Path, str, Path, bytes]:
    """V0's .deb, V1's version, its release artifact and signed manifest."""
    deb0 = deb_for(ARCH, tmp.mktemp(f"dist-{ARCH}"))
    v1 = _v1(deb0.name.split("_")[1])
    deb1 = release_deb(ARCH, v1, tmp.mktemp("dist-offer"))
    started = time.monotonic()
    artifact = release_tool.build(tmp.mktemp("offer-release"), ARCH, deb1)
    manifest = release_tool.sign(artifact, RELEASE_KEY, rollback=False)
    timed("offer: release artifact", started)
    return deb0, v1, artifact, manifest


def _install(c: Container, provider: HostProvider, deb0: Path) -> None:
    """V0 by apt, with [updates] and the command key pinned; delivering."""
    c.copy_in(deb0, f"/root/{deb0.name}")
    c.run(["apt-get", "install", "-y", f"/root/{deb0.name}"], timeout_s=600)
    pub = RELEASE_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    owner = "root:homecare-gateway"
    c.write_file(f"{CONFIG_DIR}/provider/release-signing.pub", pub, 0o640, owner)
    key_file = f"/var/lib/homecare-gateway/{COMMAND_KEY_FILE}"
    c.write_file(key_file, public_key_text(COMMAND_KEY) + "\n", 0o640, owner)
    updates = (
        f'[updates]\nrelease_signing_key = "provider/release-signing.pub"\n'
        f"health_gate_s = {GATE_S}\n\n"
    )
    toml = gateway_toml(GW, provider.broker.port)
    install_enrolment(c, provider, GW, toml.replace("[[sim_devices]]", updates + "[[sim_devices]]"))
    c.systemctl("start", UNIT)
    wait_until(lambda: len(provider.readings(GW)) >= 2, 90, "readings from V0")


def _send_offer(provider: HostProvider, manifest: bytes, url: str) -> None:
    command = make_command(GW, "update.offer", offer_args(manifest, url), 1)
    broker = BrokerSettings(
        provider.broker.host, provider.broker.port, provider.pki.ca_cert,
        provider.pki.provider_cert, provider.pki.provider_key,
    )  # fmt: skip
    publish(broker, commands_topic(GW), envelope.sign(command, COMMAND_KEY))


def test_a_good_update_arrives_by_command_and_is_kept(
    tmp_path_factory: pytest.TempPathFactory,
    provider: HostProvider,
    release_service: tuple[EstService, EstAuthority],
) -> None:
    require(ARCH)
    service, authority = release_service
    deb0, v1, artifact, manifest = _releases(tmp_path_factory)
    release = read_manifest(manifest, RELEASE_KEY.public_key())
    assert authority.releases_dir is not None
    publish_release(authority.releases_dir, release, artifact)
    workdir = Path(tmp_path_factory.mktemp("nspawn-amd64-offer"))
    try:
        with booted(root_for(ARCH), workdir, arch=ARCH, machine="field-amd64-offer") as c:
            try:
                _install(c, provider, deb0)
                sent = time.monotonic()
                _send_offer(provider, manifest, release_url(service.url, release.sha256))

                def state() -> dict[str, Any]:
                    proc = c.run(["cat", STATE], check=False)
                    return json.loads(proc.stdout) if proc.returncode == 0 else {}

                def kept() -> bool:
                    s = state()
                    return s.get("phase") == "idle" and any(
                        o.get("to_version") == v1 for o in s.get("outcomes", [])
                    )

                wait_until(kept, GATE_S + 300, f"the updater's outcome for {v1}", interval_s=1.0)
                TIMINGS["offer: command sent to update kept"] = round(time.monotonic() - sent, 1)
                out = [o for o in state()["outcomes"] if o.get("to_version") == v1][-1]
                print(out)
                assert out["event"] == "update.done", out
                link = c.run(["readlink", "/opt/homecare-gateway/current"]).stdout.strip()
                assert link == f"releases/{v1}"
                assert authority.release_fetches == [(GW, release.sha256)]
                journal = c.journal(UNIT, lines=3000)
                assert "update.offer_dropped" in journal
                finished = [line for line in journal.splitlines() if "command.finished" in line]
                assert any("update.offer" in ln and "done" in ln for ln in finished), finished
                seen = len(provider.readings(GW))
                wait_until(lambda: len(provider.readings(GW)) > seen, 90, "readings from V1")
            finally:
                REPORT.mkdir(parents=True, exist_ok=True)
                (REPORT / "commands-amd64-offer.log").write_text("\n".join(c.log) + "\n")
                (REPORT / "journal-amd64-offer.log").write_text(
                    c.journal(lines=3000, output="short-precise")
                )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
