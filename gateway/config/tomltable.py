"""Typed access to one TOML table, with one-line errors that name the key and the file.

Shared by the configuration parser and the device sections (``[[serial_devices]]``,
``[[ble_devices]]``): unknown keys are refused first (a misspelt key explains a "missing" one
better than "missing" does), then each key is read with its type.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError


class Table:
    """Typed access to one TOML table whose keys were checked against the known ones."""

    def __init__(
        self, data: Mapping[str, Any], name: str, path: Path, known: tuple[str, ...]
    ) -> None:
        self.data, self.name, self.file = data, name, path
        # Unknown keys first: a misspelt key explains a "missing" one better than "missing" does.
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise self.error(unknown[0], "unknown key (misspelt?)")

    def _key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self._key(key), problem, path=str(self.file))

    def get(self, key: str, kind: type, default: Any = ..., *, what: str = "") -> Any:
        if key not in self.data:
            if default is ...:
                raise self.error(key, "missing (required)")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(key, f"must be {what or kind.__name__}, got {value!r}")
        return value

    def int_in(self, key: str, lo: int, hi: int, default: int) -> int:
        value: int = self.get(key, int, default, what=f"an integer {lo}..{hi}")
        if not lo <= value <= hi:
            raise self.error(key, f"must be an integer {lo}..{hi}, got {value}")
        return value

    def path(self, key: str, base: Path, default: Any = ..., *, must_exist: bool = False) -> Path:
        raw = self.get(key, str, default, what="a file path")
        if raw is None:
            return None  # type: ignore[return-value]
        if not raw:
            raise self.error(key, "must not be empty")
        p = Path(raw)
        p = p if p.is_absolute() else (base / p)
        if must_exist:
            try:
                if not stat.S_ISREG(p.stat().st_mode):
                    raise self.error(key, f"{p} is not a file")
            except (FileNotFoundError, NotADirectoryError):
                raise self.error(key, f"file {p} does not exist") from None
            except PermissionError:
                pass  # not ours to read (e.g. a technician's gatewayctl): the daemon checks it
        return p
