"""``homecare-provider release offer``: publish a signed release and offer it to one router.

    homecare-provider release offer --desk .desk --gateway gw-0421 \\
        --manifest dist/0.2.0/release.json --artifact dist/0.2.0/release.tar.gz \\
        [--key release-signing.pub] [--url-base https://provider.example:8443]

1. The artifact is checked against the manifest (SHA-256 and size; with ``--key`` the signature,
   too) and published in the desk's ``releases/<sha256>`` (written aside, then renamed), where
   the desk's HTTPS service serves it to routers with a valid certificate
   (``/homecare/v1/releases/<sha256>``, provider/est.py).
2. The signed ``update.offer`` command - the manifest (base64) and that URL - is sent to the
   router like every other command (provider/commands.py: next counter, signed, published,
   logged). The router verifies the manifest before it downloads anything; its outcome
   (``done``: the release is in its updater's inbox) shows in ``command outcomes``, and the
   updater's own ``update.done`` / ``update.rolled_back`` records follow.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import GatewayError
from gateway.updates.errors import UpdateError
from gateway.updates.fetch import check_url
from gateway.updates.release import MAX_MANIFEST_BYTES, Release, verify_manifest
from provider.commands import BrokerFor, CommandCentre
from provider.desk import Desk

RELEASES_PATH = "/homecare/v1/releases"
COMMAND = "update.offer"
CHUNK = 1024 * 1024


class ReleaseOfferError(GatewayError):
    """The release cannot be offered: manifest and artifact disagree, or the desk lacks a part."""

    hint = "check the release with homecare-provider release verify; see docs/operations.md"


def read_manifest(raw: bytes, key: ed25519.Ed25519PublicKey | None) -> Release:
    """The manifest's facts; signature checked when the release key's public half is given
    (the router checks it in any case, before it downloads anything)."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ReleaseOfferError(f"the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        if key is not None:
            return verify_manifest(raw, key)
        payload = base64.b64decode(json.loads(raw)["payload"], validate=True)
        return Release.from_payload(json.loads(payload))
    except UpdateError as exc:
        raise ReleaseOfferError(exc.message) from None
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise ReleaseOfferError("not a signed release manifest (release.json)") from None


def publish(releases_dir: Path, release: Release, artifact: Path) -> Path:
    """Copy ``artifact`` to ``releases_dir/<sha256>`` once its digest and size match."""
    releases_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
    final = releases_dir / release.sha256
    tmp = releases_dir / f".{release.sha256}.partial"
    digest, size = hashlib.sha256(), 0
    try:
        with artifact.open("rb") as src, tmp.open("wb") as out:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != release.sha256 or size != release.size:
            raise ReleaseOfferError(
                f"{artifact} is not the artifact the manifest signs (SHA-256 or size differ)"
            )
        tmp.chmod(0o644)
        tmp.replace(final)
    except OSError as exc:
        raise ReleaseOfferError(f"cannot publish {artifact}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return final


def release_url(base: str, sha256: str) -> str:
    return f"{base.rstrip('/')}{RELEASES_PATH}/{sha256}"


def offer_args(manifest: bytes, url: str) -> dict[str, str]:
    return {"manifest": base64.b64encode(manifest).decode(), "url": url}


def _public_key(path: Path) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ReleaseOfferError(f"cannot load the release key {path}: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ReleaseOfferError(f"{path} is not an Ed25519 public key")
    return key


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="homecare-provider release offer",
        description="Publish a signed release on the desk's HTTPS service and send the router "
        "the signed update.offer command.",
        epilog="example: homecare-provider release offer --desk .desk --gateway gw-0421 "
        "--manifest release.json --artifact release.tar.gz --key release-signing.pub",
    )
    p.add_argument("--desk", type=Path, default=Path(".desk"), help="the desk's folder")
    p.add_argument("--gateway", required=True, help="the router's id")
    p.add_argument("--manifest", type=Path, required=True, help="release.json (signed)")
    p.add_argument("--artifact", type=Path, required=True, help="release.tar.gz")
    p.add_argument("--key", type=Path, help="the release key's public half: check the signature")
    p.add_argument("--url-base", help="where routers reach the release service (default: the "
                   "desk's EST URL)")  # fmt: skip
    p.add_argument("--ttl-minutes", type=float, default=60.0, help="the command's expiry")
    p.add_argument("--host", help="broker host (default: the desk's)")
    p.add_argument("--port", type=int, help="broker port (default: the desk's)")
    return p


def main(argv: Sequence[str], broker_for: BrokerFor) -> int:
    args = build_parser().parse_args(argv)
    desk = Desk(args.desk.resolve())
    try:
        raw = args.manifest.read_bytes()
        release = read_manifest(raw, _public_key(args.key) if args.key else None)
        base = args.url_base or str(desk.listening()["est_url"])
        url = release_url(base, release.sha256)
        try:
            check_url(url)  # what the router accepts: refuse here, before a counter is spent
        except ValueError as exc:
            raise ReleaseOfferError(f"--url-base: {exc}") from None
        publish(desk.releases, release, args.artifact)
        centre = CommandCentre(desk.root)
        ttl = timedelta(minutes=args.ttl_minutes)
        command, signed = centre.sign(args.gateway, COMMAND, offer_args(raw, url), ttl)
        centre.send(broker_for(centre.root, args.host, args.port), command, signed)
    except OSError as exc:
        print(f"homecare-provider release offer: {exc}", file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(f"homecare-provider release offer: {exc.one_line()}", file=sys.stderr)
        return 1
    print(
        f"offered {release.version} ({release.arch}{', rollback' if release.rollback else ''}) "
        f"to {args.gateway}: {COMMAND} #{command.counter} ({command.command_id}), {url}"
    )
    return 0
