"""The ``[[ble_devices]]`` part of the configuration, and the drivers built from it.

Kept apart from gateway/config/settings.py (the core settings) because it knows the BLE driver.
Every
mistake is a ConfigError naming ``ble_devices[i].key``. ``BleDeviceConfig`` validates itself on
construction, so the episode binding (provisioning's ``BoundDevice`` records) converts with
``BleDeviceConfig.from_binding(bound)`` and gets the same checks as the TOML file.

    [[ble_devices]]
    address = "A4:C1:38:10:00:02"
    profile = "blood-pressure"        # or thermometer, pulse-oximeter, pulse-oximeter-continuous,
                                     # weight-scale, glucose, heart-rate, cgm,
                                     # generic-health-sensor
    name = "bp"                      # optional, default "<profile>-<last 5 of the address>"
    passkey = 246810                 # optional; the device shows it, the gateway's agent types it
    expected_interval_s = 43200      # optional; "silent" in health reports after 2x this
    adapter = "hci0"                 # optional; default: BlueZ's default adapter
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

# The profile table only: the session (bleak, D-Bus) is imported when drivers are built, so a
# configuration check or a gateway without BLE devices never loads the BLE stack.
from drivers.ble.profiles import BACKLOG_PROFILES, PROFILES, RACP_PROFILES, STREAM_PROFILES
from gateway.config.tomltable import Table
from gateway.errors import ConfigError
from gateway.gaps import UnusableReading
from gateway.model import Measurement
from gateway.pipeline.ingest import Lane

if TYPE_CHECKING:
    from drivers.ble.session import BleDeviceDriver

_KEYS = ("address", "profile", "name", "passkey", "expected_interval_s", "adapter")
_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_ADAPTER = re.compile(r"^hci[0-9]{1,2}$")


class Binding(Protocol):
    """What provisioning's episode binding holds for one bound device (``BoundDevice``)."""

    @property
    def transport(self) -> str: ...
    @property
    def address(self) -> str: ...
    @property
    def profile(self) -> str: ...
    @property
    def passkey(self) -> int | str | None: ...  # the bundle carries six digits as text
    @property
    def expected_interval_s(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class BleDeviceConfig:
    """One bound BLE device. Raises ConfigError (key without the ``ble_devices[i].`` prefix)
    on construction when a field is wrong."""

    address: str
    profile: str
    name: str = ""
    # The bonding secret: out of repr, so no log line or support bundle can carry it.
    passkey: int | None = field(default=None, repr=False)
    expected_interval_s: float | None = None
    adapter: str | None = None

    def __post_init__(self) -> None:
        address = self.address.strip().upper().replace("-", ":")
        if not _ADDRESS.match(address):
            raise ConfigError("address", f"not a Bluetooth address (AA:BB:CC:DD:EE:FF): "
                              f"{self.address!r}")
        object.__setattr__(self, "address", address)
        if self.profile not in PROFILES:
            raise ConfigError("profile", f"must be one of {', '.join(PROFILES)}, "
                              f"got {self.profile!r}")
        if self.passkey is not None and (isinstance(self.passkey, bool)
                                         or not 0 <= self.passkey <= 999_999):
            raise ConfigError("passkey", "must be the device's six-digit passkey (0..999999)")
        if self.expected_interval_s is not None and not (
                0 < self.expected_interval_s <= 30 * 86400):
            raise ConfigError("expected_interval_s", "must be between 0 and 30 days in seconds")
        if self.adapter is not None and not _ADAPTER.match(self.adapter):
            raise ConfigError("adapter", f"must be a BlueZ adapter name such as hci0, "
                              f"got {self.adapter!r}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.profile}-{address[-5:].replace(':', '')}")

    @classmethod
    def from_binding(cls, bound: Binding, *, name: str = "", adapter: str | None = None
                     ) -> BleDeviceConfig:
        """The configuration of a device bound to the episode (ConfigError if it is not BLE)."""
        if bound.transport != "ble":
            raise ConfigError("transport", f"not a BLE device: {bound.transport!r}")
        passkey = bound.passkey
        if isinstance(passkey, str):  # "012345": the leading zero is why it travels as text
            if not re.fullmatch(r"[0-9]{6}", passkey):
                raise ConfigError("passkey", "must be the device's six-digit passkey")
            passkey = int(passkey)
        return cls(address=bound.address, profile=bound.profile, name=name,
                   passkey=passkey, expected_interval_s=bound.expected_interval_s,
                   adapter=adapter)

    @property
    def lane(self) -> Lane:
        """The device's main lane: continuous profiles (heart rate, CGM, continuous oximetry)
        upload on the stream lane, spot readings on the spot lane."""
        return Lane.STREAM if self.profile in STREAM_PROFILES else Lane.SPOT

    def state_file(self, state_dir: Path) -> Path:
        """Where a device with stored records keeps its RACP cursor."""
        return state_dir / "ble" / f"{self.address.replace(':', '')}.json"

    def seen_file(self, state_dir: Path) -> Path:
        """Where a device that replays its backlog keeps the identifiers already stored."""
        return state_dir / "ble" / f"{self.address.replace(':', '')}.seen.json"


def lanes_of(driver: BleDeviceDriver) -> Callable[[Measurement], Lane]:
    """Per reading: a thermometer's intermediate temperatures and an oximeter's continuous
    values are streams even though the device's spot readings are not."""
    def lane(m: Measurement) -> Lane:
        return Lane.STREAM if driver.streamed(m) else Lane.SPOT

    return lane


def parse(items: object, path: Path) -> tuple[BleDeviceConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError("ble_devices", "must be an array of tables ([[ble_devices]])",
                          path=str(path))
    out = []
    for i, raw in enumerate(items):
        where = f"ble_devices[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(where, "must be a table", path=str(path))
        out.append(_one(raw, where, path))
    for field_name in ("address", "name"):
        seen: set[str] = set()
        for device in out:
            value = getattr(device, field_name)
            if value in seen:
                raise ConfigError("ble_devices", f"{field_name} {value!r} is used twice",
                                  path=str(path))
            seen.add(value)
    return tuple(out)


def _one(raw: Mapping[str, Any], where: str, path: Path) -> BleDeviceConfig:
    t = Table(raw, where, path, _KEYS)
    err, get = t.error, t.get

    passkey = raw.get("passkey")
    if isinstance(passkey, str):  # "012345" keeps its leading zero in TOML as a string
        if not re.fullmatch(r"[0-9]{6}", passkey):
            raise err("passkey", "must be the device's six-digit passkey")
        passkey = int(passkey)
    elif passkey is not None and (not isinstance(passkey, int) or isinstance(passkey, bool)):
        raise err("passkey", "must be the device's six-digit passkey")
    try:
        return BleDeviceConfig(
            address=get("address", str, ...),
            profile=get("profile", str, ...),
            name=get("name", str, ""),
            passkey=passkey,
            expected_interval_s=get("expected_interval_s", float, None, what="a number"),
            adapter=get("adapter", str, None),
        )
    except ConfigError as exc:
        raise err(exc.key, exc.problem) from None


def build(
    configs: Sequence[BleDeviceConfig],
    state_dir: Path,
    report_unusable: Callable[[UnusableReading], Awaitable[bool]] | None = None,
) -> list[BleDeviceDriver]:
    """One driver per bound device; stored-record devices get their cursor file.
    ``report_unusable`` accounts for observations that cannot be mapped (Generic Health
    Sensor)."""
    if not configs:
        return []
    from drivers.ble.discovery import AdvertiserTally  # noqa: PLC0415 - see top
    from drivers.ble.session import BleDeviceDriver  # noqa: PLC0415 - see top

    drivers = []
    tally = AdvertiserTally(c.address for c in configs)  # one for all: neighbours counted once
    for c in configs:
        state_file = seen_file = None
        if c.profile in RACP_PROFILES:
            state_file = c.state_file(state_dir)
        if c.profile in BACKLOG_PROFILES:
            seen_file = c.seen_file(state_dir)
        for f in (state_file, seen_file):
            if f is not None:
                f.parent.mkdir(parents=True, exist_ok=True)
        drivers.append(BleDeviceDriver(
            c.address, c.profile, name=c.name, expected_interval_s=c.expected_interval_s,
            passkey=c.passkey, adapter=c.adapter, state_file=state_file, seen_file=seen_file,
            tally=tally, report_unusable=report_unusable))
    return drivers
