"""Command name -> argument validator and handler. The daemon registers its commands here
(gateway/daemon/commands.py); a later command (``update.offer``) is one more ``register`` call.

A validator is pure: it turns the signed ``args`` object into a typed value or raises
:class:`~gateway.commands.envelope.CommandRefusedError` (``bad-args`` or ``not-allowed``), so a
command is refused before anything is changed. A handler does the work and returns a small
JSON-ready result for the audit record (counts, states; never a clinical value nor key material).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.commands.envelope import Command, CommandRefusedError, Reason

MAX_RESULT_KEYS = 32  # a handler's result is a summary, not a dump
DEFAULT_TIMEOUT_S = 120.0

Validator = Callable[[Mapping[str, Any]], Any]
Handler = Callable[[Command, Any], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    validate: Validator
    handler: Handler
    timeout_s: float = DEFAULT_TIMEOUT_S
    summary: str = ""  # one line for docs and ``homecare-provider command list``


class Registry:
    def __init__(self) -> None:
        self._specs: dict[str, Spec] = {}

    def register(
        self,
        name: str,
        validate: Validator,
        handler: Handler,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        summary: str = "",
    ) -> None:
        if name in self._specs:
            raise ValueError(f"command {name!r} registered twice")
        self._specs[name] = Spec(name, validate, handler, timeout_s, summary)

    def names(self) -> list[str]:
        return sorted(self._specs)

    def prepare(self, command: Command) -> tuple[Spec, Any]:
        """The command's spec and validated args, or a refusal (nothing changed yet)."""
        spec = self._specs.get(command.name)
        if spec is None:
            raise CommandRefusedError(
                Reason.UNKNOWN_COMMAND, f"unknown command {command.name!r}", command=command
            )
        try:
            args = spec.validate(command.args)
        except CommandRefusedError as exc:
            raise CommandRefusedError(exc.reason, exc.message, command=command) from None
        return spec, args


# -- argument checks shared by validators ------------------------------------------------------


def no_args(args: Mapping[str, Any]) -> None:
    if args:
        raise CommandRefusedError(Reason.BAD_ARGS, f"takes no arguments, got {sorted(args)[:5]}")


def exactly(args: Mapping[str, Any], *names: str) -> None:
    if set(args) != set(names):
        raise CommandRefusedError(
            Reason.BAD_ARGS, f"arguments must be exactly {list(names)}, got {sorted(args)[:8]}"
        )


def number(args: Mapping[str, Any], key: str, low: float, high: float) -> float:
    v = args.get(key)
    if not isinstance(v, int | float) or isinstance(v, bool) or not low <= v <= high:
        raise CommandRefusedError(Reason.BAD_ARGS, f"{key} must be a number in [{low}, {high}]")
    return float(v)
