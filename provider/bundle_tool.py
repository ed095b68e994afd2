"""homecare-bundle: the test provider's bundle-signing tool (rig, demo, training).

Writes a signed enrolment bundle (provisioning/bundle.py) for one gateway and episode::

    python -m provider.bundle_tool --key signing.key --new-key \\
        --gateway gw-0421 --episode ep-7f3a --broker 127.0.0.1:8883 --broker-ca ca.crt \\
        --hpke-pub hpke.pub --device ble,AA:BB:CC:00:00:01,thermometer,3600 \\
        --device serial,/dev/ttyUSB0,astm,86400 --valid-days 7 \\
        --bind-cert gw-0421-client.crt --out bundle.json

``--bind-cert`` is the certificate the provider's EST service issued to the router: the bundle is
bound to its public key (gatewayctl enrol refuses any other, e.g. a previous episode's bundle),
and ``--generation`` (default: the current Unix time, which only rises) must not be older than
the last bundle the router accepted. ``--valid-days`` is capped at the router's limit (31 days).

``--new-key`` creates the Ed25519 signing key (0600) and its public half (``<key>.pub``, which
goes into the router's ``[provisioning] bundle_signing_key``) if they do not exist.
A production provider signs bundles in its own back office, with the key in an HSM.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from gateway.atomicfile import atomic_write
from provisioning.bundle import (
    MAX_BUNDLE_VALIDITY,
    BoundDevice,
    EnrolmentBundle,
    sign_bundle,
    tls_key_sha256,
)


def parse_device(text: str) -> BoundDevice:
    """``transport,address,profile,interval_s[,passkey]``"""
    parts = text.split(",")
    if len(parts) not in (4, 5):
        raise argparse.ArgumentTypeError(
            "--device wants transport,address,profile,interval_s[,passkey]"
        )
    if parts[0] not in ("ble", "serial"):
        raise argparse.ArgumentTypeError(f"transport must be ble or serial, got {parts[0]!r}")
    try:
        return BoundDevice(
            transport="ble" if parts[0] == "ble" else "serial",
            address=parts[1],
            profile=parts[2],
            expected_interval_s=float(parts[3]),
            passkey=parts[4] if len(parts) == 5 else None,
        )
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def load_or_create_key(path: Path, create: bool) -> ed25519.Ed25519PrivateKey:
    if create and not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        atomic_write(path, pem, 0o600)
        pub = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        atomic_write(path.with_name(path.name + ".pub"), pub, 0o644)
        return key
    key_obj = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key_obj, ed25519.Ed25519PrivateKey):
        raise SystemExit(f"homecare-bundle: {path} is not an Ed25519 private key")
    return key_obj


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="homecare-bundle", description=__doc__.split("\n")[0])
    p.add_argument("--key", type=Path, required=True, help="Ed25519 bundle-signing key (PEM)")
    p.add_argument("--new-key", action="store_true", help="create the key if it does not exist")
    p.add_argument("--gateway", required=True)
    p.add_argument("--episode", required=True)
    p.add_argument("--broker", required=True, help="host:port of the MQTT broker")
    p.add_argument("--broker-ca", type=Path, required=True)
    p.add_argument("--hpke-pub", type=Path, required=True, help="provider X25519 public key PEM")
    p.add_argument("--device", type=parse_device, action="append", default=[])
    p.add_argument("--valid-days", type=float, default=7.0)
    p.add_argument(
        "--bind-cert", type=Path, required=True, help="the router's EST-issued certificate (PEM)"
    )
    p.add_argument("--generation", type=int, default=None, help="default: Unix time now")
    p.add_argument(
        "--test-episode",
        action="store_true",
        help="a test, demo or training episode: the router labels every Observation HTEST",
    )
    p.add_argument(
        "--command-key",
        help="base64 Ed25519 public key the router pins for signed commands "
        "(homecare-provider command keygen prints it); without it the router refuses commands",
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not 0 < args.valid_days <= MAX_BUNDLE_VALIDITY.days:
        p.error(f"--valid-days must be between 0 and {MAX_BUNDLE_VALIDITY.days}")
    cert_key = x509.load_pem_x509_certificate(args.bind_cert.read_bytes()).public_key()
    if not isinstance(cert_key, ec.EllipticCurvePublicKey):
        p.error("--bind-cert must hold the router's EC (P-256) TLS certificate")
    host, _, port = args.broker.rpartition(":")
    now = datetime.now(UTC)
    bundle = EnrolmentBundle(
        gateway_id=args.gateway,
        episode_id=args.episode,
        not_before=now,
        not_after=now + timedelta(days=args.valid_days),
        broker_host=host,
        broker_port=int(port),
        broker_ca_pem=args.broker_ca.read_text(),
        provider_hpke_public_pem=args.hpke_pub.read_text(),
        devices=tuple(args.device),
        tls_key_sha256=tls_key_sha256(cert_key),
        generation=args.generation if args.generation is not None else int(time.time()),
        test_episode=args.test_episode,
        command_key=args.command_key,
    )
    atomic_write(args.out, sign_bundle(bundle, load_or_create_key(args.key, args.new_key)), 0o600)
    print(f"signed bundle for {args.gateway}, episode {args.episode}: {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
