"""The signed release manifest: what the provider says about one release artifact.

Wire form (JSON), the same style as the enrolment bundle (provisioning/bundle.py)::

    {"format": 1, "payload": "<base64 of the payload JSON>", "signature": "<base64 Ed25519>"}

The signature covers the exact payload bytes and is made with the provider's RELEASE key; its
public half is pinned in the router's configuration (``[updates] release_signing_key``). The
payload names the artifact (a tarball of one versioned tree, built for
``/opt/homecare-gateway/releases/<version>``): its version, CPU architecture, SHA-256, size and
compression, whether it is signed as a rollback (the only way to go to a lower version), when it
was issued, and the outbox schema facts of the tree (buffer/schema_facts.py).

Pure: no file or network I/O, so the daemon (which receives an offer) and the root updater
(which never trusts the daemon and checks again) run the same checks.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.updates.errors import ReleaseInvalidError, ReleaseSignatureError

FORMAT = 1
PAYLOAD_FORMAT = 1
KIND = "homecare-gateway-release"
MAX_MANIFEST_BYTES = 16 * 1024  # a manifest is a few hundred bytes; anything bigger is refused
# A release tree is a virtualenv (about 60 MB unpacked, 15 MB as .tar.gz); 256 MiB leaves room
# and still bounds what an offer can make the router download and store.
MAX_ARTIFACT_BYTES = 256 * 1024 * 1024
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
ARCHES = ("amd64", "arm64")
Compression = Literal["gz", "xz"]
COMPRESSIONS: tuple[Compression, ...] = ("gz", "xz")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}$")


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.1.2"`` -> ``(0, 1, 2)``. Two to four dot-separated numbers, nothing else: the
    version is also a directory name under /opt/homecare-gateway/releases."""
    if not isinstance(text, str) or not _VERSION.fullmatch(text):
        raise ReleaseInvalidError(f"not a release version (such as 0.2.1): {str(text)[:40]!r}")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def is_version(text: str) -> bool:
    return isinstance(text, str) and _VERSION.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Release:
    version: str
    arch: str
    sha256: str  # hex, of the artifact file as stored
    size: int  # bytes of the artifact file
    compression: Compression
    rollback: bool  # signed as a rollback: may go to a lower version than the running one
    issued_at: datetime
    outbox_schema: int  # the schema version this tree migrates the outbox to
    outbox_min_reader: int  # the lowest schema version that can open that outbox

    def __post_init__(self) -> None:
        parse_version(self.version)
        if self.arch not in ARCHES:
            raise ReleaseInvalidError(f"arch must be one of {ARCHES}, got {self.arch[:16]!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ReleaseInvalidError("sha256 must be 64 lower-case hex digits")
        if not 0 < self.size <= MAX_ARTIFACT_BYTES:
            raise ReleaseInvalidError(
                f"artifact size {self.size} is outside 1..{MAX_ARTIFACT_BYTES} bytes"
            )
        if self.compression not in COMPRESSIONS:
            raise ReleaseInvalidError(f"compression must be one of {COMPRESSIONS}")
        if self.issued_at.tzinfo is None:
            raise ReleaseInvalidError("issued_at must carry a time zone")
        if not 1 <= self.outbox_min_reader <= self.outbox_schema <= 10_000:
            raise ReleaseInvalidError("outbox_min_reader must be 1..outbox_schema")

    @property
    def version_key(self) -> tuple[int, ...]:
        return parse_version(self.version)

    @property
    def artifact_name(self) -> str:
        return f"release.tar.{self.compression}"

    def payload_json(self) -> dict[str, Any]:
        return {
            "format": PAYLOAD_FORMAT,
            "kind": KIND,
            "version": self.version,
            "arch": self.arch,
            "sha256": self.sha256,
            "size": self.size,
            "compression": self.compression,
            "rollback": self.rollback,
            "issued_at": self.issued_at.astimezone(UTC).isoformat(),
            "outbox": {"schema": self.outbox_schema, "min_reader": self.outbox_min_reader},
        }

    @classmethod
    def from_payload(cls, p: Any) -> Release:
        try:
            if not isinstance(p, dict) or p.get("format") != PAYLOAD_FORMAT:
                raise ReleaseInvalidError(f"payload format must be {PAYLOAD_FORMAT}")
            if p.get("kind") != KIND:
                raise ReleaseInvalidError(f"not a {KIND} manifest")
            outbox = p["outbox"]
            fields = (p["version"], p["arch"], p["sha256"], p["compression"], p["issued_at"])
            if not all(isinstance(f, str) for f in fields):
                raise ReleaseInvalidError("version, arch, sha256, compression, issued_at: strings")
            ints = (p["size"], outbox["schema"], outbox["min_reader"])
            if not all(isinstance(i, int) and not isinstance(i, bool) for i in ints):
                raise ReleaseInvalidError("size and outbox figures must be integers")
            if not isinstance(p["rollback"], bool):
                raise ReleaseInvalidError("rollback must be true or false")
            issued = datetime.fromisoformat(p["issued_at"])
            return cls(
                version=p["version"],
                arch=p["arch"],
                sha256=p["sha256"],
                size=p["size"],
                compression=p["compression"],
                rollback=p["rollback"],
                issued_at=issued,
                outbox_schema=outbox["schema"],
                outbox_min_reader=outbox["min_reader"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ReleaseInvalidError(f"manifest payload unusable: {type(exc).__name__}") from None


def sign_release(release: Release, key: ed25519.Ed25519PrivateKey) -> bytes:
    payload = json.dumps(release.payload_json(), sort_keys=True, separators=(",", ":")).encode()
    outer = {
        "format": FORMAT,
        "payload": base64.b64encode(payload).decode(),
        "signature": base64.b64encode(key.sign(payload)).decode(),
    }
    return json.dumps(outer, indent=1).encode() + b"\n"


def verify_manifest(raw: bytes, signer: ed25519.Ed25519PublicKey) -> Release:
    """Signature first (nothing unsigned is parsed beyond the envelope), then the payload."""
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ReleaseInvalidError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        outer = json.loads(raw)
        if not isinstance(outer, dict) or outer.get("format") != FORMAT:
            raise ReleaseInvalidError(f"manifest format must be {FORMAT}")
        payload = base64.b64decode(outer["payload"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise ReleaseInvalidError(f"manifest unreadable: {type(exc).__name__}") from None
    try:
        signer.verify(signature, payload)
    except InvalidSignature:
        raise ReleaseSignatureError(
            "release manifest signature does not verify with the pinned release key"
        ) from None
    try:
        inner = json.loads(payload)
    except ValueError:
        raise ReleaseInvalidError("manifest payload is not JSON") from None
    return Release.from_payload(inner)
