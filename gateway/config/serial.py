"""The ``[[serial_devices]]`` part of the configuration, and the drivers built from it.

Kept apart from gateway/config/settings.py (the core settings) because it knows the serial drivers.
Every mistake is a ConfigError naming ``serial_devices[i].key``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from drivers.serial.astm_driver import AstmDriver, AstmDriverConfig
from drivers.serial.astm_results import AstmOptions
from drivers.serial.modem_driver import MODEM_LINE, ModemDriver, ModemDriverConfig
from drivers.serial.oximeter_driver import OximeterDriver, OximeterDriverConfig, OximeterProtocol
from drivers.serial.port import FlowControl, LineSettings, PortSpec
from drivers.serial.reducer import ReducerConfig
from gateway.config.tomltable import Table
from gateway.errors import ConfigError, GatewayError
from gateway.gaps import UnusableReading
from gateway.model import DeviceId, DeviceIdKind

KINDS = ("astm", "nonin", "cms50", "modem")
_KEYS = (
    "kind",
    "name",
    "path",
    "line",
    "flow",
    "device_tz",
    "serial",
    "interval_s",
    "desaturation_below_pct",
    "drop_points",
    "no_data_s",
    "poll_interval_s",
)


@dataclass(frozen=True, slots=True)
class SerialDeviceConfig:
    kind: str
    name: str
    path: str
    line: str | None
    flow: str
    device_tz: str
    serial: str | None
    interval_s: float
    desaturation_below_pct: int
    drop_points: int
    no_data_s: float
    poll_interval_s: float


def parse(items: object, path: Path) -> tuple[SerialDeviceConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError(
            "serial_devices", "must be an array of tables ([[serial_devices]])", path=str(path)
        )
    out = []
    for i, raw in enumerate(items):
        where = f"serial_devices[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(where, "must be a table", path=str(path))
        out.append(_one(raw, where, path))
    names = [d.name for d in out]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("serial_devices", f"name {name!r} is used twice", path=str(path))
        if name in ("vpn", "wan-route"):  # the link monitor's own entries in health reports
            raise ConfigError("serial_devices", f"name {name!r} is reserved", path=str(path))
    return tuple(out)


def _one(raw: Mapping[str, Any], where: str, path: Path) -> SerialDeviceConfig:
    t = Table(raw, where, path, _KEYS)
    err, get = t.error, t.get

    kind = get("kind", str, ...)
    if kind not in KINDS:
        raise err("kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    dev_path = get("path", str, ...)
    if not dev_path.startswith("/"):
        raise err("path", "must be an absolute device path such as /dev/serial/by-id/...")
    serial = get("serial", str, None)
    if kind in ("nonin", "cms50") and not serial:
        raise err("serial", "required for an oximeter: the serial number on its label")
    flow = get("flow", str, "none")
    if flow not in {f.value for f in FlowControl}:
        raise err("flow", f"must be one of {', '.join(f.value for f in FlowControl)}")
    tz = get("device_tz", str, "UTC")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise err("device_tz", f"unknown time zone {tz!r}") from None
    line = get("line", str, None)
    if line is not None:
        try:
            LineSettings.parse(line, FlowControl(flow))
        except GatewayError as exc:
            raise err("line", exc.message) from None
    return SerialDeviceConfig(
        kind=kind,
        name=get("name", str, kind),
        path=dev_path,
        line=line,
        flow=flow,
        device_tz=tz,
        serial=serial,
        interval_s=get("interval_s", float, 60.0),
        desaturation_below_pct=get("desaturation_below_pct", int, 90),
        drop_points=get("drop_points", int, 4),
        no_data_s=get("no_data_s", float, 10.0),
        poll_interval_s=get("poll_interval_s", float, 30.0),
    )


def build(
    configs: Sequence[SerialDeviceConfig],
    *,
    report_unusable: Callable[[UnusableReading], Awaitable[bool]] | None = None,
) -> list[AstmDriver | OximeterDriver | ModemDriver]:
    """The drivers; ``report_unusable`` accounts for ASTM results that cannot be mapped."""
    drivers: list[AstmDriver | OximeterDriver | ModemDriver] = []
    for c in configs:
        flow = FlowControl(c.flow)
        if c.kind == "astm":
            line = LineSettings.parse(c.line, flow) if c.line else LineSettings(flow=flow)
            drivers.append(
                AstmDriver(
                    AstmDriverConfig(
                        name=c.name,
                        port=PortSpec(c.path, line=line),
                        options=AstmOptions(device_tz=ZoneInfo(c.device_tz)),
                    ),
                    report_unusable=report_unusable,
                )
            )
        elif c.kind in ("nonin", "cms50"):
            protocol = OximeterProtocol(c.kind)
            line = LineSettings.parse(c.line, flow) if c.line else protocol.line
            drivers.append(
                OximeterDriver(
                    OximeterDriverConfig(
                        name=c.name,
                        protocol=protocol,
                        port=PortSpec(c.path, line=line),
                        device=DeviceId(DeviceIdKind.SERIAL, c.serial or c.name),
                        reducer=ReducerConfig(
                            c.interval_s, c.desaturation_below_pct, c.drop_points
                        ),
                        no_data_s=c.no_data_s,
                    )
                )
            )
        else:
            line = LineSettings.parse(c.line, flow) if c.line else MODEM_LINE
            drivers.append(
                ModemDriver(
                    ModemDriverConfig(
                        port=PortSpec(c.path, line=line),
                        name=c.name,
                        poll_interval_s=c.poll_interval_s,
                    )
                )
            )
    return drivers
