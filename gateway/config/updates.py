"""``[updates]``: software updates from the provider (gateway/updates, docs/operations.md).

No table: the router accepts no release offers (the updater refuses everything it finds).

    [updates]
    release_signing_key = "provider/release-signing.pub"  # Ed25519 (SPKI PEM), pinned
    health_gate_s = 600   # the new version must be READY and deliver a record within this
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.config.tomltable import Table
from gateway.errors import ConfigError, ConfigFileMissingError

KEYS = ("release_signing_key", "health_gate_s")
DEFAULT_HEALTH_GATE_S = 600.0
# Below a minute a loaded router may not finish starting; above an hour a home goes unwatched
# for too long before a bad release is taken back.
MIN_HEALTH_GATE_S, MAX_HEALTH_GATE_S = 20.0, 3600.0


@dataclass(frozen=True, slots=True)
class UpdatesConfig:
    release_signing_key: Path
    health_gate_s: float = DEFAULT_HEALTH_GATE_S


def parse(data: Mapping[str, Any], path: Path) -> UpdatesConfig | None:
    if "updates" not in data:
        return None
    raw = data["updates"]
    if not isinstance(raw, dict):
        raise ConfigError("updates", "must be a table ([updates])", path=str(path))
    t = Table(raw, "updates", path, KEYS)
    key = t.path("release_signing_key", path.absolute().parent, must_exist=True)
    gate = t.get("health_gate_s", float, DEFAULT_HEALTH_GATE_S, what="a number of seconds")
    if not MIN_HEALTH_GATE_S <= gate <= MAX_HEALTH_GATE_S:
        raise t.error(
            "health_gate_s", f"must be between {MIN_HEALTH_GATE_S:g} and {MAX_HEALTH_GATE_S:g} s"
        )
    return UpdatesConfig(key, gate)


def load(path: Path) -> UpdatesConfig | None:
    """Only ``[updates]`` of a configuration file: the root updater needs nothing else, and
    must not fail on a key of another table that a newer release added."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileMissingError(str(path)) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError("-", f"cannot read: {exc}", path=str(path)) from None
    return parse(data, path)
