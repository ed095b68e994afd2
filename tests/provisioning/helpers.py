"""The provisioning rig: the integration Rig plus the provider's EST service, CRL and bundles."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.provider.broker import MosquittoBroker
from gateway.provider.est import EstAuthority, EstService
from provisioning.bundle import BoundDevice, EnrolmentBundle, sign_bundle
from tests.integration.rig import Rig

GATEWAY = "gw-prov-0001"
THERMO = BoundDevice("ble", "AA:BB:CC:00:00:01", "thermometer", 60.0)
BP = BoundDevice("ble", "AA:BB:CC:00:00:02", "blood-pressure", 60.0, passkey="123456")
OXI = BoundDevice("ble", "AA:BB:CC:00:00:03", "pulse-oximeter", 60.0)


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
    )


class ProvisioningRig:
    def __init__(self, base: Path) -> None:
        self.rig = Rig(base, GATEWAY)
        self.crl = base / "crl.pem"
        self.authority = EstAuthority(self.rig.pki, self.crl)
        # The broker refuses revoked certificates: it reads the CRL when it (re)starts.
        self.rig.broker = MosquittoBroker(self.rig.pki, base / "broker", crl_file=self.crl)
        self.authority.on_revoke = self.rig.broker.restart
        self.est = EstService(self.authority)
        self.signing_key, self.signing_pub = bundle_key(base)
        self.config = base / "gateway.toml"

    def start(self) -> None:
        self.est.start()
        self.rig.start_provider()

    def offer(self, episode: str, devices: tuple[BoundDevice, ...]) -> str:
        """The provider's logistics desk: a bundle for the gateway and a one-time token."""
        bundle = make_bundle(self.rig, episode, devices)
        self.authority.bundles[GATEWAY] = sign_bundle(bundle, self.signing_key)
        return self.authority.new_token(GATEWAY)

    def write_config(self, sim_addresses: list[tuple[str, str]]) -> Path:
        r = self.rig
        sims = "".join(
            f'\n[[sim_devices]]\nkind = "{k}"\naddress = "{a}"\ninterval_s = 0.3\n'
            for k, a in sim_addresses
        )
        self.config.write_text(
            f'[gateway]\nid = "{GATEWAY}"\nstate_dir = "{r.state_dir}"\nlog_level = "debug"\n\n'
            f'[provisioning]\nest_url = "{self.est.url}"\nest_ca_file = "{r.pki.ca_cert}"\n'
            f'bundle_signing_key = "{self.signing_pub}"\n\n'
            f'[control]\nsocket = "{r.control_socket}"\n\n'
            f"[health]\ninterval_s = 2\n\n"
            f"[uplink]\nkeepalive_s = 5\n{sims}"
        )
        return self.config

    def ctl(
        self, *args: str, env: dict[str, str] | None = None, timeout_s: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            env={**os.environ, **(env or {})},
        )

    def trust_enrolled_key(self) -> None:
        """The provider takes the record-signing key from the certificate it issued."""
        spki = self.authority.signing_keys[GATEWAY]
        key = serialization.load_der_public_key(spki)
        assert isinstance(key, ed25519.Ed25519PublicKey)
        self.rig.verifier.trust(GATEWAY, key)

    def close(self) -> None:
        self.rig.close()
        self.est.stop()
