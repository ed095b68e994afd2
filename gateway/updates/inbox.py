"""The daemon's side of an offered release: verify it and drop it into the updater's inbox.

The daemon runs unprivileged in its sandbox and may write only its state directory, so it does
not install anything: it checks the manifest (signature, architecture, version), streams the
artifact to disk with a running SHA-256 and a hard size cap, and renames the finished entry into
``<state_dir>/updates/inbox/<id>/`` (``release.json`` + ``release.tar.<gz|xz>``). The entry is
written in ``updates/incoming/`` first, so the updater's path unit (DirectoryNotEmpty= on the
inbox) never sees half an entry. The root updater trusts none of this and checks it all again.

A later ``update.offer`` command handler (gateway/commands) only calls :func:`drop_release`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.updates.errors import (
    ReleaseInvalidError,
    ReleaseNotApplicableError,
    UpdateBusyError,
)
from gateway.updates.release import MAX_MANIFEST_BYTES, Release, parse_version, verify_manifest

log = structlog.get_logger("gateway.updates")

UPDATES_SUBDIR = "updates"  # under the daemon's state directory
INBOX = "inbox"
INCOMING = "incoming"
MANIFEST_NAME = "release.json"
MAX_PENDING = 1  # one offer at a time: the updater installs and gates one release after another
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Dropped:
    entry_id: str
    path: Path
    release: Release


def inbox_dir(state_dir: Path) -> Path:
    return state_dir / UPDATES_SUBDIR / INBOX


def check_applicable(release: Release, *, arch: str, running_version: str) -> None:
    """Architecture and direction: a lower (or equal) version only when signed as a rollback."""
    if release.arch != arch:
        raise ReleaseNotApplicableError(
            f"release {release.version} is for {release.arch}, this router is {arch}"
        )
    if release.version_key <= parse_version(running_version) and not release.rollback:
        raise ReleaseNotApplicableError(
            f"release {release.version} is not newer than the running {running_version}"
            " and is not signed as a rollback",
            hint="offer a newer release, or sign the older one with --rollback",
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_release(
    state_dir: Path,
    manifest: bytes,
    artifact: Iterable[bytes],
    signer: ed25519.Ed25519PublicKey,
    *,
    arch: str,
    running_version: str,
) -> Dropped:
    """Verify ``manifest``, stream ``artifact`` to disk (digest and size checked as it comes),
    and move the finished entry into the inbox. Raises an UpdateError subclass and leaves
    nothing behind when anything is wrong. Blocking: call it from a thread."""
    if len(manifest) > MAX_MANIFEST_BYTES:
        raise ReleaseInvalidError(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
    release = verify_manifest(manifest, signer)
    check_applicable(release, arch=arch, running_version=running_version)
    base = state_dir / UPDATES_SUBDIR
    inbox, incoming = base / INBOX, base / INCOMING
    for d in (base, inbox, incoming):
        d.mkdir(mode=0o750, exist_ok=True)
    pending = [p for p in inbox.iterdir() if not p.name.startswith(".")]
    if len(pending) >= MAX_PENDING:
        raise UpdateBusyError(f"{len(pending)} release(s) already wait for the updater")
    entry_id = f"{release.version}-{uuid.uuid4().hex[:12]}"
    tmp = incoming / entry_id
    tmp.mkdir(mode=0o750)
    try:
        size = _write_entry(tmp, manifest, artifact, release)
        final = inbox / entry_id
        tmp.rename(final)
        _fsync_dir(inbox)
        _fsync_dir(incoming)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("update.dropped", entry=entry_id, version=release.version, size=size)
    return Dropped(entry_id, final, release)


def _write_entry(tmp: Path, manifest: bytes, artifact: Iterable[bytes], release: Release) -> int:
    (tmp / MANIFEST_NAME).write_bytes(manifest)
    digest = hashlib.sha256()
    size = 0
    with (tmp / release.artifact_name).open("wb") as out:
        for chunk in artifact:
            size += len(chunk)
            if size > release.size:
                raise ReleaseInvalidError(
                    f"artifact is larger than the {release.size} bytes its manifest says"
                )
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if size != release.size:
        raise ReleaseInvalidError(f"artifact has {size} bytes, its manifest says {release.size}")
    if digest.hexdigest() != release.sha256:
        raise ReleaseInvalidError("artifact SHA-256 does not match its manifest")
    _fsync_dir(tmp)
    return size


def clear_incoming(state_dir: Path) -> int:
    """Remove half-written entries a crash left in ``incoming`` (at daemon start)."""
    incoming = state_dir / UPDATES_SUBDIR / INCOMING
    removed = 0
    with contextlib.suppress(FileNotFoundError):
        for p in incoming.iterdir():
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    return removed
