"""The commands this router runs for the provider's command centre (issue 20).

Each is registered with a pure argument validator and a handler (gateway/commands/registry.py);
the runner (gateway/commands/runner.py) verifies, audits and runs them. Who may send them: only
the holder of the provider's command key pinned at enrolment, published on the router's own
command topic, which the broker lets only the provider write. docs/operations.md ("Commands from
the command centre") is the command centre's guide to the same list.

- ``device.bind`` / ``device.unbind``: change the episode's devices (enrolled routers, while the
  episode runs). Kept in the state directory on top of the bundle; the drivers are replaced at
  once (gateway/daemon/intake.py): a newly bound device is read without a restart.
- ``config.set``: one setting of :data:`gateway.daemon.overrides.ALLOWED`; anything else is
  refused ``not-allowed``. Kept across restarts; ``health_interval_s`` applies at once.
- ``support.bundle``: the technician's support bundle (gateway/cli/support_bundle.py: no
  readings, no keys), sealed as an event record (signed, encrypted to the provider's HPKE key)
  and uploaded with the records; ``homecare-provider command support-bundle`` writes it out.
- ``rescan``: re-probe the links and restart every device driver (discovery, reconnect).
- ``health.report``: seal a health record now.
- ``return.drain``: the remote half of the equipment return - the lifecycle goes to
  ``returning``, intake stops (what devices handed over is committed), and the uplink delivers
  everything held. The rest stays physical, at the depot: ``gatewayctl return`` resumes from
  there (unbond, final report, revoke, erase), as provisioning/equipment_return.py describes.
- ``update.offer``: a signed release (manifest + https URL), checked against the pinned release
  key before anything is fetched, downloaded with the router's certificate into the root
  updater's inbox (gateway/daemon/update_offer.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from buffer.outbox import Outbox
from gateway import __version__
from gateway.cli import support_bundle
from gateway.commands.envelope import Command, CommandRefusedError, Reason
from gateway.commands.registry import Registry, exactly, no_args
from gateway.config.settings import Config
from gateway.daemon import overrides
from gateway.daemon.intake import Intake
from gateway.daemon.update_offer import OFFER_TIMEOUT_S, UpdateOffers
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.health import HealthReporter
from gateway.pipeline.ingest import IngestWriter, Lane
from gateway.seal import wire
from gateway.updates.beacon import running_release
from gateway.uplink.linkmon import LinkMonitor
from provisioning import runtime as provisioning
from provisioning.bundle import BoundDevice
from provisioning.rebinding import MAX_BOUND_DEVICES, load_changes, save_changes
from provisioning.state import LifecycleStore, Phase

log = structlog.get_logger("gateway.commands")

MAX_SUPPORT_BUNDLE_BYTES = 512 * 1024  # compressed; a bigger one is refused, not truncated
SUPPORT_BUNDLE_TIMEOUT_S = 180.0  # the self-test probes the links; a loaded router is slow

Seal = Callable[[dict[str, Any]], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class DeviceRef:
    transport: str
    address: str


def _device(args: Mapping[str, Any]) -> BoundDevice:
    allowed = {"transport", "address", "profile", "expected_interval_s", "passkey"}
    if not {"transport", "address", "profile", "expected_interval_s"} <= set(args) <= allowed:
        raise CommandRefusedError(
            Reason.BAD_ARGS,
            "device.bind takes transport, address, profile, expected_interval_s [, passkey]",
        )
    interval = args["expected_interval_s"]
    if not isinstance(interval, int | float) or isinstance(interval, bool):
        raise CommandRefusedError(Reason.BAD_ARGS, "expected_interval_s must be a number")
    try:
        return BoundDevice.from_json(args)
    except (ValueError, KeyError, TypeError) as exc:
        raise CommandRefusedError(Reason.BAD_ARGS, f"device: {exc}") from None


def _device_ref(args: Mapping[str, Any]) -> DeviceRef:
    exactly(args, "transport", "address")
    transport, address = args["transport"], args["address"]
    if transport not in ("ble", "serial") or not isinstance(address, str) or not address:
        raise CommandRefusedError(
            Reason.BAD_ARGS, "transport must be ble or serial, with an address"
        )
    if len(address) > 128 or not address.isprintable():
        raise CommandRefusedError(Reason.BAD_ARGS, "address is not a device address")
    return DeviceRef(transport, address.upper() if transport == "ble" else address)


def _setting(args: Mapping[str, Any]) -> tuple[str, Any]:
    exactly(args, "key", "value")
    key, value = args["key"], args["value"]
    if not isinstance(key, str) or key not in overrides.ALLOWED:
        raise CommandRefusedError(
            Reason.NOT_ALLOWED,
            f"{str(key)[:64]!r} cannot be set by command; allowed: {sorted(overrides.ALLOWED)}",
        )
    setting = overrides.ALLOWED[key]
    if not setting.check(value):
        raise CommandRefusedError(Reason.BAD_ARGS, f"{key} must be {setting.what}")
    return key, value


class DaemonCommands:
    """The handlers, with the daemon's parts they act on."""

    def __init__(
        self,
        *,
        cfg: Config,
        intake: Intake,
        health: HealthReporter,
        links: LinkMonitor,
        writer: IngestWriter,
        db: DatabaseThread,
        outbox: Outbox,
        seal_event: Seal,
    ) -> None:
        self._cfg = cfg
        self._intake = intake
        self._health = health
        self._links = links
        self._writer = writer
        self._db = db
        self._outbox = outbox
        self._seal_event = seal_event

    def registry(self) -> Registry:
        r = Registry()
        r.register("device.bind", _device, self.bind, summary="bind a device to the episode")
        r.register("device.unbind", _device_ref, self.unbind, summary="unbind a device")
        r.register("config.set", _setting, self.config_set, summary="change an allowed setting")
        r.register(
            "support.bundle",
            no_args,
            self.support_bundle,
            timeout_s=SUPPORT_BUNDLE_TIMEOUT_S,
            summary="upload the support bundle (encrypted, no readings)",
        )
        r.register("rescan", no_args, self.rescan, summary="re-probe links, restart drivers")
        r.register("health.report", no_args, self.health_report, summary="a health record now")
        r.register("return.drain", no_args, self.return_drain, summary="stop intake and deliver")
        # Software updates: verified (release key, arch, direction) before it is accepted,
        # then downloaded into the updater's inbox (gateway/daemon/update_offer.py).
        # The running version as the updater sees it: the release tree's own (its directory).
        offers = UpdateOffers(self._cfg, running_version=running_release(__version__))
        r.register(
            "update.offer",
            offers.validate,
            offers.handle,
            timeout_s=OFFER_TIMEOUT_S,
            summary="download a signed release into the updater's inbox",
        )
        return r

    # -- device binding -------------------------------------------------------------------------

    async def _episode_running(self, what: str) -> None:
        if self._cfg.provisioning is None:
            raise CommandRefusedError(
                Reason.NOT_ALLOWED,
                f"{what}: this router is not enrolled; its devices come from its configuration",
            )
        phase = (await asyncio.to_thread(LifecycleStore(self._cfg.state_dir).load)).phase
        if phase is not Phase.BOUND:
            raise CommandRefusedError(
                Reason.NOT_ALLOWED, f"{what}: the router is '{phase}', not running an episode"
            )

    async def bind(self, _: Command, device: BoundDevice) -> dict[str, Any]:
        await self._episode_running("device.bind")
        state = self._cfg.state_dir
        changes = (await asyncio.to_thread(load_changes, state)).bind(device)
        bundle = await asyncio.to_thread(provisioning.load_bundle, self._cfg)
        if len(changes.apply(bundle.devices)) > MAX_BOUND_DEVICES:
            raise CommandRefusedError(
                Reason.NOT_ALLOWED, f"at most {MAX_BOUND_DEVICES} devices may be bound"
            )
        await asyncio.to_thread(save_changes, state, changes)
        return await self._rebind(len(changes.apply(bundle.devices)))

    async def unbind(self, _: Command, ref: DeviceRef) -> dict[str, Any]:
        await self._episode_running("device.unbind")
        bound = await asyncio.to_thread(provisioning.devices, self._cfg)
        if not any(d.matches(ref.transport, ref.address) for d in bound.devices or ()):
            raise CommandRefusedError(
                Reason.BAD_ARGS, f"{ref.transport} device {ref.address} is not bound"
            )
        state = self._cfg.state_dir
        changes = (await asyncio.to_thread(load_changes, state)).unbind(ref.transport, ref.address)
        await asyncio.to_thread(save_changes, state, changes)
        return await self._rebind(len(bound.devices or ()) - 1)

    async def _rebind(self, bound_count: int) -> dict[str, Any]:
        bound = await asyncio.to_thread(provisioning.devices, self._cfg)
        drivers = await self._intake.replace(bound)
        log.info("commands.devices_rebound", bound=bound_count, drivers=drivers)
        return {"bound_devices": bound_count, "drivers": drivers}

    # -- settings -------------------------------------------------------------------------------

    async def config_set(self, _: Command, setting: tuple[str, Any]) -> dict[str, Any]:
        key, value = setting
        await asyncio.to_thread(overrides.save, self._cfg.state_dir, key, value)
        live = overrides.ALLOWED[key].live
        if key == "health_interval_s":
            self._health.set_interval(float(value))
        log.info("commands.config_set", key=key, live=live)
        return {"key": key, "applies": "now" if live else "next-start"}

    # -- reports --------------------------------------------------------------------------------

    async def health_report(self, _: Command, __: None) -> dict[str, Any]:
        seq = await self._health.report_once()
        if seq is None:
            raise CommandRefusedError(Reason.BUSY, "the outbox quota refuses health records now")
        return {"health_seq": seq}

    async def rescan(self, _: Command, __: None) -> dict[str, Any]:
        await asyncio.to_thread(self._links.refresh)
        bound = await asyncio.to_thread(provisioning.devices, self._cfg)
        drivers = await self._intake.replace(bound)
        return {"drivers": drivers}

    async def support_bundle(self, command: Command, _: None) -> dict[str, Any]:
        archive = await asyncio.to_thread(self._build_support_bundle)
        if len(archive) > MAX_SUPPORT_BUNDLE_BYTES:
            raise CommandRefusedError(
                Reason.NOT_ALLOWED,
                f"the support bundle is {len(archive)} bytes (at most {MAX_SUPPORT_BUNDLE_BYTES})",
            )
        digest = hashlib.sha256(archive).hexdigest()
        body = {
            "type": "event",
            "version": 1,
            "event": "support-bundle",
            "gateway_id": self._cfg.gateway_id,
            "episode": self._cfg.episode_id,
            "command_id": command.command_id,
            "time": datetime.now(UTC).isoformat(),
            "format": "tar.gz",
            "bytes": len(archive),
            "sha256": digest,
            "archive": base64.b64encode(archive).decode(),
        }
        # A record of its own on the spot lane: sealed (signed, and encrypted to the provider's
        # key) and delivered like the readings, never ahead of an alarm.
        seq = await self._writer.submit_payload(wire.RecordKind.EVENT, body, Lane.SPOT)
        return {"seq": seq, "bytes": len(archive), "sha256": digest}

    def _build_support_bundle(self) -> bytes:
        with tempfile.TemporaryDirectory(prefix="support-") as tmp:
            path = support_bundle.build(self._cfg, Path(tmp))
            return path.read_bytes()

    # -- equipment return -----------------------------------------------------------------------

    async def return_drain(self, command: Command, _: None) -> dict[str, Any]:
        await self._episode_running("return.drain")
        store = LifecycleStore(self._cfg.state_dir)
        await asyncio.to_thread(
            store.transition,
            Phase.RETURNING,
            detail={"forced": False, "remote_command": command.command_id},
        )
        started = datetime.now(UTC).isoformat()
        bound = await asyncio.to_thread(provisioning.devices, self._cfg)  # intake: False now
        drivers = await self._intake.replace(bound)  # only the link's modem, if any, is left
        await asyncio.to_thread(
            store.step_done, "intake-stopped", started=started, intake_stopped_by_daemon=True
        )
        await provisioning.report_pending_events(self._cfg, self._seal_event)
        stats = await self._db.run(self._outbox.stats)
        log.warning("commands.return_drain_started", outbox_depth=stats.depth)
        return {"phase": "returning", "outbox_depth": stats.depth, "drivers": drivers}
