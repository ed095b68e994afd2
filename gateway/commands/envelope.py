"""The signed command envelope: wire form and pure verification (no I/O, no clock of its own).

Wire form (JSON, the same style as the enrolment bundle, provisioning/bundle.py)::

    {"format": 1, "payload": "<base64 of the payload JSON>", "signature": "<base64 Ed25519>"}

The signature covers the exact payload bytes, made with the provider's command key whose public
half was pinned at enrolment (the bundle's ``command_key``). The payload::

    {"format": 1, "gateway_id": "gw-0421", "command_id": "c-...", "counter": 17,
     "issued_at": "2026-12-07T10:00:00+00:00", "expires_at": "2026-12-07T11:00:00+00:00",
     "command": "config.set", "args": {...}}

``verify`` checks, in this order, and refuses with a typed reason at the first failure: the size
(before anything is parsed), the outer form, the signature (nothing unsigned is parsed further),
the payload's shape, the target gateway, the validity window. The counter against the last one
accepted is the caller's (it needs durable state): :func:`check_counter`.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from gateway.errors import GatewayError

FORMAT = 1  # the outer wire form
PAYLOAD_FORMAT = 1
MAX_ENVELOPE_BYTES = 16 * 1024  # checked before parsing; a command is a name and a few args
MAX_ARGS_DEPTH = 4  # nesting of the args object (a device entry is one level)
MAX_LIFETIME = timedelta(hours=24)  # expires_at - issued_at; a longer-lived command is refused
CLOCK_SKEW = timedelta(minutes=5)  # a router's clock may be this far off before NTP settles
MAX_COUNTER = 2**53 - 1  # fits any JSON reader exactly
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_NAME = re.compile(r"[a-z][a-z0-9-]*(\.[a-z][a-z0-9-]*){0,3}")
_GATEWAY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Reason(enum.StrEnum):
    """Why a command was refused: stable words the command centre reads (docs/operations.md)."""

    TOO_LARGE = "too-large"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad-signature"
    NO_COMMAND_KEY = "no-command-key"
    WRONG_GATEWAY = "wrong-gateway"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    TOO_LONG_LIVED = "too-long-lived"
    REPLAYED = "replayed"
    UNKNOWN_COMMAND = "unknown-command"
    BAD_ARGS = "bad-args"
    NOT_ALLOWED = "not-allowed"
    BUSY = "busy"
    # update.offer (gateway/daemon/update_offer.py): the release manifest, not the envelope
    BAD_RELEASE_SIGNATURE = "bad-release-signature"
    NOT_APPLICABLE = "not-applicable"


_HINTS = {
    Reason.TOO_LARGE: "a command is a name and a few arguments; this one is too big to read",
    Reason.MALFORMED: "the command was not made by homecare-provider command sign; re-send it",
    Reason.BAD_SIGNATURE: "not signed with the command key pinned at enrolment: check the key "
    "the sender uses (homecare-provider command keygen made it)",
    Reason.NO_COMMAND_KEY: "the router's bundle pins no command key: re-issue the bundle with "
    "one at the next enrolment; meanwhile a technician must act on site",
    Reason.WRONG_GATEWAY: "the command names another router: send it to that router's topic",
    Reason.EXPIRED: "the command arrived after its expiry: send a new one if still wanted",
    Reason.NOT_YET_VALID: "the command is dated in the future: check the sender's clock, or the "
    "router's (health report, clock)",
    Reason.TOO_LONG_LIVED: "a command may live at most 24 hours: sign it with a shorter expiry",
    Reason.REPLAYED: "its counter is not above the last one accepted: a replay, or a command "
    "signed before another one was sent; sign it again (the counter rises)",
    Reason.UNKNOWN_COMMAND: "this router's software does not know the command (older version?)",
    Reason.BAD_ARGS: "the command's arguments are missing or out of bounds: see the detail",
    Reason.NOT_ALLOWED: "the command may not do this on this router: see the detail",
    Reason.BUSY: "the router is already doing a command that excludes this one: retry later",
    Reason.BAD_RELEASE_SIGNATURE: "the release manifest is not signed with the release key "
    "pinned in the router's gateway.toml ([updates] release_signing_key): re-sign it",
    Reason.NOT_APPLICABLE: "the release is for another architecture, or not newer than the "
    "running version and not signed as a rollback: see the detail",
}


class CommandRefusedError(GatewayError):
    """A command was refused; nothing was changed. ``reason`` is one of :class:`Reason`."""

    def __init__(
        self, reason: Reason, message: str, *, command: Command | None = None
    ) -> None:
        super().__init__(message, hint=_HINTS[reason], reason=str(reason))
        self.reason = reason
        self.command = command


@dataclass(frozen=True, slots=True)
class Command:
    """A verified command (signature, target and validity checked)."""

    gateway_id: str
    command_id: str
    counter: int
    issued_at: datetime
    expires_at: datetime
    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def payload_json(self) -> dict[str, Any]:
        return {
            "format": PAYLOAD_FORMAT,
            "gateway_id": self.gateway_id,
            "command_id": self.command_id,
            "counter": self.counter,
            "issued_at": self.issued_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "command": self.name,
            "args": self.args,
        }

    @classmethod
    def from_payload(cls, p: Any) -> Command:
        """The payload's shape; ValueError (with what is wrong) for anything else."""
        if not isinstance(p, dict) or p.get("format") != PAYLOAD_FORMAT:
            raise ValueError(f"payload format must be {PAYLOAD_FORMAT}")
        known = {
            "format", "gateway_id", "command_id", "counter", "issued_at", "expires_at",
            "command", "args",
        }  # fmt: skip
        if set(p) != known:
            raise ValueError(f"payload fields must be exactly {sorted(known)}")
        gateway_id, command_id, name = p["gateway_id"], p["command_id"], p["command"]
        # ValueError for every bad value, whatever its type: the caller has one refusal for all.
        if not isinstance(gateway_id, str) or not _GATEWAY.fullmatch(gateway_id):
            raise ValueError("gateway_id is not a gateway id")
        if not isinstance(command_id, str) or not _TOKEN.fullmatch(command_id):
            raise ValueError("command_id must be a token of 1-64 plain characters")
        if not isinstance(name, str) or len(name) > 64 or not _NAME.fullmatch(name):
            raise ValueError("command must be a dotted lower-case name")
        counter = p["counter"]
        if not isinstance(counter, int) or isinstance(counter, bool):
            raise ValueError("counter must be an integer")  # noqa: TRY004
        if not 1 <= counter <= MAX_COUNTER:
            raise ValueError("counter out of range")
        args = p["args"]
        if not isinstance(args, dict):
            raise ValueError("args must be an object")  # noqa: TRY004
        if _depth(args) > MAX_ARGS_DEPTH:
            raise ValueError("args are nested too deeply")
        return cls(
            gateway_id=gateway_id,
            command_id=command_id,
            counter=counter,
            issued_at=_utc(p["issued_at"]),
            expires_at=_utc(p["expires_at"]),
            name=name,
            args=args,
        )


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _utc(text: Any) -> datetime:
    if not isinstance(text, str) or len(text) > 40:
        raise ValueError("times must be ISO-8601 text")
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError("times must carry a UTC offset")
    return t.astimezone(UTC)


