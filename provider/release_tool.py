"""``homecare-provider release build|sign|verify``: software releases for the routers.

    homecare-provider release build --out dist/release [--arch amd64] [--deb FILE]
        the release tree of this repository (packaging/build-deb.sh, or a .deb already built):
        writes release.tar.gz, the tree /opt/homecare-gateway/releases/<version> holds
    homecare-provider release sign --key release-signing.key [--new-key] \\
        --artifact dist/release/release.tar.gz [--rollback] --out dist/release/release.json
    homecare-provider release verify --key release-signing.key.pub \\
        --manifest release.json --artifact release.tar.gz [--arch amd64] [--running 0.1.0]

The manifest's version, architecture and outbox schema facts come from the tree's own
release-info.json (written by build-deb.sh), never from the command line, so a manifest cannot
claim what its tree is not. ``--rollback`` is the only way a router accepts a lower version.
The private key is the provider's RELEASE key: keep it offline; its public half goes into
every router's gateway.toml as ``[updates] release_signing_key``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.atomicfile import atomic_write
from gateway.updates.errors import UpdateError
from gateway.updates.inbox import check_applicable
from gateway.updates.layout import RELEASE_INFO
from gateway.updates.release import Release, sign_release, verify_manifest
from provider.bundle_tool import load_or_create_key

REPO = Path(__file__).resolve().parents[1]
PREFIX = "opt/homecare-gateway/releases"


def build(out: Path, arch: str | None, deb: Path | None) -> Path:
    """release.tar.gz of the tree a .deb (built here when not given) installs."""
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hcg-release-") as tmp:
        if deb is None:
            cmd = [str(REPO / "packaging" / "build-deb.sh"), "--out", tmp]
            cmd += ["--arch", arch] if arch else []
            subprocess.run(cmd, check=True)  # noqa: S603 - our own build script
            deb = sorted(Path(tmp).glob("homecare-gateway_*.deb"))[-1]
        root = Path(tmp) / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)  # noqa: S603, S607
        trees = [p for p in (root / PREFIX).iterdir() if p.is_dir()]
        if len(trees) != 1:
            raise SystemExit(f"homecare-provider release: {deb} holds {len(trees)} release trees")
        tree = trees[0]
        info = json.loads((tree / RELEASE_INFO).read_text())
        artifact = out / "release.tar.gz"

        def as_root(t: tarfile.TarInfo) -> tarfile.TarInfo:
            t.uid = t.gid = 0
            t.uname = t.gname = "root"
            return t

        with tarfile.open(artifact, "w:gz") as tar:
            tar.add(tree, arcname=".", filter=as_root)
    print(f"built {artifact}: {info['version']} for {info['arch']}", file=sys.stderr)
    return artifact


def tree_info(artifact: Path) -> dict[str, Any]:
    with tarfile.open(artifact, "r:*") as tar:
        member = tar.extractfile(f"./{RELEASE_INFO}")
        if member is None:
            raise SystemExit(f"homecare-provider release: {artifact} has no {RELEASE_INFO}")
        data: dict[str, Any] = json.loads(member.read())
    return data


def sign(artifact: Path, key: ed25519.Ed25519PrivateKey, *, rollback: bool) -> bytes:
    info = tree_info(artifact)
    digest = hashlib.sha256()
    with artifact.open("rb") as f:
        while chunk := f.read(1024 * 1024):
            digest.update(chunk)
    release = Release(
        version=info["version"],
        arch=info["arch"],
        sha256=digest.hexdigest(),
        size=artifact.stat().st_size,
        compression="xz" if artifact.name.endswith(".xz") else "gz",
        rollback=rollback,
        issued_at=datetime.now(UTC),
        outbox_schema=int(info["outbox_schema"]),
        outbox_min_reader=int(info["outbox_min_reader"]),
    )
    return sign_release(release, key)


def verify(
    manifest: Path, pub: Path, artifact: Path | None, arch: str | None, running: str | None
) -> Release:
    key = serialization.load_pem_public_key(pub.read_bytes())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise UpdateError(f"{pub} is not an Ed25519 public key")
    release = verify_manifest(manifest.read_bytes(), key)
    if artifact is not None:
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        if digest != release.sha256 or artifact.stat().st_size != release.size:
            raise UpdateError(f"{artifact} does not match the manifest (digest or size)")
    if arch is not None and running is not None:
        check_applicable(release, arch=arch, running_version=running)
    return release


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="homecare-provider release",
        description="Build, sign and verify software releases for the routers.",
        epilog="example: homecare-provider release sign --key release.key "
        "--artifact release.tar.gz --out release.json",
    )
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="the release tarball of this tree (or of a .deb)")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--arch", choices=("amd64", "arm64"))
    b.add_argument("--deb", type=Path, help="a .deb built by packaging/build-deb.sh")
    s = sub.add_parser("sign", help="sign a release tarball with the provider's release key")
    s.add_argument("--key", type=Path, required=True, help="Ed25519 release key (PEM)")
    s.add_argument("--new-key", action="store_true", help="create the key (and .pub) if missing")
    s.add_argument("--artifact", type=Path, required=True)
    s.add_argument("--rollback", action="store_true", help="may replace a newer version")
    s.add_argument("--out", type=Path, required=True)
    v = sub.add_parser("verify", help="check a manifest (and its artifact) as a router would")
    v.add_argument("--key", type=Path, required=True, help="the release key's public half (PEM)")
    v.add_argument("--manifest", type=Path, required=True)
    v.add_argument("--artifact", type=Path)
    v.add_argument("--arch", choices=("amd64", "arm64"))
    v.add_argument("--running", help="the version the router runs (checks the direction)")
    args = p.parse_args(argv)
    try:
        if args.action == "build":
            build(args.out, args.arch, args.deb)
        elif args.action == "sign":
            key = load_or_create_key(args.key, args.new_key)
            atomic_write(args.out, sign(args.artifact, key, rollback=args.rollback), 0o644)
            print(f"signed {args.out}", file=sys.stderr)
        else:
            release = verify(args.manifest, args.key, args.artifact, args.arch, args.running)
            print(json.dumps(release.payload_json(), indent=1))
    except UpdateError as exc:
        print(f"homecare-provider release: {exc.one_line()}", file=sys.stderr)
        return 1
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"homecare-provider release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    os.umask(0o022)
    raise SystemExit(main())
