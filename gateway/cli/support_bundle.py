"""Support bundle: one archive a technician can send to second-line support.

It holds what explains a fault and nothing that must not leave the router: the daemon's status
and self-test (counts, states, alarms), the configuration with every file path but no file
contents, software versions, and recent log lines (from the journal, or where there is none from
the running daemon's memory) with any field named like a value or a key blanked. Key files,
certificates' private parts, the outbox and its sealed records are never read into it.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import json
import os
import platform
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from gateway.cli import diagnostics, journal
from gateway.config.settings import Config
from gateway.control import ControlError, ask
from gateway.progress import NO_PROGRESS, Progress

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
        "rich",
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
    summary = _plain(cfg)
    assert isinstance(summary, dict)
    return summary


def _plain(value: Any) -> Any:
    """JSON for support staff, not Python reprs (``BleDeviceConfig(address=...)``). A field
    kept out of its dataclass's repr (a passkey) stays out of the bundle too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.repr
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # Path, Decimal, timedelta ...


def _status(cfg: Config) -> dict[str, Any]:
    try:
        status: dict[str, Any] = ask(cfg.control_socket, "status")
    except ControlError as exc:
        return {"error": exc.one_line()}
    return status


MAX_NAME_TRIES = 100  # bundles written within one second, at most


def _new_file(destination: Path, stem: str) -> tuple[Path, int]:
    """A new file, never an existing name (O_EXCL | O_NOFOLLOW): root may write this into the
    service's log folder, where a planted link of the predictable name would otherwise make root
    overwrite its target. A taken name (a second bundle within the second, or a planted entry)
    gets a suffix."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for n in range(1, MAX_NAME_TRIES + 1):
        path = destination / (f"{stem}.tar.gz" if n == 1 else f"{stem}-{n}.tar.gz")
        try:
            return path, os.open(path, flags, 0o640)
        except FileExistsError:
            continue
    raise FileExistsError(f"{destination}: {MAX_NAME_TRIES} support bundles of this second exist")


def build(cfg: Config, destination: Path, progress: Progress = NO_PROGRESS) -> Path:
    """Write the bundle (a .tar.gz) and return its path; ``progress`` sees each part."""
    collect: dict[str, tuple[str, Callable[[], Any]]] = {
        "versions.json": ("software versions", _versions),
        "config.json": ("configuration (paths and settings)", lambda: _config_summary(cfg)),
        "selftest.json": ("self-test", lambda: diagnostics.as_json(diagnostics.selftest(cfg))),
        "journal.json": (f"last {LOG_LINES} log lines (redacted)", lambda: _journal(cfg)),
        "status.json": ("daemon status", lambda: _status(cfg)),
    }
    task = progress.begin("support bundle", total=len(collect) + 1, unit="steps")
    parts: dict[str, Any] = {}
    for done, (name, (label, fn)) in enumerate(collect.items()):
        progress.update(task, done, label=f"support bundle: {label}")
        parts[name] = fn()
    progress.update(task, len(collect), label="support bundle: writing the archive")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path, fd = _new_file(destination, f"homecare-gateway-support-{cfg.gateway_id}-{stamp}")
    with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w:gz") as archive:
        os.fchmod(fd, 0o640)
        for name, content in parts.items():
            data = json.dumps(content, indent=2, sort_keys=True, default=str).encode()
            info = tarfile.TarInfo(f"support/{name}")
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            archive.addfile(info, io.BytesIO(data))
    progress.update(task, len(collect) + 1, label="support bundle")
    progress.end(task)
    return path
