"""structlog set-up: JSON lines when not on a TTY (journald, files), readable console on a TTY.

Event names are stable (``outbox.committed``, ``uplink.connected``...). Nothing clinical and no
key material is ever passed to a logger; the redaction processor below is a second line of
defence that drops keys that should never have been logged.

The daemon also keeps its last events in memory (:class:`RecentEvents`, after redaction), served
over the control socket: ``gatewayctl logs`` and the support bundle read them where no journal
keeps the daemon's lines (a container, a rig, a daemon started by hand).

Device text reaches log fields (an analyser's test code, a unit, an error's fields): every event
is bounded and made safe before it is rendered or kept (:func:`bound_event`): control characters
are escaped (an ESC sequence must never reach a technician's terminal), each text field is cut at
MAX_FIELD_CHARS and the whole event at MAX_EVENT_CHARS. So the ring holds at most
RECENT_EVENTS x MAX_EVENT_CHARS characters, whatever a device sends.
"""

from __future__ import annotations

import logging
import re
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

RECENT_EVENTS = 2000  # events kept in the daemon's memory
MAX_FIELD_CHARS = 256  # a text field longer than this is cut (device text: a unit, a test code)
MAX_TRACEBACK_CHARS = 3072  # the rendered exception, when one is logged (its last part is kept)
MAX_EVENT_CHARS = 4096  # the whole event: fields past it are dropped and counted
_MAX_DEPTH = 3  # nested lists / dicts in a field, deeper is summarised
_MAX_ITEMS = 32  # items of a list or dict field
# C0 controls, DEL and C1 controls (0x80-0x9f: 0x9b is a one-byte CSI on some terminals).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def safe_text(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    """``text`` with control characters escaped (``\\x1b``) and cut to about ``limit``."""
    cut = len(text) > limit
    escaped = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text[:limit] if cut else text)
    if len(escaped) > limit:  # escapes lengthen it: cut again
        escaped, cut = escaped[:limit], True
    return f"{escaped}...[+{len(text) - limit} chars]" if cut else escaped


def _bound_value(value: Any, depth: int = 0) -> Any:  # noqa: PLR0911 - one return per kind
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, bytes | bytearray):
        return f"[{len(value)} bytes]"  # never raw bytes: they are the device's
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= _MAX_DEPTH:
        return f"[{type(value).__name__}]"
    if isinstance(value, Mapping):
        items = list(value.items())
        out = {safe_text(str(k), 64): _bound_value(v, depth + 1) for k, v in items[:_MAX_ITEMS]}
        if len(items) > _MAX_ITEMS:
            out["..."] = f"+{len(items) - _MAX_ITEMS} items"
        return out
    if isinstance(value, list | tuple | set | frozenset):
        seq = list(value)
        bounded = [_bound_value(v, depth + 1) for v in seq[:_MAX_ITEMS]]
        if len(seq) > _MAX_ITEMS:
            bounded.append(f"+{len(seq) - _MAX_ITEMS} items")
        return bounded
    return safe_text(str(value))


def bound_event(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The structlog processor: every field escaped and cut, the event cut at MAX_EVENT_CHARS."""
    total = 0
    dropped = 0
    for name in list(event):
        value = event[name]
        if name == "exception" and isinstance(value, str):
            # The end of a traceback says what happened; escaped like any text.
            tail = value[-MAX_TRACEBACK_CHARS:]
            bounded: Any = safe_text(tail, MAX_TRACEBACK_CHARS + 1)
        else:
            bounded = _bound_value(value)
        size = len(name) + len(str(bounded))
        if total + size > MAX_EVENT_CHARS and name not in ("event", "level", "timestamp"):
            del event[name]
            dropped += 1
            continue
        event[name] = bounded
        total += size
    if dropped:
        event["fields_dropped"] = dropped
    return event


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in FORBIDDEN_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


class RecentEvents:
    """The last ``capacity`` log events, as redacted dicts (a structlog processor).

    Events are logged from the event loop and from threads (SQLite, paho), hence the lock.
    """

    def __init__(self, capacity: int = RECENT_EVENTS) -> None:
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
        bound_event,
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
