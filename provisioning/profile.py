"""The provider profile: all a router out of the box knows about its care provider.

A care provider ships one file for its whole fleet, ``/etc/homecare-gateway/provider.toml``
(normally from a small configuration package of its own, see packaging/README.md)::

    [provisioning]
    est_url = "https://est.provider.example/.well-known/est"
    est_ca_file = "provider/est-ca.crt"            # relative to this file's folder
    bundle_signing_key = "provider/bundle-signing.pub"
    auth = "bearer"

    [uplink]                                        # optional, fleet-wide link settings
    vpn_interface = "wg0"

Broker host, port and CA, the provider's HPKE key and the episode come from the signed episode
bundle at enrolment, never from this file (so a profile cannot redirect one router's readings).

``gatewayctl enrol`` composes ``gateway.toml`` from it - the router's id (its host name, the id
on its label), the fixed state directory, the profile's tables - validates the result like the
daemon does, and writes it atomically, ``root:homecare-gateway 0640``, before the token is used.
A ``gateway.toml`` written by hand (rig, demo, a support override) is never touched.
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.atomicfile import fsync_dir
from gateway.config.settings import Config, load, parse
from gateway.errors import ConfigError
from provisioning.errors import ProfileMissingError

PROFILE_NAME = "provider.toml"
STATE_DIR = "/var/lib/homecare-gateway"
GENERATED_MARK = "# written by gatewayctl enrol from"
# The tables a fleet-wide profile may set, and the keys it must not: those are per episode.
PROFILE_TABLES = ("gateway", "provisioning", "uplink", "health", "power")
FROM_BUNDLE = {
    "uplink": ("host", "port", "ca_file", "cert_file", "key_file"),
    "gateway": ("id", "episode", "test_episode"),  # the router's own, and the episode's
}
PATH_KEYS = {"provisioning": ("est_ca_file", "bundle_signing_key"), "gateway": ("state_dir",)}
MAX_PROFILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ComposedConfig:
    config: Config
    text: str
    write: bool  # False: gateway.toml exists and stays as it is


def router_id() -> str:
    """The router's id: its host name, set at the depot to the id printed on its label."""
    return socket.gethostname().split(".")[0]


def is_generated(config_path: Path) -> bool:
    try:
        with config_path.open("rb") as f:
            return f.readline().decode("utf-8", "replace").startswith(GENERATED_MARK)
    except OSError:
        return False


def _toml_value(value: Any, where: str, profile: Path) -> str:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    raise ConfigError(
        where, "only strings, numbers, booleans and lists of strings", path=str(profile)
    )


def compose(profile: Path, gateway_id: str) -> str:
    """gateway.toml for this router from the provider profile (raises ConfigError on a bad one)."""
    try:
        raw = profile.read_bytes()[: MAX_PROFILE_BYTES + 1]
    except FileNotFoundError:
        raise ProfileMissingError(f"no provider profile at {profile}") from None
    except OSError as exc:
        raise ConfigError("-", f"cannot read: {exc.strerror}", path=str(profile)) from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ConfigError("-", f"larger than {MAX_PROFILE_BYTES} bytes", path=str(profile))
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("-", f"not valid TOML: {exc}", path=str(profile)) from None
    for name in data:
        if name not in PROFILE_TABLES:
            raise ConfigError(
                name,
                f"a provider profile holds only [{'], ['.join(PROFILE_TABLES)}]",
                path=str(profile),
            )
    if not isinstance(data.get("provisioning"), dict):
        raise ConfigError("provisioning", "the [provisioning] table is required", path=str(profile))
    lines = [
        f"{GENERATED_MARK} {profile}",
        "# To change the provider's settings, update its profile package and enrol again.",
    ]
    for name in PROFILE_TABLES:
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(name, f"must be a table ([{name}])", path=str(profile))
        body = _table_lines(name, table, profile)
        if name == "gateway":
            # state_dir: a router image may keep its state elsewhere (the shipped unit does not)
            body = [f"id = {json.dumps(gateway_id)}", *body]
            if "state_dir" not in table:
                body.append(f"state_dir = {json.dumps(STATE_DIR)}")
        if body:
            lines += ["", f"[{name}]", *body]
    return "\n".join(lines) + "\n"


def _table_lines(name: str, table: Mapping[str, Any], profile: Path) -> list[str]:
    out = []
    for key, value in table.items():
        where = f"{name}.{key}"
        if key in FROM_BUNDLE.get(name, ()):
            raise ConfigError(
                where,
                "comes from the signed episode bundle at enrolment, not from the profile",
                path=str(profile),
            )
        if key in PATH_KEYS.get(name, ()) and isinstance(value, str):
            # absolute: gateway.toml may live elsewhere than the profile
            out.append(f"{key} = {json.dumps(str(profile.parent / value))}")
        else:
            out.append(f"{key} = {_toml_value(value, where, profile)}")
    return out


def enrolment_config(config_path: Path) -> ComposedConfig:
    """The configuration ``gatewayctl enrol`` works with.

    A hand-written gateway.toml is used as it is. Otherwise the profile next to it is composed
    into one; ``write`` says the file is missing or differs (gatewayctl rewrites it only before
    enrolment, so a corrected profile package takes effect at the next episode, never under a
    running one)."""
    profile = config_path.parent / PROFILE_NAME
    if config_path.exists() and not is_generated(config_path):
        return ComposedConfig(load(config_path), "", write=False)
    if not profile.exists():
        if config_path.exists():  # generated earlier, profile removed since: keep using it
            return ComposedConfig(load(config_path), "", write=False)
        raise ProfileMissingError(
            f"this router knows no care provider: neither {config_path} nor {profile} exists"
        )
    gateway_id = router_id()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", gateway_id):
        raise ConfigError(
            "gateway.id",
            f"the router's host name {gateway_id!r} is not a router id; the depot sets it "
            "(hostnamectl set-hostname <id on the label>)",
            path=str(config_path),
        )
    text = compose(profile, gateway_id)
    # Validate exactly as the daemon will read it, before anything is written.
    cfg = parse(tomllib.loads(text), config_path)
    try:
        unchanged = config_path.read_text() == text
    except OSError:
        unchanged = False
    return ComposedConfig(cfg, text, write=not unchanged)


def write_config(path: Path, text: str) -> None:
    """Replace ``path`` atomically; the file gets mode 0640 and the group of its directory
    (root:homecare-gateway in /etc/homecare-gateway: the daemon reads it, nobody else)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "wb") as out:
            if os.geteuid() == 0:
                os.fchown(fd, 0, path.parent.stat().st_gid)
            os.fchmod(fd, 0o640)  # not narrowed by the umask of whoever runs enrol
            out.write(text.encode())
            out.flush()
            os.fsync(fd)
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise ConfigError(
            "-", f"cannot write it: {exc.strerror} (run gatewayctl enrol as root)", path=str(path)
        ) from None
