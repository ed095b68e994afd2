"""The daemon's side of the health gate, and the outcomes it reports upstream.

- :func:`beacon_task`: once this process is READY and the broker has acknowledged a record it
  delivered, write ``<state_dir>/updates/health.json`` (version, PID, delivered count). The root
  updater's health gate waits for exactly that from the new version (same version, same PID as
  systemd's MainPID) before it keeps an update.
- :func:`report_outcomes`: at start, seal each outcome the updater recorded since the last one
  reported (``update.done``, ``update.rolled_back`` with its reason, ``update.refused``,
  ``update.failed``) as an event record, so the command centre sees every switch and why.
  The updater's file is checked field by field: the daemon signs only what it can vouch for.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import structlog

from gateway.atomicfile import atomic_write
from gateway.errors import GatewayError
from gateway.updates.inbox import clear_incoming
from gateway.updates.layout import RELEASE_INFO

log = structlog.get_logger("gateway.updates")

UPDATER_STATE = Path("/var/lib/homecare-gateway-update/state.json")
BEACON = "updates/health.json"
REPORTED = "updates/reported.json"
EVENTS = ("update.done", "update.rolled_back", "update.refused", "update.failed")
MAX_STATE_BYTES = 64 * 1024
MAX_REASON = 300
_VERSION = re.compile(r"[0-9]{1,6}(\.[0-9]{1,6}){1,3}")


class Delivering(Protocol):
    delivered_records: int


def running_release(fallback: str) -> str:
    """The release this process runs from: the version in its tree's release-info.json (the
    directory name the updater switched to), or ``fallback`` outside a release tree."""
    try:
        info = json.loads((Path(sys.prefix) / RELEASE_INFO).read_bytes()[:4096])
        version = info["version"]
    except (OSError, ValueError, KeyError, TypeError):
        return fallback
    return version if isinstance(version, str) and _VERSION.fullmatch(version) else fallback


async def beacon_task(
    state_dir: Path, version: str, uplink: Delivering, poll_s: float = 1.0
) -> None:
    """Write the beacon once a record this process sent was acknowledged, then end.
    ``version``: the running release (:func:`running_release`)."""
    # The uplink keeps a counter, not an event; one look a second costs nothing.
    while uplink.delivered_records <= 0:  # noqa: ASYNC110
        await asyncio.sleep(poll_s)
    body = {"version": version, "pid": os.getpid(), "delivered_records": uplink.delivered_records}
    path = state_dir / BEACON
    await asyncio.to_thread(_write, path, json.dumps(body).encode())
    log.info("update.beacon", version=version)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o750, exist_ok=True)
    atomic_write(path, data, mode=0o640)


def _version(v: Any) -> bool:
    return v is None or (isinstance(v, str) and _VERSION.fullmatch(v) is not None)


def checked_outcome(o: Any) -> dict[str, Any] | None:
    """An outcome as the event record's body, or None when a field is not as defined."""
    if not isinstance(o, dict):
        return None
    reason, gap, n = o.get("reason"), o.get("switch_gap_s"), o.get("n")
    ok = (
        o.get("event") in EVENTS
        and isinstance(n, int)
        and not isinstance(n, bool)
        and _version(o.get("from_version"))
        and _version(o.get("to_version"))
        and isinstance(reason, str)
        and len(reason) <= MAX_REASON
        and reason.isprintable()
        and isinstance(o.get("time"), str)
        and len(o["time"]) <= 40
        and (gap is None or (isinstance(gap, int | float) and 0 <= gap < 86400))
    )
    if not ok:
        return None
    return {
        "event": o["event"],
        "version": 1,
        "n": n,
        "from_version": o.get("from_version"),
        "to_version": o.get("to_version"),
        "reason": reason,
        # Canonical JSON (gateway/seal/cjson.py) has no floats: whole milliseconds.
        "switch_gap_ms": None if gap is None else round(gap * 1000),
        "time": o["time"],
    }


def pending_outcomes(state_dir: Path, updater_state: Path = UPDATER_STATE) -> list[dict[str, Any]]:
    try:
        raw = updater_state.read_bytes()[: MAX_STATE_BYTES + 1]
        state = json.loads(raw) if len(raw) <= MAX_STATE_BYTES else {}
    except (OSError, ValueError):
        return []
    try:
        last = int(json.loads((state_dir / REPORTED).read_bytes())["last_n"])
    except (OSError, ValueError, KeyError, TypeError):
        last = 0
    outcomes = state.get("outcomes", []) if isinstance(state, dict) else []
    checked = [c for c in map(checked_outcome, outcomes if isinstance(outcomes, list) else [])
               if c is not None]  # fmt: skip
    return [c for c in checked if c["n"] > last]


async def report_outcomes(
    state_dir: Path,
    submit: Callable[[dict[str, Any]], Awaitable[int]],
    updater_state: Path = UPDATER_STATE,
) -> int:
    """Seal each new outcome (``submit`` returns once the record is durable), then remember it.
    Runs once at start, before any offer can arrive: half-written offers a crash left in
    ``updates/incoming`` are removed first."""
    cleared = await asyncio.to_thread(clear_incoming, state_dir)
    if cleared:
        log.info("update.incoming_cleared", entries=cleared)
    todo = await asyncio.to_thread(pending_outcomes, state_dir, updater_state)
    sealed = 0
    for body in todo:
        try:
            await submit(body)
            sealed += 1
            log.info("update.reported", kind=body["event"], to_version=body["to_version"])
        except (GatewayError, TypeError, ValueError) as exc:
            # A report the writer refuses (quota, encoding) must never stop the daemon: the
            # outcome stays in the updater's state file and the journal.
            log.error(  # noqa: TRY400 - the type is the diagnosis; no traceback needed
                "update.report_failed", kind=body["event"], error=type(exc).__name__
            )
        await asyncio.to_thread(
            _write, state_dir / REPORTED, json.dumps({"last_n": body["n"]}).encode()
        )
    return sealed
