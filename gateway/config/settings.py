"""TOML configuration, validated into frozen settings.

Every problem is reported as one ``ConfigError`` naming the key (``uplink.port``) and what is wrong
with it, so the daemon can refuse to start with a single line an installer can act on. Unknown
keys are errors too: a typo must not silently fall back to a default.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config import ble as ble_config
from gateway.config import power as power_config
from gateway.config import serial as serial_config
from gateway.config import updates as updates_config
from gateway.config.ble import BleDeviceConfig
from gateway.config.power import PowerConfig
from gateway.config.serial import SerialDeviceConfig
from gateway.config.tomltable import Table
from gateway.config.updates import UpdatesConfig
from gateway.errors import ConfigError, ConfigFileMissingError
from gateway.seal.sealing import SuiteName
from provisioning.layout import StateLayout

DEFAULT_CONFIG_PATH = Path("/etc/homecare-gateway/gateway.toml")
_GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TOPIC_PREFIX = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
DEFAULT_STREAM_CHUNK_S = 30.0  # continuous streams: seconds of readings per sealed record
DEFAULT_STAGE_INTERVAL_S = 1.0  # the open chunk's readings are durable (staged) within this
SIM_KINDS = ("thermometer", "blood-pressure", "pulse-oximeter")


@dataclass(frozen=True, slots=True)
class SimDeviceConfig:
    kind: str
    address: str
    interval_s: float
    count: int | None  # stop after this many readings (None: forever)
    memory: Path | None  # stored-records mode: the simulated device's own memory file
    stream: bool = False  # a continuous stream (lane STREAM, sealed in chunks), not spot readings


@dataclass(frozen=True, slots=True)
class ProvisioningConfig:
    """``[provisioning]``: the router gets its identity and episode by enrolment (issue 6)."""

    est_url: str
    est_ca_file: Path
    bundle_signing_key: Path
    est_auth: str  # "bearer" or "basic"


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    gateway_id: str
    episode_id: str
    state_dir: Path
    log_level: str
    signing_key: Path
    provider_hpke_public_key: Path
    provider_mlkem_public_key: Path | None
    suite: SuiteName
    broker_host: str
    broker_port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    keepalive_s: int
    topic_prefix: str
    batch_max_records: int
    batch_max_bytes: int
    inflight_batches: int
    session_expiry_s: int
    vpn_interface: str | None
    wan_interfaces: tuple[str, ...]
    broadband_interfaces: tuple[str, ...]
    outbox_path: Path
    commit_window_ms: float
    outbox_quota_bytes: int
    stream_chunk_s: float
    health_interval_s: float
    control_socket: Path
    sim_devices: tuple[SimDeviceConfig, ...]
    serial_devices: tuple[SerialDeviceConfig, ...] = ()
    stage_interval_s: float = DEFAULT_STAGE_INTERVAL_S
    ble_devices: tuple[BleDeviceConfig, ...] = ()
    # Set: keys, certificate, broker, provider key and episode come from enrolment
    # (provisioning.runtime.effective_config fills them in from the state directory).
    provisioning: ProvisioningConfig | None = None
    power: PowerConfig | None = None  # [power]: the UPS in upsd; None: no UPS configured
    # Test / demo / training data: every Observation carries meta.security HTEST. Enrolled
    # routers take it from the bundle (``test_episode``), others from ``[gateway] test_episode``.
    test_episode: bool = False
    # The provider's command key (base64, raw Ed25519 public): signed commands are verified with
    # it. None: every command is refused (no-command-key). Not a TOML key: an enrolled router
    # takes it from its signed bundle (provisioning/runtime.py), a router set up without
    # enrolment (rig, demo) from <state_dir>/command-key.pub (gateway/daemon/overrides.py).
    command_key: str | None = None

    # [updates]: release offers are accepted, verified with this pinned key (gateway/updates).
    updates: UpdatesConfig | None = None

    @property
    def commands_topic(self) -> str:
        """Where the provider publishes this router's signed commands (issue 20)."""
        return f"{self.topic_prefix}/cmd/{self.gateway_id}"

    @property
    def records_topic(self) -> str:
        return f"{self.topic_prefix}/gw/{self.gateway_id}/records"

    @property
    def health_topic(self) -> str:
        return f"{self.topic_prefix}/gw/{self.gateway_id}/health"


