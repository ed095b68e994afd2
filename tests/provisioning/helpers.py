"""The provisioning rig: the integration Rig plus the provider's EST service, CRL and bundles."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from paho.mqtt.enums import CallbackAPIVersion

from provider.broker import MosquittoBroker
from provider.est import EstAuthority, EstService
from provisioning.bundle import BoundDevice, EnrolmentBundle
from tests.integration.rig import Rig

GATEWAY = "gw-prov-0001"
THERMO = BoundDevice("ble", "AA:BB:CC:00:00:01", "thermometer", 60.0)
BP = BoundDevice("ble", "AA:BB:CC:00:00:02", "blood-pressure", 60.0, passkey="123456")
OXI = BoundDevice("ble", "AA:BB:CC:00:00:03", "pulse-oximeter", 60.0)


def broker_accepts(host: str, port: int, ca: Path, cert: Path, key: Path) -> bool:
    """Can this certificate open an MQTT session with the broker? (True/False, never hangs)"""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="old-cert-probe", protocol=mqtt.MQTTv5
    )
    client.tls_set(
        ca_certs=str(ca), certfile=str(cert), keyfile=str(key), tls_version=ssl.PROTOCOL_TLS_CLIENT
    )
    try:
        if client.connect(host, port, keepalive=5) != 0:
            return False
        deadline = time.monotonic() + 15  # generous: a loaded CI machine must not fake a refusal
        while time.monotonic() < deadline and not client.is_connected():
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                return False  # the broker closed the connection: refused
    except (OSError, ssl.SSLError):
        return False
    ok = client.is_connected()
    client.disconnect()
    return ok


def bundle_key(directory: Path) -> tuple[ed25519.Ed25519PrivateKey, Path]:
    """The test provider's bundle-signing key and the path of its public half."""
    key = ed25519.Ed25519PrivateKey.generate()
    pub = directory / "bundle-signing.pub"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


def make_bundle(
    rig: Rig,
    episode: str,
    devices: tuple[BoundDevice, ...],
    *,
    gateway_id: str = GATEWAY,
    valid: tuple[timedelta, timedelta] = (timedelta(hours=-1), timedelta(days=2)),
    test_episode: bool = True,
    command_key: str | None = None,
) -> EnrolmentBundle:
    now = datetime.now(UTC)
    return EnrolmentBundle(
        gateway_id=gateway_id,
        episode_id=episode,
        not_before=now + valid[0],
        not_after=now + valid[1],
        broker_host=rig.broker.host,
        broker_port=rig.broker.port,
        broker_ca_pem=rig.pki.ca_cert.read_text(),
        provider_hpke_public_pem=rig.pki.hpke_pub.read_text(),
        devices=devices,
        test_episode=test_episode,  # the rig's data is test data (HTEST)
        command_key=command_key,  # the provider's command key, pinned (issue 20)
    )


class EstProvider:
    """The provider's enrolment desk for a :class:`Rig`: the EST service with the test CA, the
    broker checking the CRL it writes, and the bundle-signing key. Shared by this suite and the
    HIL sim rig (hw-tests/hil/sim.py), which starts it in the provider's network namespace."""

    def __init__(self, rig: Rig, *, est_host: str = "127.0.0.1") -> None:
        self.rig = rig
        self.crl = rig.base / "crl.pem"
        self.authority = EstAuthority(rig.pki, self.crl)
        # The broker refuses revoked certificates: it reads the CRL when it (re)starts.
        rig.broker = MosquittoBroker(
            rig.pki, rig.base / "broker", host=rig.broker.host, crl_file=self.crl
        )
        self.authority.on_revoke = rig.broker.restart
        self.est_host = est_host
        self._est: EstService | None = None
        self.signing_key, self.signing_pub = bundle_key(rig.base)

    @property
    def est(self) -> EstService:
        assert self._est is not None, "EstProvider.start() was not called"
        return self._est

    def start(self) -> None:
        """Bind and serve, in the calling thread's network namespace (revocations restart the
        broker from the service's threads, so from there too)."""
        self._est = EstService(self.authority, self.est_host)
        self._est.start()

    def offer(
        self, episode: str, devices: tuple[BoundDevice, ...], command_key: str | None = None
    ) -> str:
        """The provider's logistics desk: a bundle for the gateway and a one-time token."""
        gateway = self.rig.gateway_id
        bundle = make_bundle(
            self.rig, episode, devices, gateway_id=gateway, command_key=command_key
        )
        self.authority.offer_bundle(gateway, bundle, self.signing_key)
        return self.authority.new_token(gateway)

    def config_section(self) -> str:
        """The gateway's ``[provisioning]`` table for this provider."""
        return (
            f'[provisioning]\nest_url = "{self.est.url}"\n'
            f'est_ca_file = "{self.rig.pki.ca_cert}"\n'
            f'bundle_signing_key = "{self.signing_pub}"\n'
        )

    def trust_enrolled_key(self) -> None:
        """The provider takes the record-signing key from the certificate it issued."""
        spki = self.authority.signing_keys[self.rig.gateway_id]
        key = serialization.load_der_public_key(spki)
        assert isinstance(key, ed25519.Ed25519PublicKey)
        self.rig.verifier.trust(self.rig.gateway_id, key)

    def stop(self) -> None:
        if self._est is not None:
            self._est.stop()


class ProvisioningRig:
    def __init__(self, base: Path) -> None:
        self.rig = Rig(base, GATEWAY)
        self.provider = EstProvider(self.rig)
        self.config = base / "gateway.toml"

    def start(self) -> None:
        self.provider.start()
        self.rig.start_provider()

    def offer(
        self, episode: str, devices: tuple[BoundDevice, ...], command_key: str | None = None
    ) -> str:
        return self.provider.offer(episode, devices, command_key)

    def write_config(self, sim_addresses: list[tuple[str, str]]) -> Path:
        r = self.rig
        sims = "".join(
            f'\n[[sim_devices]]\nkind = "{k}"\naddress = "{a}"\ninterval_s = 0.3\n'
            for k, a in sim_addresses
        )
        self.config.write_text(
            f'[gateway]\nid = "{GATEWAY}"\nstate_dir = "{r.state_dir}"\nlog_level = "debug"\n\n'
            f"{self.provider.config_section()}\n"
            f'[control]\nsocket = "{r.control_socket}"\n\n'
            f"[health]\ninterval_s = 2\n\n"
            f"[uplink]\nkeepalive_s = 5\n{sims}"
        )
        return self.config

    def ctl(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        timeout_s: float = 60,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli.main", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, **(env or {})},
            input=stdin,
        )

    def trust_enrolled_key(self) -> None:
        self.provider.trust_enrolled_key()

    def close(self) -> None:
        self.rig.close()
        self.provider.stop()