def digest(raw: bytes) -> str:
    """SHA-256 of the envelope as received: names a command even when nothing else can."""
    return hashlib.sha256(raw).hexdigest()


def sign(command: Command, key: ed25519.Ed25519PrivateKey) -> bytes:
    """Provider side (homecare-provider command sign): the wire form of a signed command."""
    payload = json.dumps(command.payload_json(), sort_keys=True).encode()
    return json.dumps(
        {
            "format": FORMAT,
            "payload": base64.b64encode(payload).decode(),
            "signature": base64.b64encode(key.sign(payload)).decode(),
        }
    ).encode()


def verify(
    raw: bytes,
    key: ed25519.Ed25519PublicKey | None,
    gateway_id: str,
    now: datetime,
) -> Command:
    """The command in ``raw``, or :class:`CommandRefusedError` (and nothing else) saying why."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise CommandRefusedError(
            Reason.TOO_LARGE, f"command envelope of {len(raw)} bytes (at most {MAX_ENVELOPE_BYTES})"
        )
    try:
        outer = json.loads(raw)
        if not isinstance(outer, dict) or outer.get("format") != FORMAT or len(outer) != 3:
            raise ValueError("unknown outer format")  # noqa: TRY301 - one refusal for all
        payload = base64.b64decode(outer["payload"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise CommandRefusedError(Reason.MALFORMED, "not a signed command envelope") from None
    if key is None:
        raise CommandRefusedError(
            Reason.NO_COMMAND_KEY, "no command key was pinned at enrolment: every command refused"
        )
    try:
        key.verify(signature, payload)
    except InvalidSignature:
        raise CommandRefusedError(
            Reason.BAD_SIGNATURE, "the command is not signed by the pinned command key"
        ) from None
    try:
        command = Command.from_payload(json.loads(payload))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise CommandRefusedError(
            Reason.MALFORMED, f"signed command content unusable: {str(exc)[:200]}"
        ) from None
    if command.gateway_id != gateway_id:
        raise CommandRefusedError(
            Reason.WRONG_GATEWAY,
            f"the command is for router {command.gateway_id}, this is {gateway_id}",
            command=command,
        )
    if command.expires_at - command.issued_at > MAX_LIFETIME:
        raise CommandRefusedError(
            Reason.TOO_LONG_LIVED,
            f"the command claims {command.expires_at - command.issued_at} of validity",
            command=command,
        )
    if now + CLOCK_SKEW < command.issued_at:
        raise CommandRefusedError(
            Reason.NOT_YET_VALID,
            f"the command is issued at {command.issued_at:%Y-%m-%d %H:%M:%S} UTC, in the future",
            command=command,
        )
    if now - CLOCK_SKEW > command.expires_at:
        raise CommandRefusedError(
            Reason.EXPIRED,
            f"the command expired at {command.expires_at:%Y-%m-%d %H:%M:%S} UTC",
            command=command,
        )
    return command


def check_counter(command: Command, last_accepted: int) -> None:
    """Replay protection: the counter must rise above the last one accepted."""
    if command.counter <= last_accepted:
        raise CommandRefusedError(
            Reason.REPLAYED,
            f"counter {command.counter} is not above the last accepted ({last_accepted})",
            command=command,
        )


def public_key_from_text(text: str) -> ed25519.Ed25519PublicKey:
    """The pinned key as the bundle and the configuration carry it: base64 of the 32 raw bytes."""
    try:
        raw = base64.b64decode(text, validate=True)
        if len(raw) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")  # noqa: TRY301
        return ed25519.Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, binascii.Error) as exc:
        raise ValueError(f"command_key is not a base64 Ed25519 public key: {exc}") from None
