"""structlog set-up: JSON lines when not on a TTY (journald, files), readable console on a TTY.

Event names are stable (``outbox.committed``, ``uplink.connected``...). Nothing clinical and no
key material is ever passed to a logger; the redaction processor below is a second line of
defence that drops keys that should never have been logged.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

FORBIDDEN_KEYS = frozenset(
    {"value", "values", "plaintext", "observation", "key", "private_key", "passkey", "token"}
)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for name in FORBIDDEN_KEYS.intersection(event):
        event[name] = "[redacted]"
    return event


def configure(level: str = "info", *, json: bool | None = None) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        # With rich installed structlog's console default is a rich traceback, which prints
        # each frame's local variables (a local may hold a reading). format_exc_info below
        # renders exceptions plainly first; pinning the formatter keeps it so if that changes.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
