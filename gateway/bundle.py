"""Support bundle: one archive a technician can send to second-line support.

It holds what explains a fault and nothing that must not leave the router: the daemon's status
and self-test (counts, states, alarms), the configuration with every file path but no file
contents, software versions, and recent log lines (from the journal, or where there is none from
the running daemon's memory) with any field named like a value or a key blanked. Key files,
certificates' private parts, the outbox and its sealed records are never read into it.
"""

from __future__ import annotations

import io
import json
import platform
import tarfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway import diagnostics, journal
from gateway.config import Config
from gateway.control import ControlError, ask

LOG_LINES = 2000


def _journal(cfg: Config) -> list[dict[str, Any]]:
    query = journal.JournalQuery(lines=LOG_LINES)
    try:
        found = journal.read(query, lambda: cfg.control_socket, datetime.now(UTC))
    except journal.JournalUnavailableError as exc:
        return [{"note": exc.message}]
    if found.source == journal.DAEMON_MEMORY:
        note = "no journal here: the running daemon's events from memory, since it started"
        return [{"note": note}, *found.events]
    return found.events


def _versions() -> dict[str, str]:
    names = (
        "homecare-gateway",
        "bleak",
        "paho-mqtt",
        "pyserial",
        "cryptography",
        "sqlite-utils",
        "structlog",
        "tenacity",
    )
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["python"] = platform.python_version()
    found["kernel"] = platform.release()
    return found


def _config_summary(cfg: Config) -> dict[str, Any]:
    # Paths and settings only: no file is opened, so no key can end up in the bundle.
    return {k: str(v) if isinstance(v, Path) else v for k, v in _fields(cfg).items()}


def _fields(cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in cfg.__dataclass_fields__:
        value = getattr(cfg, name)
        if isinstance(value, tuple):
            value = [repr(v) for v in value]
        out[name] = value
    return out


def build(cfg: Config, destination: Path) -> Path:
    """Write the bundle (a .tar.gz) and return its path."""
    parts: dict[str, Any] = {
        "versions.json": _versions(),
        "config.json": _config_summary(cfg),
        "selftest.json": diagnostics.as_json(diagnostics.selftest(cfg)),
        "journal.json": _journal(cfg),
    }
    try:
        parts["status.json"] = ask(cfg.control_socket, "status")
    except ControlError as exc:
        parts["status.json"] = {"error": exc.one_line()}
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = destination / f"homecare-gateway-support-{cfg.gateway_id}-{stamp}.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, content in parts.items():
            data = json.dumps(content, indent=2, sort_keys=True, default=str).encode()
            info = tarfile.TarInfo(f"support/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            archive.addfile(info, io.BytesIO(data))
    path.chmod(0o640)
    return path
