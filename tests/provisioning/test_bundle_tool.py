"""The test provider's bundle-signing tool writes bundles the gateway accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from provider.bundle_tool import main
from provisioning.bundle import Binding, tls_key_sha256, verify_bundle
from provisioning.errors import BundleSignatureError
from rig.pki import create_rig_pki


def test_signed_bundle_verifies_with_the_published_key_only(tmp_path: Path) -> None:
    pki = create_rig_pki(tmp_path / "pki", gateway_ids=["gw-1"])
    key, out = tmp_path / "signing.key", tmp_path / "bundle.json"
    argv = [
        "--key", str(key), "--new-key", "--gateway", "gw-1", "--episode", "ep-1",
        "--broker", "127.0.0.1:8883", "--broker-ca", str(pki.ca_cert),
        "--hpke-pub", str(pki.hpke_pub), "--out", str(out),
        "--bind-cert", str(pki.gateway("gw-1").client_cert), "--generation", "7",
        "--device", "ble,AA:BB:CC:00:00:01,thermometer,3600,123456",
        "--device", "serial,/dev/ttyUSB0,astm,86400",
    ]  # fmt: skip
    assert main(argv) == 0
    assert key.stat().st_mode & 0o777 == 0o600
    pub = serialization.load_pem_public_key((tmp_path / "signing.key.pub").read_bytes())
    assert isinstance(pub, ed25519.Ed25519PublicKey)
    cert = x509.load_pem_x509_certificate(pki.gateway("gw-1").client_cert.read_bytes())
    tls_key = cert.public_key()
    assert isinstance(tls_key, ec.EllipticCurvePublicKey)
    binding = Binding(tls_key_sha256(tls_key), min_generation=7)
    bundle = verify_bundle(out.read_bytes(), pub, "gw-1", binding=binding)
    assert [(d.transport, d.profile) for d in bundle.devices] == [
        ("ble", "thermometer"),
        ("serial", "astm"),
    ]
    assert bundle.devices[0].passkey == "123456"
    assert (bundle.broker_host, bundle.broker_port) == ("127.0.0.1", 8883)
    with pytest.raises(BundleSignatureError):
        verify_bundle(out.read_bytes(), ed25519.Ed25519PrivateKey.generate().public_key(), "gw-1")


def test_a_malformed_device_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--key", "k", "--gateway", "g", "--episode", "e", "--broker", "h:1",
              "--broker-ca", "c", "--hpke-pub", "p", "--out", "o",
              "--device", "ble,nope"])  # fmt: skip
    assert exit_.value.code == 2


def test_a_bundle_longer_than_the_routers_cap_is_not_signed(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--key", "k", "--gateway", "g", "--episode", "e", "--broker", "h:1",
              "--broker-ca", "c", "--hpke-pub", "p", "--out", "o", "--bind-cert", "x",
              "--valid-days", "400"])  # fmt: skip
    assert exit_.value.code == 2
