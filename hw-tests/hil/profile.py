"""Rig profiles: what a hardware-in-the-loop rig has attached, as validated frozen values.

A profile is a TOML file (``hw-tests/rigs/*.toml``, see hw-tests/README.md). ``RIG=sim`` (the
default) names the simulated rig shipped in ``hw-tests/rigs/sim.toml``; ``RIG=path/to/rig.toml``
a real one. Every problem is one :class:`ProfileError` naming the key (``ble.devices[1].address``)
and what is wrong with it, so a rig builder fixes the file without reading this module.

Capabilities (what scenarios the rig can run) are derived from the profile alone; a scenario
whose capability is missing is skipped with :meth:`RigProfile.missing`'s reason.
"""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RIGS_DIR = Path(__file__).resolve().parents[1] / "rigs"
_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_ADAPTER = re.compile(r"^hci[0-9]{1,2}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
BLE_PROFILES = ("thermometer", "blood-pressure", "pulse-oximeter", "weight-scale", "glucose")
SERIAL_PROTOCOLS = ("astm", "nonin", "cms50", "modem")
SIM_KINDS = ("thermometer", "blood-pressure", "pulse-oximeter")
# Devices that keep readings taken out of range and hand them over later (RACP, ASTM re-send).
STORING_BLE_PROFILES = ("glucose",)
STORING_SERIAL_PROTOCOLS = ("astm",)


class ProfileError(ValueError):
    """The rig profile is wrong: ``key`` names the entry, ``problem`` says what to change."""

    def __init__(self, path: Path, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path, self.key, self.problem = path, key, problem


class Capability(enum.StrEnum):
    DELIVERY = "delivery"  # a provider endpoint the suite can subscribe to and verify
    BLE = "ble"  # BLE devices bound to the gateway
    NEIGHBOUR = "neighbour"  # a BLE device in range that is not bound to the episode
    SERIAL = "serial"
    POWER_CUT = "power-cut"
    WAN_DROP = "wan-drop"
    OUT_OF_RANGE = "out-of-range"
    BROKER_ROTATION = "broker-rotation"
    ENROLMENT = "enrolment"  # the suite can have the provider issue a one-time enrolment token


Command = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RangeControl:
    out_of_range: Command
    back_in_range: Command


@dataclass(frozen=True, slots=True)
class BleDevice:
    name: str
    address: str
    profile: str
    passkey: int | None
    neighbour: bool  # in range but not the patient's: the gateway must ignore it
    measure: Command | None  # real rig: makes the device take a reading (robot finger, etc.)
    range: RangeControl | None


@dataclass(frozen=True, slots=True)
class SerialPort:
    name: str
    path: str  # the real rig's port; the sim rig makes a pty link there (relative: per run)
    protocol: str
    device_id: str  # serial number the device reports (ASTM header) or is configured with
    measure: Command | None
    range: RangeControl | None


@dataclass(frozen=True, slots=True)
class SimDevice:
    """An in-daemon simulated device (``[[sim_devices]]``), stored-records (memory) mode."""

    name: str
    kind: str
    address: str
    interval_s: float


@dataclass(frozen=True, slots=True)
class Provider:
    simulated: bool  # throwaway PKI + mosquitto behind WireGuard in network namespaces
    broker_host: str = ""
    broker_port: int = 8883
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    est_url: str | None = None
    hpke_private_key: Path | None = None
    mlkem_private_key: Path | None = None
    gateway_public_key: Path | None = None


@dataclass(frozen=True, slots=True)
class Controls:
    power_cut: Command | None = None
    power_restore: Command | None = None
    power_off_s: float = 5.0
    wan_drop: Command | None = None
    wan_restore: Command | None = None
    broker_cert_rotate: Command | None = None


@dataclass(frozen=True, slots=True)
class RigProfile:
    path: Path
    name: str
    simulated: bool
    gateway_id: str
    gatewayctl: Command  # how to run gatewayctl on the gateway (real rig: over ssh)
    boot_timeout_s: float  # power restored -> gateway uploading again
    ble_adapter: str | None
    ble_devices: tuple[BleDevice, ...]
    serial_ports: tuple[SerialPort, ...]
    sim_devices: tuple[SimDevice, ...]
    provider: Provider
    controls: Controls

    @property
    def patient_ble(self) -> tuple[BleDevice, ...]:
        return tuple(d for d in self.ble_devices if not d.neighbour)

    @property
    def medical_serial(self) -> tuple[SerialPort, ...]:
        return tuple(p for p in self.serial_ports if p.protocol != "modem")

    def missing(self, capability: Capability) -> str | None:
        """None if the rig has ``capability``, else why not (the skip reason)."""
        return _missing(self, capability)


def _missing(p: RigProfile, cap: Capability) -> str | None:
    where = f"rig {p.name!r} ({p.path.name})"
    if cap is Capability.DELIVERY:
        if p.provider.simulated or p.provider.client_cert is not None:
            return None
        return f"{where}: the provider endpoint has only an EST URL; EST enrolment of the rig's " \
            "own client is not available in this build (give client_cert/client_key)"
    if cap is Capability.BLE:
        return None if p.patient_ble else f"{where} has no patient BLE devices"
    if cap is Capability.NEIGHBOUR:
        return None if any(d.neighbour for d in p.ble_devices) else (
            f"{where} has no BLE device with neighbour = true"
        )
    if cap is Capability.SERIAL:
        return None if p.medical_serial else f"{where} has no serial medical devices"
    if cap is Capability.POWER_CUT:
        if p.simulated or (p.controls.power_cut and p.controls.power_restore):
            return None
        return f"{where} has no controls.power_cut / controls.power_restore commands"
    if cap is Capability.WAN_DROP:
        if p.simulated or (p.controls.wan_drop and p.controls.wan_restore):
            return None
        return f"{where} has no controls.wan_drop / controls.wan_restore commands"
    if cap is Capability.OUT_OF_RANGE:
        if range_devices(p):
            return None
        return f"{where} has no device that stores readings and can be moved out of range"
    if cap is Capability.BROKER_ROTATION:
        if p.simulated or p.controls.broker_cert_rotate:
            return None
        return f"{where} has no controls.broker_cert_rotate command"
    if cap is Capability.ENROLMENT:
        if p.simulated:
            return None
        if p.provider.est_url is None:
            return f"{where} has no provider.est_url (the provider's EST service)"
        return f"{where}: the suite cannot obtain a one-time enrolment token from the " \
            f"provider at {p.provider.est_url} (no token-issuing command in the profile format " \
            "yet), nor the re-enrolled gateway's signing key"
    raise AssertionError(cap)  # pragma: no cover - every member is handled above


def range_devices(p: RigProfile) -> tuple[str, ...]:
    """Names of devices the rig can move out of range whose readings must survive it."""
    if p.simulated:  # the simulators unplug / leave radio range on command
        ble = [d.name for d in p.patient_ble if d.profile in STORING_BLE_PROFILES]
        ser = [s.name for s in p.medical_serial if s.protocol in STORING_SERIAL_PROTOCOLS]
        return (*ble, *ser)
    attached: list[BleDevice | SerialPort] = [*p.patient_ble, *p.medical_serial]
    return tuple(d.name for d in attached if d.range is not None)


# -- loading -----------------------------------------------------------------------------------


def resolve(rig: str) -> Path:
    """``sim`` (or any bare name) -> hw-tests/rigs/<name>.toml; anything else is a path."""
    if "/" not in rig and not rig.endswith(".toml"):
        return RIGS_DIR / f"{rig}.toml"
    return Path(rig).resolve()


def load(rig: str) -> RigProfile:
    path = resolve(rig)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(path, "-", "rig profile not found (RIG=sim or RIG=path/to/rig.toml)")\
            from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(path, "-", f"not valid TOML: {exc}") from None
    return parse(data, path)


class _T:
    """One table with its keys checked: unknown keys are errors (a typo must not be ignored)."""

    def __init__(self, data: object, key: str, path: Path, known: tuple[str, ...]) -> None:
        if not isinstance(data, dict):
            raise ProfileError(path, key or "-", "must be a table")
        self.data: Mapping[str, Any] = data
        self.key, self.path = key, path
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise self.err(unknown[0], f"unknown key (misspelt?); known: {', '.join(known)}")

    def err(self, key: str, problem: str) -> ProfileError:
        return ProfileError(self.path, f"{self.key}.{key}" if self.key else key, problem)

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        if key not in self.data:
            if default is ...:
                raise self.err(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
            raise self.err(key, f"must be {kind.__name__}, got {value!r}")
        return value

    def name(self, key: str = "name") -> str:
        value: str = self.get(key, str)
        if not _NAME.match(value):
            raise self.err(key, f"1-32 of a-z, 0-9, '_', '-', got {value!r}")
        return value

    def command(self, key: str) -> Command | None:
        value = self.get(key, list, None)
        if value is None:
            return None
        if not value or not all(isinstance(a, str) and a for a in value):
            raise self.err(key, 'must be a non-empty argv list, e.g. ["usbrelay", "R1_1=0"]')
        return tuple(value)

    def file(self, key: str, *, required: bool = False) -> Path | None:
        raw = self.get(key, str, ... if required else None)
        if raw is None:
            return None
        p = Path(raw) if Path(raw).is_absolute() else self.path.parent / raw
        if not p.is_file():
            raise self.err(key, f"file {p} does not exist")
        return p

    def range(self) -> RangeControl | None:
        out, back = self.command("out_of_range"), self.command("back_in_range")
        if (out is None) != (back is None):
            raise self.err("back_in_range" if out else "out_of_range",
                           "out_of_range and back_in_range come as a pair")
        return RangeControl(out, back) if out and back else None

    def sub(self, key: str, known: tuple[str, ...]) -> _T:
        return _T(self.data.get(key, {}), f"{self.key}.{key}" if self.key else key, self.path,
                  known)

    def items(self, key: str, known: tuple[str, ...]) -> list[_T]:
        raw = self.data.get(key, [])
        where = f"{self.key}.{key}" if self.key else key
        if not isinstance(raw, list):
            raise ProfileError(self.path, where, "must be an array of tables ([[...]])")
        return [_T(item, f"{where}[{i}]", self.path, known) for i, item in enumerate(raw)]


def parse(data: Mapping[str, Any], path: Path) -> RigProfile:
    top = _T(data, "", path, ("rig", "gateway", "ble", "serial", "sim", "provider", "controls"))
    rig = top.sub("rig", ("name", "kind"))
    name = rig.name()
    kind = rig.get("kind", str)
    if kind not in ("sim", "real"):
        raise rig.err("kind", f'must be "sim" or "real", got {kind!r}')
    simulated = kind == "sim"

    gw = top.sub("gateway", ("id", "gatewayctl", "boot_timeout_s"))
    gateway_id = gw.get("id", str)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", gateway_id):
        raise gw.err("id", "1-64 characters: letters, digits, '.', '_' or '-'")
    gatewayctl = gw.command("gatewayctl")
    if gatewayctl is None and not simulated:
        raise gw.err("gatewayctl", 'required on a real rig, e.g. ["ssh", "root@hil-router", '
                     '"gatewayctl"]')
    boot_timeout_s = gw.get("boot_timeout_s", float, 120.0)

    ble_t = top.sub("ble", ("adapter", "devices"))
    adapter = ble_t.get("adapter", str, None)
    if adapter is not None and not _ADAPTER.match(adapter):
        raise ble_t.err("adapter", f"must look like hci0, got {adapter!r}")
    ble = tuple(_ble_device(t, simulated) for t in ble_t.items("devices", (
        "name", "address", "profile", "passkey", "neighbour", "measure", "out_of_range",
        "back_in_range")))
    if ble and adapter is None:
        raise ble_t.err("adapter", "required when BLE devices are listed")

    ser_t = top.sub("serial", ("ports",))
    serial = tuple(_serial_port(t, simulated) for t in ser_t.items("ports", (
        "name", "path", "protocol", "device_id", "measure", "out_of_range", "back_in_range")))

    sim_t = top.sub("sim", ("devices",))
    sims = tuple(_sim_device(t) for t in sim_t.items("devices", (
        "name", "kind", "address", "interval_s")))
    if sims and not simulated:
        raise sim_t.err("devices", "simulated devices belong on a rig with kind = \"sim\"")

    names = [d.name for d in ble] + [s.name for s in serial] + [d.name for d in sims]
    for n in names:
        if names.count(n) > 1:
            raise ProfileError(path, "name", f"device name {n!r} is used twice")
    if not (ble or serial or sims):
        raise ProfileError(path, "-", "the rig has no devices: list [[ble.devices]], "
                           "[[serial.ports]] or [[sim.devices]]")

    return RigProfile(
        path=path, name=name, simulated=simulated, gateway_id=gateway_id,
        gatewayctl=gatewayctl or (), boot_timeout_s=boot_timeout_s, ble_adapter=adapter,
        ble_devices=ble, serial_ports=serial, sim_devices=sims,
        provider=_provider(top.sub("provider", (
            "mode", "broker_host", "broker_port", "ca_file", "client_cert", "client_key",
            "est_url", "hpke_private_key", "mlkem_private_key", "gateway_public_key")),
            simulated),
        controls=_controls(top.sub("controls", (
            "power_cut", "power_restore", "power_off_s", "wan_drop", "wan_restore",
            "broker_cert_rotate")), simulated),
    )


def _ble_device(t: _T, simulated: bool) -> BleDevice:
    address = t.get("address", str).upper()
    if not _ADDRESS.match(address):
        raise t.err("address", f"must be a Bluetooth address like A4:C1:38:10:00:01, "
                    f"got {address!r}")
    profile = t.get("profile", str)
    if profile not in BLE_PROFILES:
        raise t.err("profile", f"must be one of {', '.join(BLE_PROFILES)}, got {profile!r}")
    passkey = t.get("passkey", int, None)
    if passkey is not None and not 0 <= passkey <= 999_999:
        raise t.err("passkey", "must be 6 digits (0..999999)")
    return BleDevice(t.name(), address, profile, passkey, t.get("neighbour", bool, False),
                     _real_only(t, "measure", simulated), _real_range(t, simulated))


def _serial_port(t: _T, simulated: bool) -> SerialPort:
    protocol = t.get("protocol", str)
    if protocol not in SERIAL_PROTOCOLS:
        raise t.err("protocol", f"must be one of {', '.join(SERIAL_PROTOCOLS)}, "
                    f"got {protocol!r}")
    name = t.name()
    port_path = t.get("path", str, f"dev/{name}" if simulated else ...)
    if not simulated and not port_path.startswith("/dev/"):
        raise t.err("path", f"must be a device under /dev (prefer /dev/serial/by-id/...), "
                    f"got {port_path!r}")
    device_id = t.get("device_id", str, "" if protocol == "modem" else ...)
    return SerialPort(name, port_path, protocol, device_id, _real_only(t, "measure", simulated),
                      _real_range(t, simulated))


def _sim_device(t: _T) -> SimDevice:
    kind = t.get("kind", str)
    if kind not in SIM_KINDS:
        raise t.err("kind", f"must be one of {', '.join(SIM_KINDS)}, got {kind!r}")
    interval = t.get("interval_s", float, 0.2)
    if not 0.01 <= interval <= 60:
        raise t.err("interval_s", "must be between 0.01 and 60 seconds")
    return SimDevice(t.name(), kind, t.get("address", str), interval)


def _real_only(t: _T, key: str, simulated: bool) -> Command | None:
    cmd = t.command(key)
    if cmd is not None and simulated:
        raise t.err(key, "the sim rig drives its simulators itself; remove this command")
    return cmd


def _real_range(t: _T, simulated: bool) -> RangeControl | None:
    rc = t.range()
    if rc is not None and simulated:
        raise t.err("out_of_range", "the sim rig moves its simulators itself; remove this")
    return rc


def _provider(t: _T, simulated: bool) -> Provider:
    mode = t.get("mode", str, "sim" if simulated else "real")
    if mode not in ("sim", "real"):
        raise t.err("mode", f'must be "sim" or "real", got {mode!r}')
    if mode == "sim":
        if not simulated:
            raise t.err("mode", 'a real rig needs a real provider endpoint (mode = "real")')
        extra = sorted(set(t.data) - {"mode"})
        if extra:
            raise t.err(extra[0], "the simulated provider makes its own PKI; remove this")
        return Provider(simulated=True)
    host = t.get("broker_host", str)
    port = t.get("broker_port", int, 8883)
    if not 1 <= port <= 65535:
        raise t.err("broker_port", "must be 1..65535")
    cert, key, est = t.file("client_cert"), t.file("client_key"), t.get("est_url", str, None)
    if (cert is None) != (key is None):
        raise t.err("client_key" if cert else "client_cert", "client_cert and client_key "
                    "come as a pair")
    if cert is None and est is None:
        raise t.err("client_cert", "give client_cert + client_key, or est_url")
    if est is not None and not est.startswith("https://"):
        raise t.err("est_url", f"must be an https:// URL, got {est!r}")
    return Provider(
        simulated=False, broker_host=host, broker_port=port,
        ca_file=t.file("ca_file", required=True), client_cert=cert, client_key=key,
        est_url=est, hpke_private_key=t.file("hpke_private_key", required=True),
        mlkem_private_key=t.file("mlkem_private_key"),
        gateway_public_key=t.file("gateway_public_key", required=True),
    )


def _controls(t: _T, simulated: bool) -> Controls:
    pairs = (("power_cut", "power_restore"), ("wan_drop", "wan_restore"))
    cmds = {k: t.command(k) for k in ("power_cut", "power_restore", "wan_drop", "wan_restore",
                                      "broker_cert_rotate")}
    if simulated and any(cmds.values()):
        raise t.err(next(k for k, v in cmds.items() if v),
                    "the sim rig has every control built in; remove this command")
    for a, b in pairs:
        if (cmds[a] is None) != (cmds[b] is None):
            raise t.err(b if cmds[a] else a, f"{a} and {b} come as a pair")
    off = t.get("power_off_s", float, 5.0)
    if not 0 <= off <= 600:
        raise t.err("power_off_s", "must be between 0 and 600 seconds")
    return Controls(power_off_s=off, **cmds)
