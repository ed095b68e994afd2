"""``update.offer``: the command centre offers a signed release; the router fetches it into the
updater's inbox (issue 20, the glue between signed commands and software updates).

Arguments (both required, nothing else)::

    {"manifest": "<base64 of release.json, the signed release manifest>",
     "url": "https://<provider>/homecare/v1/releases/<sha256>"}

In order, each a refusal that changes nothing and downloads nothing:

1. the arguments' shape and caps (``bad-args``); a router without ``[updates]`` refuses every
   offer (``not-allowed``);
2. the manifest's signature against the pinned release key (``bad-release-signature``), its
   content (``bad-args``), architecture and direction - a lower version only when signed as a
   rollback (``not-applicable``). Steps 1-2 run before the command is accepted (pure checks);
3. once accepted: another offer downloading, a release waiting in the inbox or the updater
   busy (``busy``); too little free space for the artifact and the outbox's headroom
   (``not-allowed``).

Then the artifact is downloaded (gateway/updates/fetch.py: mutual TLS with the router's
certificate and the provider's CA, timeouts, the manifest's size as a cap) in a thread of its
own and streamed into :func:`gateway.updates.inbox.drop_release` (digest and size checked as it
arrives, the entry renamed into the inbox only when whole). ``done``: the release waits in the
inbox; the root updater takes it from there and its ``update.done`` / ``update.rolled_back``
records follow. ``failed``: network, TLS, HTTP, timeout, digest or size - nothing is left behind.
A restart mid-download leaves a half entry in ``updates/incoming``: removed at the next start
(beacon.report_outcomes -> inbox.clear_incoming) and the command is sealed ``interrupted``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.commands.envelope import Command, CommandRefusedError, Reason
from gateway.commands.registry import exactly
from gateway.config.settings import Config
from gateway.updates import fetch
from gateway.updates.beacon import UPDATER_STATE
from gateway.updates.errors import (
    ReleaseInvalidError,
    ReleaseNotApplicableError,
    ReleaseSignatureError,
    UpdateBusyError,
    UpdateError,
)
from gateway.updates.inbox import check_applicable, drop_release, inbox_dir
from gateway.updates.release import MAX_MANIFEST_BYTES, Release, verify_manifest
from gateway.updates.updater import machine_arch

log = structlog.get_logger("gateway.commands")

# The manifest travels base64'd inside the command envelope (16 KiB at most, itself base64'd):
# 8 KiB of base64 is a 6 KiB manifest, ten times a real one.
MAX_MANIFEST_B64_CHARS = 8 * 1024
# 256 MiB (the artifact cap) at 1.2 Mbit/s; a home's line is usually far faster.
DOWNLOAD_DEADLINE_S = 30 * 60.0
OFFER_TIMEOUT_S = DOWNLOAD_DEADLINE_S + 120.0  # the runner's limit: the download's own first
# Left free after the artifact: what the outbox may still grow by (up to its quota), plus this.
FREE_SPACE_MARGIN_BYTES = 32 * 1024 * 1024
MAX_UPDATER_STATE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Offer:
    manifest: bytes
    release: Release
    url: str


def load_release_key(path: Path) -> ed25519.Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise TypeError("not an Ed25519 public key")
    return key


class UpdateOffers:
    """The validator and handler of ``update.offer`` for one daemon."""

    def __init__(
        self,
        cfg: Config,
        *,
        running_version: str,
        arch: str | None = None,
        updater_state: Path = UPDATER_STATE,
    ) -> None:
        self._cfg = cfg
        self._running = running_version
        self._arch = arch or machine_arch()
        self._updater_state = updater_state
        self._active = threading.Lock()  # held by the download thread until it has cleaned up
        self._key: ed25519.Ed25519PublicKey | None = None
        self._key_problem = "this router takes no updates (no [updates] in gateway.toml)"
        if cfg.updates is not None:
            try:
                self._key = load_release_key(cfg.updates.release_signing_key)
            except (OSError, ValueError, TypeError) as exc:
                self._key_problem = f"the pinned release key is unusable ({type(exc).__name__})"
                log.error("update.release_key_unusable", path=str(cfg.updates.release_signing_key))  # noqa: TRY400

    # -- before acceptance: pure --------------------------------------------------------------

    def validate(self, args: Mapping[str, Any]) -> Offer:
        exactly(args, "manifest", "url")
        text, url = args["manifest"], args["url"]
        if not isinstance(text, str) or not 0 < len(text) <= MAX_MANIFEST_B64_CHARS:
            raise CommandRefusedError(
                Reason.BAD_ARGS,
                f"manifest must be base64 text of 1-{MAX_MANIFEST_B64_CHARS} characters",
            )
        try:
            manifest = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CommandRefusedError(Reason.BAD_ARGS, "manifest is not base64") from None
        if len(manifest) > MAX_MANIFEST_BYTES:
            raise CommandRefusedError(Reason.BAD_ARGS, "manifest too large")
        try:
            fetch.check_url(url)
        except ValueError as exc:
            raise CommandRefusedError(Reason.BAD_ARGS, str(exc)) from None
        if self._key is None:
            raise CommandRefusedError(Reason.NOT_ALLOWED, self._key_problem)
        try:
            release = verify_manifest(manifest, self._key)
            check_applicable(release, arch=self._arch, running_version=self._running)
        except ReleaseSignatureError as exc:
            raise CommandRefusedError(Reason.BAD_RELEASE_SIGNATURE, exc.message) from None
        except ReleaseNotApplicableError as exc:
            raise CommandRefusedError(Reason.NOT_APPLICABLE, exc.message) from None
        except ReleaseInvalidError as exc:
            raise CommandRefusedError(Reason.BAD_ARGS, exc.message) from None
        return Offer(manifest, release, str(url))

    # -- after acceptance ---------------------------------------------------------------------

    async def handle(self, command: Command, offer: Offer) -> dict[str, Any]:
        if not self._active.acquire(blocking=False):
            raise CommandRefusedError(Reason.BUSY, "another offered release is being downloaded")
        try:
            await asyncio.to_thread(self._check_room, offer.release)
        except BaseException:
            self._active.release()
            raise
        loop = asyncio.get_running_loop()
        result: asyncio.Future[dict[str, Any]] = loop.create_future()
        cancel = threading.Event()

        def settle(value: dict[str, Any] | None, exc: BaseException | None) -> None:
            if result.done():  # the handler was cancelled meanwhile
                return
            if exc is not None:
                result.set_exception(exc)
            else:
                assert value is not None
                result.set_result(value)

        def work() -> None:
            value: dict[str, Any] | None = None
            error: BaseException | None = None
            try:
                value = self._download(offer, cancel)
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop as it is
                error = exc
            finally:
                self._active.release()  # drop_release has removed what it wrote by now
            # A closed loop (RuntimeError): the daemon stopped meanwhile; nobody waits.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle, value, error)

        log.info(
            "update.offer_download",
            command_id=command.command_id,
            version=offer.release.version,
            size=offer.release.size,
        )
        threading.Thread(target=work, name="update.offer", daemon=True).start()
        try:
            return await result
        except asyncio.CancelledError:  # the runner's timeout, or shutdown: stop the download
            cancel.set()
            raise

    def _check_room(self, release: Release) -> None:
        """Busy or short of space: refused before a byte is fetched (a thread: file I/O)."""
        inbox = inbox_dir(self._cfg.state_dir)
        try:
            waiting = [p.name for p in inbox.iterdir() if not p.name.startswith(".")]
        except FileNotFoundError:
            waiting = []
        if waiting:
            raise CommandRefusedError(
                Reason.BUSY, f"release {waiting[0][:40]} already waits for the updater"
            )
        phase = self._updater_phase()
        if phase not in (None, "idle"):
            raise CommandRefusedError(Reason.BUSY, f"the updater is busy ({phase})")
        free = shutil.disk_usage(self._cfg.state_dir).free
        try:
            outbox = self._cfg.outbox_path.stat().st_size
        except OSError:
            outbox = 0
        need = release.size + max(0, self._cfg.outbox_quota_bytes - outbox)
        need += FREE_SPACE_MARGIN_BYTES
        if free < need:
            raise CommandRefusedError(
                Reason.NOT_ALLOWED,
                f"{free // 2**20} MiB free; the release and the outbox's headroom need "
                f"{need // 2**20} MiB",
            )

    def _updater_phase(self) -> str | None:
        try:
            raw = self._updater_state.read_bytes()[: MAX_UPDATER_STATE_BYTES + 1]
            state = json.loads(raw)
        except (OSError, ValueError):
            return None  # no updater state yet (or unreadable): the updater checks again anyway
        phase = state.get("phase") if isinstance(state, dict) else None
        return str(phase)[:32] if phase is not None else None

    def _download(self, offer: Offer, cancel: threading.Event) -> dict[str, Any]:
        """In the offer's thread: fetch and drop; typed errors, nothing left behind."""
        assert self._key is not None  # validate() refused otherwise
        cfg = self._cfg
        tls = fetch.TlsFiles(
            ca_file=cfg.provisioning.est_ca_file if cfg.provisioning else cfg.ca_file,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
        )
        started = time.monotonic()
        chunks = fetch.stream(
            offer.url,
            tls,
            max_bytes=offer.release.size,
            deadline_s=DOWNLOAD_DEADLINE_S,
            cancel=cancel,
        )
        try:
            dropped = drop_release(
                cfg.state_dir,
                offer.manifest,
                chunks,
                self._key,
                arch=self._arch,
                running_version=self._running,
            )
        except UpdateBusyError as exc:
            raise CommandRefusedError(Reason.BUSY, exc.message) from None
        except ReleaseNotApplicableError as exc:
            raise CommandRefusedError(Reason.NOT_APPLICABLE, exc.message) from None
        except OSError as exc:
            raise UpdateError(
                f"the release could not be stored: {exc.strerror or type(exc).__name__}",
                hint="check the router's disk (gatewayctl self-test); offer again",
            ) from None
        finally:
            chunks.close()
        took = time.monotonic() - started
        log.info("update.offer_dropped", version=dropped.release.version, seconds=round(took, 1))
        return {
            "version": dropped.release.version,
            "inbox_entry": dropped.entry_id,
            "bytes": dropped.release.size,
            "download_s": round(took, 1),
        }
