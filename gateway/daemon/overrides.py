"""Settings changed by a signed ``config.set`` command: ``<state_dir>/config-overrides.json``.

Only the keys in :data:`ALLOWED` may be changed this way, each within the bounds the TOML loader
enforces for it (gateway/config/settings.py); everything else stays the installer's (the
configuration file) or the provider's at enrolment (the bundle). The file is applied at every
start on top of the configuration, so a change survives a restart; the equipment return erases
it with the rest of the state directory. A damaged or hand-edited file is ignored as a whole
(an error in the log), never half-applied.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.atomicfile import atomic_write
from gateway.config.settings import Config

log = structlog.get_logger("gateway.daemon")

OVERRIDES_FILE = "config-overrides.json"
# The command key of a router set up without enrolment (the rig, the demo): base64 of the raw
# Ed25519 public key, one line. An enrolled router pins the bundle's and ignores this file.
COMMAND_KEY_FILE = "command-key.pub"
MAX_OVERRIDES_BYTES = 4096
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Setting:
    check: Callable[[Any], bool]
    what: str  # for the refusal's detail
    live: bool  # applied at once (else: at the next start of the service)


def _number(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: (
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        and low <= v <= high
    )  # fmt: skip


ALLOWED: dict[str, Setting] = {
    "health_interval_s": Setting(_number(1, 3600), "a number of seconds in [1, 3600]", True),
    "stream_chunk_s": Setting(_number(0, 300), "a number of seconds in [0, 300]", False),
    "log_level": Setting(lambda v: v in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}", False),
}


def load(state_dir: Path) -> dict[str, Any]:
    path = state_dir / OVERRIDES_FILE
    try:
        raw = path.read_bytes()[: MAX_OVERRIDES_BYTES + 1]
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.error("config.overrides_unreadable", error=exc.strerror)  # noqa: TRY400
        return {}
    try:
        data = json.loads(raw)
        if len(raw) > MAX_OVERRIDES_BYTES or not isinstance(data, dict):
            raise ValueError("not an object of settings")  # noqa: TRY301
        bad = [k for k, v in data.items() if k not in ALLOWED or not ALLOWED[k].check(v)]
        if bad:
            raise ValueError(f"settings not allowed or out of bounds: {bad[:5]}")  # noqa: TRY301
    except (ValueError, RecursionError) as exc:
        log.error("config.overrides_ignored", file=str(path), error=str(exc)[:200])  # noqa: TRY400
        return {}
    return data


def apply(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """The configuration with the command-made settings on top."""
    if not overrides:
        return cfg
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        fields[key] = float(value) if key.endswith("_s") else value
    return dataclasses.replace(cfg, **fields)


def save(state_dir: Path, key: str, value: Any) -> dict[str, Any]:
    """Set one (checked) setting durably; returns the whole set now in force."""
    current = load(state_dir)
    current[key] = value
    atomic_write(
        state_dir / OVERRIDES_FILE, json.dumps(current, sort_keys=True).encode(), 0o640
    )
    return current


def static_command_key(cfg: Config) -> Config:
    """A router without enrolment: the command key from ``<state_dir>/command-key.pub``."""
    if cfg.provisioning is not None or cfg.command_key is not None:
        return cfg
    path = cfg.state_dir / COMMAND_KEY_FILE
    try:
        text = path.read_bytes()[:200].decode("ascii").strip()
        raw = base64.b64decode(text, validate=True)
    except FileNotFoundError:
        return cfg
    except (OSError, ValueError, binascii.Error) as exc:
        log.error("config.command_key_unusable", file=str(path), error=str(exc)[:100])  # noqa: TRY400
        return cfg
    if len(raw) != 32:
        log.error("config.command_key_unusable", file=str(path), error="not 32 bytes")
        return cfg
    return dataclasses.replace(cfg, command_key=text)
