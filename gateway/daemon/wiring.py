"""What the daemon reads: drivers built from the configuration or the episode's binding.

Part of the composition root (gateway/daemon/main.py): the configured simulated (a plug-in),
serial and BLE devices become drivers with their upload lanes; an enrolled router reads only the
devices bound to its episode. The BLE stack is imported only when a BLE device is read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import structlog

from drivers.serial.oximeter_driver import OximeterDriver
from gateway.config import ble as ble_config
from gateway.config import serial as serial_config
from gateway.config.settings import Config
from gateway.errors import ConfigError, ModelError
from gateway.model import DeviceId, DeviceIdKind, Measurement
from gateway.pipeline.ingest import IngestWriter, Lane
from gateway.power.poweroff import LogindPowerOff, PowerOff
from provisioning import runtime as provisioning

if TYPE_CHECKING:
    from drivers.ble.agent import PairingAgent

log = structlog.get_logger("gateway.daemon")

# Device kinds that live outside the router's packages register here (Python entry points). The
# simulated home (rig/devices.py) provides "simulated" for the demo, the tests and training; a
# router's package does not ship it, so [[sim_devices]] there is a configuration error.
DRIVER_PLUGINS = "homecare_gateway.drivers"
# Likewise the way to power off after a clean stop on battery ([power] power_off): "logind" is
# the router's; the simulated home registers one that records the request instead.
POWER_OFF_PLUGINS = "homecare_gateway.power_off"


def plugin(kind: str) -> Callable[..., Any]:
    """The driver class another package registered for ``kind``; ConfigError when none did."""
    found = entry_points(group=DRIVER_PLUGINS, name=kind)
    if not found:
        raise ConfigError(
            "sim_devices",
            f"device kind {kind!r} is not installed here: simulated devices come with the "
            "simulated home (the rig package, for the demo, tests and training), which a "
            "router does not carry; remove the [[sim_devices]] tables",
        )
    loaded: Callable[..., Any] = next(iter(found)).load()
    return loaded


def check_devices(cfg: Config) -> None:
    """The start's device checks, opening nothing: ``gatewayd --check-config`` and the start
    both call this, so a configuration the start would refuse is refused by the check too, with
    the same line (a simulated device's address; a device kind no installed package provides -
    [[sim_devices]] on a router, which does not carry the simulated home)."""
    for i, d in enumerate(cfg.sim_devices):
        try:
            DeviceId(DeviceIdKind.BTMAC, d.address)
        except ModelError as exc:
            raise ConfigError(
                f"sim_devices[{i}].address", exc.message, path=str(cfg.path)
            ) from None
    if cfg.sim_devices:
        plugin("simulated")


def power_off_for(cfg: Config) -> PowerOff:
    """The power-off action ``[power] power_off`` names (logind unless a plug-in is named)."""
    name = cfg.power.power_off if cfg.power else "logind"
    if name == "logind":
        return LogindPowerOff(cfg.state_dir)
    found = entry_points(group=POWER_OFF_PLUGINS, name=name)
    if not found:
        raise ConfigError(
            "power.power_off",
            f'power-off plug-in {name!r} is not installed here; use "logind" on a router',
        )
    made: PowerOff = next(iter(found)).load()(cfg.state_dir)
    return made


def build_drivers(
    cfg: Config,
    writer: IngestWriter | None = None,
    bound: provisioning.BoundDevices | None = None,
) -> list[tuple[Any, Lane | Callable[[Measurement], Lane]]]:
    """Every configured driver with its upload lane (continuous oximetry is a stream).

    With ``bound`` (an enrolled router) only the devices bound to the episode are read, and none
    while the equipment is being returned."""
    bound = bound or provisioning.BoundDevices(intake=True, devices=None)
    drivers: list[tuple[Any, Lane | Callable[[Measurement], Lane]]] = []
    simulated = [d for d in cfg.sim_devices if bound.admits_sim(d)]
    if simulated:
        make_sim = plugin("simulated")
        drivers += [
            (
                make_sim(d.kind, d.address, d.interval_s, count=d.count, memory=d.memory),
                Lane.STREAM if d.stream else Lane.SPOT,
            )
            for d in simulated
        ]
    unusable = writer.report_unusable if writer is not None else None
    serial = [d for d in cfg.serial_devices if bound.admits_serial(d)]
    for drv in serial_config.build(serial, report_unusable=unusable):
        drivers.append((drv, drv.lane_of if isinstance(drv, OximeterDriver) else Lane.SPOT))
    ble_devices = ble_for(cfg, bound)
    ble = ble_config.build(ble_devices, cfg.state_dir, report_unusable=unusable)
    drivers.extend((drv, ble_config.lanes_of(drv)) for drv in ble)
    return drivers


def ble_for(cfg: Config, bound: provisioning.BoundDevices) -> list[ble_config.BleDeviceConfig]:
    """The BLE devices to read: [[ble_devices]] when not provisioned, else the episode's binding.

    A bound device keeps the adapter and name of a matching [[ble_devices]] entry; one that a
    [[sim_devices]] entry stands in for (same address) is read by the simulator instead.
    """
    if not bound.intake:
        return []
    if bound.devices is None:
        return list(cfg.ble_devices)
    configured = {c.address.upper(): c for c in cfg.ble_devices}
    simulated = {d.address.upper() for d in cfg.sim_devices}
    out = []
    for b in bound.ble():
        address = b.address.upper()
        if address in simulated:
            continue
        known = configured.get(address)
        try:
            out.append(
                ble_config.BleDeviceConfig.from_binding(
                    b, name=known.name if known else "", adapter=known.adapter if known else None
                )
            )
        except ConfigError as exc:  # a binding we cannot read: say so, read the rest
            # The problem is the message (a device the provider must fix); no traceback.
            log.error("provisioning.binding_unusable", device=address, error=exc.one_line())  # noqa: TRY400
    return out


def bluetooth_links(drivers: Sequence[object]) -> dict[str, Callable[[], dict[str, Any]]]:
    """The BLE drivers' shared advertiser tally as a health "link" (none without BLE)."""
    for d in drivers:
        tally = getattr(d, "tally", None)  # only BLE drivers count advertisers
        if tally is not None:
            return {"bluetooth": tally.snapshot}
    return {}


def build_agent(
    devices: Sequence[ble_config.BleDeviceConfig], drivers: Sequence[object]
) -> PairingAgent | None:
    """Our org.bluez.Agent1 for the BLE devices read (none without any); it also tells the BLE
    drivers when bluetoothd goes away."""
    if not devices:
        return None
    from drivers.ble.agent import PairingAgent  # noqa: PLC0415 - BLE stack only when used
    from drivers.ble.session import BleDeviceDriver  # noqa: PLC0415

    agent = PairingAgent({c.address: c.passkey for c in devices})
    for d in drivers:
        if isinstance(d, BleDeviceDriver):
            agent.on_bluez_lost(d.bluez_lost)
    return agent


def rehook_agent(
    agent: PairingAgent, devices: Sequence[ble_config.BleDeviceConfig], drivers: Sequence[object]
) -> None:
    """The running agent, after the devices were re-bound: it answers BlueZ for the new list
    only (its allow-list), and tells the new BLE drivers when bluetoothd goes away. (The old
    drivers' callbacks stay registered and do nothing: they are few, one set per re-binding.)"""
    from drivers.ble.session import BleDeviceDriver  # noqa: PLC0415 - BLE stack only when used

    agent.agent.passkeys = {c.address.upper(): c.passkey for c in devices}
    for d in drivers:
        if isinstance(d, BleDeviceDriver):
            agent.on_bluez_lost(d.bluez_lost)
