"""What the daemon takes from provisioning: the effective configuration and the bound devices.

How the daemon consumes it (gateway/daemon/main.py):

1. ``effective_config(cfg)`` right after loading the TOML. Without ``[provisioning]`` the config
   is returned unchanged (rig and demo setups with static keys). With it, the router must be
   ``bound`` or ``returning``; the episode id, broker host/port come from the stored bundle
   (signature re-checked; its validity period only matters at enrolment). Otherwise
   ``NotEnrolledError`` (the daemon exits 2, which systemd does not restart).
2. ``devices(cfg)`` -> ``BoundDevices``: ``intake`` False while returning (no driver at all is
   started), ``devices`` the bound list. ``None`` list means "not provisioned: use the config as
   is". ``select_*`` filter configured drivers to the bound ones (a neighbour's device is never
   read - invariant 4).
3. ``report_pending_events(...)`` seals lifecycle transitions queued while the daemon was not
   running (enrolment happens with it stopped) and drops them from the queue once durable.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from gateway.config.serial import SerialDeviceConfig
from gateway.config.settings import Config, SimDeviceConfig
from provisioning.binding import check_episode_files
from provisioning.bundle import BoundDevice, EnrolmentBundle, verify_bundle
from provisioning.enrol import bundle_signer, est_client
from provisioning.errors import BundleInvalidError, NotEnrolledError
from provisioning.keystore import FileKeyStore
from provisioning.layout import StateLayout
from provisioning.rebinding import load_changes
from provisioning.renewal import renewal_loop
from provisioning.safepath import SafeTree
from provisioning.state import LifecycleStore, Phase

log = structlog.get_logger("provisioning.runtime")


@dataclass(frozen=True, slots=True)
class BoundDevices:
    intake: bool  # False while returning: intake stopped for good
    devices: tuple[BoundDevice, ...] | None  # None: not provisioned, the config decides

    def admits_sim(self, d: SimDeviceConfig) -> bool:
        """Simulated devices stand in for BLE ones (same address, profile = kind)."""
        if not self.intake:
            return False
        if self.devices is None:
            return True
        return any(b.matches("ble", d.address) and b.profile == d.kind for b in self.devices)

    def admits_serial(self, d: SerialDeviceConfig) -> bool:
        if d.kind == "modem":
            return True  # the link's own modem, not a medical device: always watched
        if not self.intake:
            return False
        if self.devices is None:
            return True
        ids = [x for x in (d.name, d.path, d.serial) if x]
        return any(
            b.profile == d.kind and any(b.matches("serial", x) for x in ids) for b in self.devices
        )

    def ble(self) -> tuple[BoundDevice, ...]:
        """For the BLE session manager: the bound BLE devices (empty while returning)."""
        if not self.intake or self.devices is None:
            return ()
        return tuple(b for b in self.devices if b.transport == "ble")


def load_bundle(cfg: Config, *, check_files: bool = True) -> EnrolmentBundle:
    layout = StateLayout(cfg.state_dir)
    try:
        raw = SafeTree(layout.state_dir).read_bytes(layout.bundle)
    except FileNotFoundError:
        raise NotEnrolledError("the router has no episode bundle") from None
    # Validity and binding are checked at enrolment; an episode outlives the bundle's acceptance
    # window. The episode files the daemon loads must still be the ones the bundle carries.
    bundle = verify_bundle(raw, bundle_signer(cfg), cfg.gateway_id, check_validity=False)
    if check_files:
        check_episode_files(layout, bundle)
    return bundle


def effective_config(cfg: Config, *, check_files: bool = True) -> Config:
    """The configuration with the episode's broker; ``check_files=False`` for the equipment
    return, which must be able to erase a router whose episode files were tampered with."""
    if cfg.provisioning is None:
        return cfg
    lc = LifecycleStore(cfg.state_dir).load()
    if lc.phase not in (Phase.BOUND, Phase.RETURNING):
        raise NotEnrolledError(
            f"the router is in the '{lc.phase}' state, not enrolled for an episode"
        )
    bundle = load_bundle(cfg, check_files=check_files)
    return dataclasses.replace(
        cfg,
        episode_id=bundle.episode_id,
        test_episode=bundle.test_episode,
        broker_host=bundle.broker_host,
        broker_port=bundle.broker_port,
        # Pinned at enrolment: the bundle's key replaces any in the configuration.
        command_key=bundle.command_key,
    )


def devices(cfg: Config) -> BoundDevices:
    """The devices to read: the bundle's, with the changes signed commands made since."""
    if cfg.provisioning is None:
        return BoundDevices(intake=True, devices=None)
    lc = LifecycleStore(cfg.state_dir).load()
    listed = load_bundle(cfg).devices
    try:
        listed = load_changes(cfg.state_dir).apply(listed)
    except BundleInvalidError as exc:
        log.error("provisioning.binding_changes_unusable", error=exc.one_line())  # noqa: TRY400
    return BoundDevices(intake=lc.phase is Phase.BOUND, devices=listed)


def is_returning(cfg: Config) -> bool:
    """Is an equipment return in progress? (the control socket's return commands need one)"""
    if cfg.provisioning is None:
        return False
    return LifecycleStore(cfg.state_dir).load().phase is Phase.RETURNING


async def report_pending_events(
    cfg: Config, submit: Callable[[dict[str, Any]], Awaitable[int]]
) -> int:
    """Seal queued lifecycle events (``submit`` returns once the record is durable)."""
    if cfg.provisioning is None:
        return 0
    store = LifecycleStore(cfg.state_dir)
    events: Sequence[dict[str, Any]] = (await asyncio.to_thread(store.load)).events
    done = set()
    for event in events:
        await submit(event)
        done.add(str(event["id"]))
    if done:
        await asyncio.to_thread(store.events_reported, done)
        log.info("provisioning.events_reported", count=len(done))
    return len(done)


async def renewal_task(cfg: Config) -> None:
    """Keep the TLS certificate fresh (EST simplereenroll) while the episode runs."""
    layout = StateLayout(cfg.state_dir)
    await renewal_loop(layout, FileKeyStore(layout.keys_dir), est_client(cfg), cfg.gateway_id)
