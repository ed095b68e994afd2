"""structlog set-up: JSON lines when not on a TTY (journald, files), readable console on a TTY.

Event names are stable (``outbox.committed``, ``uplink.connected``...). Nothing clinical and no
key material is ever passed to a logger; the redaction processor below is a second line of
defence that drops keys that should never have been logged.

The daemon also keeps its last events in memory (:class:`RecentEvents`, after redaction), served
over the control socket: ``gatewayctl logs`` and the support bundle read them where no journal
keeps the daemon's lines (a container, a rig, a daemon started by hand).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Mapping, MutableMapping
from datetime import datetime
from typing import Any

import structlog

from gateway.errors import GatewayError

FORBIDDEN_KEYS = frozenset(
    {"value", "values", "plaintext", "observation", "key", "private_key", "passkey", "token"}
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in FORBIDDEN_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


class RecentEvents:
    """The last ``capacity`` log events, as redacted dicts (a structlog processor).

    Events are logged from the event loop and from threads (SQLite, paho), hence the lock.
    """

    def __init__(self, capacity: int = 2000) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()

    def __call__(
        self, _: Any, __: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        with self._lock:
            self._events.append(dict(event))
        return event

    def last(self, lines: int, since: datetime | None = None) -> list[dict[str, Any]]:
        """At most ``lines`` events, oldest first; only those stamped at or after ``since``."""
        with self._lock:
            events = list(self._events)
        if since is not None:
            events = [e for e in events if _stamped_since(e, since)]
        return events[-lines:] if lines > 0 else []

    async def answer(self, request: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The control socket's ``logs`` command: ``{"lines": 200, "since": "<ISO 8601>"}``."""
        lines, since = request.get("lines", 200), request.get("since")
        if not isinstance(lines, int) or isinstance(lines, bool) or lines < 1:
            raise GatewayError(f"lines must be a whole number of at least 1, got {lines!r}")
        try:
            start = None if since is None else datetime.fromisoformat(str(since))
        except ValueError:
            raise GatewayError(f"since must be an ISO 8601 time, got {since!r}") from None
        if start is not None and start.tzinfo is None:
            raise GatewayError(f"since must carry a time zone, got {since!r}")
        return self.last(lines, start)


def _stamped_since(event: MutableMapping[str, Any], since: datetime) -> bool:
    try:
        return datetime.fromisoformat(str(event.get("timestamp"))) >= since
    except ValueError:
        return True  # an unstamped event: keep it rather than hide it


def processors(*, json: bool, recent: RecentEvents | None = None) -> list[Any]:
    """The chain every event goes through; ``recent`` sees it redacted, just before rendering."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if json
        # With rich installed structlog's console default is a rich traceback, which prints
        # each frame's local variables (a local may hold a reading). format_exc_info below
        # renders exceptions plainly first; pinning the formatter keeps it so if that changes.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
        *([recent] if recent is not None else []),
        renderer,
    ]


def configure(
    level: str = "info", *, json: bool | None = None, recent: RecentEvents | None = None
) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    structlog.configure(
        processors=processors(json=use_json, recent=recent),
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
