"""The only reports the daemon seals for a caller: defined schemas, checked field by field.

A record the gateway seals carries its identity signature; the provider believes it. So the
control socket's ``provisioning.event`` never signs what a caller made up: the body must be one of
the reports below (the installation check, the equipment return), with exactly their fields, each
of its type and within its bounds. ``gateway_id`` and ``episode`` are not the caller's to say: the
daemon writes its own. Anything else is refused with :class:`ReportRefusedError`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from gateway.errors import GatewayError

MAX_TEXT = 2000  # a row's detail (installation check): one error line
MAX_ITEMS = 64  # rows, bonds, files
MAX_COUNT = 10**9
_NAME = re.compile(r"[A-Za-z0-9._:+-]{1,128}")

Check = Callable[[Any], bool]


class ReportRefusedError(GatewayError):
    """A caller asked the daemon to sign something that is not a defined report."""

    hint = "only gatewayctl's own reports (install-check, return) are signed; update gatewayctl"


def _text(limit: int) -> Check:
    return lambda v: isinstance(v, str) and len(v) <= limit and v.isprintable()


def _name(v: Any) -> bool:
    return isinstance(v, str) and _NAME.fullmatch(v) is not None


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_COUNT


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _time(v: Any) -> bool:
    if not isinstance(v, str) or len(v) > 40:
        return False
    try:
        return datetime.fromisoformat(v).tzinfo is not None
    except ValueError:
        return False


def _uuid(v: Any) -> bool:
    try:
        return isinstance(v, str) and str(uuid.UUID(v)) == v
    except ValueError:
        return False


def _list(item: Check) -> Check:
    return lambda v: isinstance(v, list) and len(v) <= MAX_ITEMS and all(item(x) for x in v)


def _object(fields: Mapping[str, Check]) -> Check:
    return lambda v: (
        isinstance(v, dict)
        and set(v) == set(fields)
        and all(check(v[k]) for k, check in fields.items())
    )


def _optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


_ROW = _object(
    {
        "name": _text(128),
        "verdict": lambda v: v in ("PASS", "WARN", "FAIL", "SKIP"),
        "detail": _text(MAX_TEXT),
    }
)

# event name -> (version, fields besides event/version/gateway_id/episode)
SCHEMAS: dict[str, tuple[int, dict[str, Check]]] = {
    "installation-check": (1, {"passed": _bool, "rows": _list(_ROW), "time": _time}),
    "equipment-return": (
        1,
        {
            "report_id": _uuid,
            "started": _optional(_time),
            "unsent_records": _count,
            "forced": _bool,
            "devices": _count,
            "bonds_removed": _list(_name),
            "to_erase": _object({"keys": _list(_name), "files": _list(_name)}),
            "time": _time,
        },
    ),
}
_OURS = ("event", "version", "gateway_id", "episode")


def checked_report(body: Any, *, gateway_id: str, episode: str | None) -> dict[str, Any]:
    """The report to seal: ``body`` checked against its schema, identity fields the daemon's."""
    if not isinstance(body, dict):
        raise ReportRefusedError("a report must be a JSON object")
    event = body.get("event")
    schema = SCHEMAS.get(event) if isinstance(event, str) else None
    if schema is None:
        raise ReportRefusedError(f"{str(event)[:64]!r} is not a report the gateway signs")
    version, fields = schema
    if body.get("version") != version:
        raise ReportRefusedError(f"{event} report version must be {version}")
    extra = set(body) - set(fields) - set(_OURS)
    if extra:
        raise ReportRefusedError(f"{event} report has unknown fields: {sorted(extra)[:5]}")
    bad = [k for k, check in fields.items() if k not in body or not check(body[k])]
    if bad:
        raise ReportRefusedError(f"{event} report fields missing or out of bounds: {bad}")
    return {
        "event": event,
        "version": version,
        "gateway_id": gateway_id,
        "episode": episode,
        **{k: body[k] for k in fields},
    }