def load(path: Path) -> Config:
    """Read and validate a configuration file; raise ConfigError naming the first problem."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise ConfigFileMissingError(str(path)) from None
    except OSError as exc:
        raise ConfigError("-", f"cannot read: {exc.strerror}", path=str(path)) from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("-", f"not valid TOML: {exc}", path=str(path)) from None
    return parse(data, path)


def _interface_list(t: Table, key: str) -> tuple[str, ...]:
    names = t.get(key, list, [], what='a list of interface names such as ["wwan0"]')
    for name in names:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", name):
            raise t.error(key, f"not a network interface name: {name!r}")
    return tuple(names)


def _table(data: Mapping[str, Any], name: str, path: Path, *known: str) -> Table:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(name, "must be a table ([" + name + "])", path=str(path))
    return Table(value, name, path, known)


def parse(data: Mapping[str, Any], path: Path) -> Config:  # noqa: PLR0912, PLR0915 - one check per key, in file order
    # Absolute: paths derived from these (the enrolled keys, the outbox) must not be resolved
    # against a relative folder twice, nor change meaning if a process changes directory.
    base = path.absolute().parent
    Table(
        data,
        "",
        path,
        (
            "gateway",
            "identity",
            "provider",
            "uplink",
            "outbox",
            "health",
            "control",
            "sim_devices",
            "serial_devices",
            "ble_devices",
            "provisioning",
            "power",
            "updates",
        ),
    )

    gw = _table(data, "gateway", path, "id", "episode", "test_episode", "state_dir", "log_level")
    gateway_id = gw.get("id", str)
    if not _GATEWAY_ID.match(gateway_id):
        raise gw.error("id", "1-64 characters: letters, digits, '.', '_' or '-'")
    episode_id = gw.get("episode", str, "unbound")
    if not episode_id or len(episode_id) > 64 or not episode_id.isprintable():
        raise gw.error("episode", "must be a printable pseudonymous id of 1-64 characters")
    # A rig, demo or training episode: every Observation is labelled HTEST (never clinical).
    test_episode = gw.get("test_episode", bool, False, what="true or false")
    state_dir = gw.path("state_dir", base, "/var/lib/homecare-gateway")
    log_level = gw.get("log_level", str, "info")
    if log_level not in ("debug", "info", "warning", "error"):
        raise gw.error("log_level", f"must be debug, info, warning or error, got {log_level!r}")

    provisioning = _provisioning(data, path)
    # Enrolled routers: these files appear with enrolment, so their absence is not an error here.
    enrolled = StateLayout(state_dir) if provisioning else None
    ident = _table(data, "identity", path, "signing_key")
    signing_key = ident.path(
        "signing_key", base, str(enrolled.signing_key) if enrolled else ..., must_exist=not enrolled
    )

    prov = _table(data, "provider", path, "hpke_public_key", "mlkem_public_key", "suite")
    hpke_pub = prov.path(
        "hpke_public_key",
        base,
        str(enrolled.provider_hpke_pub) if enrolled else ...,
        must_exist=not enrolled,
    )
    mlkem_pub = prov.path("mlkem_public_key", base, None, must_exist=True)
    suite_raw = prov.get("suite", str, "x25519")
    try:
        suite = SuiteName(suite_raw)
    except ValueError:
        raise prov.error("suite", f"must be one of {[s.value for s in SuiteName]}") from None
    if suite is SuiteName.MLKEM768_X25519 and mlkem_pub is None:
        raise prov.error("mlkem_public_key", "required when suite is mlkem768-x25519")
    if suite is SuiteName.X25519 and mlkem_pub is not None:
        raise prov.error("suite", 'set suite = "mlkem768-x25519" to use mlkem_public_key')


    up = _table(
        data,
        "uplink",
        path,
        "host",
        "port",
        "ca_file",
        "cert_file",
        "key_file",
        "keepalive_s",
        "topic_prefix",
        "batch_max_records",
        "batch_max_bytes",
        "inflight_batches",
        "session_expiry_s",
        "vpn_interface",
        "wan_interfaces",
        "broadband_interfaces",
    )
    host = up.get("host", str, "" if enrolled else ...)
    if (not host and not enrolled) or any(c.isspace() for c in host):
        raise up.error("host", f"not a host name or address: {host!r}")
    port = up.int_in("port", 1, 65535, 8883)
    ca_file = up.path(
        "ca_file", base, str(enrolled.broker_ca) if enrolled else ..., must_exist=not enrolled
    )
    cert_file = up.path(
        "cert_file", base, str(enrolled.client_cert) if enrolled else ..., must_exist=not enrolled
    )
    key_file = up.path(
        "key_file", base, str(enrolled.tls_key) if enrolled else ..., must_exist=not enrolled
    )
    keepalive = up.int_in("keepalive_s", 5, 3600, 30)
    prefix = up.get("topic_prefix", str, "homecare/v1")
    if not _TOPIC_PREFIX.match(prefix):
        raise up.error("topic_prefix", "levels of letters, digits, '.', '_' or '-', no wildcards")
    batch_records = up.int_in("batch_max_records", 1, 65535, 500)
    batch_bytes = up.int_in("batch_max_bytes", 1024, 16 * 1024 * 1024, 256 * 1024)
    inflight = up.int_in("inflight_batches", 1, 64, 4)
    session_expiry = up.int_in("session_expiry_s", 0, 7 * 24 * 3600, 3600)
    vpn_interface = up.get("vpn_interface", str, None, what="an interface name such as wg0")
    if vpn_interface is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", vpn_interface):
        raise up.error("vpn_interface", f"not a network interface name: {vpn_interface!r}")

    wan = _interface_list(up, "wan_interfaces")
    broadband = _interface_list(up, "broadband_interfaces")
    if set(wan) & set(broadband):
        raise up.error("broadband_interfaces", "an interface cannot be modem and broadband both")

    ob = _table(
        data, "outbox", path, "path", "commit_window_ms", "quota_bytes", "stream_chunk_s",
        "stage_interval_s",
    )
    outbox_path = ob.path("path", base, str(state_dir / "outbox.db"))
    window_ms = ob.get("commit_window_ms", float, 2.0, what="a number of milliseconds")
    if not 0 <= window_ms <= 1000:
        raise ob.error("commit_window_ms", "must be between 0 and 1000")
    quota = ob.int_in("quota_bytes", 16 * 1024, 2**40, 256 * 1024 * 1024)
    # Continuous streams are sealed in chunks of this many seconds (0: every reading at once).
    chunk_s = ob.get("stream_chunk_s", float, DEFAULT_STREAM_CHUNK_S, what="a number of seconds")
    if not 0 <= chunk_s <= 300:
        raise ob.error("stream_chunk_s", "must be between 0 and 300 seconds")
    # How long an open chunk's readings may wait for their staging commit (one fsync each).
    stage_s = ob.get(
        "stage_interval_s", float, DEFAULT_STAGE_INTERVAL_S, what="a number of seconds"
    )
    if not 0 <= stage_s <= 10:
        raise ob.error("stage_interval_s", "must be between 0 and 10 seconds")

    hl = _table(data, "health", path, "interval_s")
    health_interval = hl.get("interval_s", float, 60.0, what="a number of seconds")
    if not 1 <= health_interval <= 3600:
        raise hl.error("interval_s", "must be between 1 and 3600 seconds")

    ctl = _table(data, "control", path, "socket")
    control_socket = ctl.path("socket", base, "/run/homecare-gateway/control.sock")

    sims = data.get("sim_devices", [])
    if not isinstance(sims, list):
        raise ConfigError(
            "sim_devices", "must be an array of tables ([[sim_devices]])", path=str(path)
        )
    sim_devices = []
    for i, raw in enumerate(sims):
        if not isinstance(raw, dict):
            raise ConfigError(f"sim_devices[{i}]", "must be a table", path=str(path))
        t = Table(
            raw,
            f"sim_devices[{i}]",
            path,
            ("kind", "address", "interval_s", "count", "memory", "stream"),
        )
        kind = t.get("kind", str)
        if kind not in SIM_KINDS:
            raise t.error("kind", f"must be one of {', '.join(SIM_KINDS)}, got {kind!r}")
        address = t.get("address", str)
        interval = t.get("interval_s", float, 5.0, what="a number of seconds")
        if not 0.001 <= interval <= 86400:
            raise t.error("interval_s", "must be between 0.001 and 86400 seconds")
        count = t.get("count", int, None, what="a positive integer")
        if count is not None and count < 1:
            raise t.error("count", "must be a positive integer")
        memory = t.path("memory", base, None)
        stream = t.get("stream", bool, False, what="true or false")
        sim_devices.append(SimDeviceConfig(kind, address, interval, count, memory, stream))

    return Config(
        path=path,
        gateway_id=gateway_id,
        episode_id=episode_id,
        test_episode=test_episode,
        state_dir=state_dir,
        log_level=log_level,
        signing_key=signing_key,
        provider_hpke_public_key=hpke_pub,
        provider_mlkem_public_key=mlkem_pub,
        suite=suite,
        broker_host=host,
        broker_port=port,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        keepalive_s=keepalive,
        topic_prefix=prefix,
        batch_max_records=batch_records,
        batch_max_bytes=batch_bytes,
        inflight_batches=inflight,
        session_expiry_s=session_expiry,
        vpn_interface=vpn_interface,
        wan_interfaces=wan,
        broadband_interfaces=broadband,
        outbox_path=outbox_path,
        commit_window_ms=window_ms,
        outbox_quota_bytes=quota,
        stream_chunk_s=chunk_s,
        stage_interval_s=stage_s,
        health_interval_s=health_interval,
        control_socket=control_socket,
        sim_devices=tuple(sim_devices),
        serial_devices=serial_config.parse(data.get("serial_devices", []), path),
        ble_devices=ble_config.parse(data.get("ble_devices", []), path),
        provisioning=provisioning,
        power=power_config.parse(data, path),
        updates=updates_config.parse(data, path),
    )


def _provisioning(data: Mapping[str, Any], path: Path) -> ProvisioningConfig | None:
    if "provisioning" not in data:
        return None
    t = _table(data, "provisioning", path, "est_url", "est_ca_file", "bundle_signing_key", "auth")
    url = t.get("est_url", str)
    if not re.fullmatch(r"https://[^\s/]+(/\S*)?", url):
        raise t.error("est_url", f"must be an https:// URL, got {url!r}")
    auth = t.get("auth", str, "bearer")
    if auth not in ("bearer", "basic"):
        raise t.error("auth", f"must be bearer or basic, got {auth!r}")
    return ProvisioningConfig(
        est_url=url,
        est_ca_file=t.path("est_ca_file", path.absolute().parent, must_exist=True),
        bundle_signing_key=t.path("bundle_signing_key", path.absolute().parent, must_exist=True),
        est_auth=auth,
    )
