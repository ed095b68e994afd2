"""The command loop: raw messages in, sealed audit records out, handlers run one at a time.

For each message, in order: verify (envelope.verify), check the counter against the ledger,
validate the arguments (registry.prepare) - a failure of any of these is a ``refused`` record and
changes nothing. Then the counter is committed to the ledger *before* anything runs, the
``accepted`` record is sealed, the handler runs (with a timeout), and its outcome is sealed:
``done`` with a small result, ``refused`` with a reason (a handler may still refuse, e.g.
``busy``), or ``failed`` with the error's type and message (our messages: never a clinical value).
A command accepted before a crash and never finished is sealed ``interrupted`` at the next start.

Bounded by construction: at most ``MAX_QUEUED`` messages wait, at most ``RATE_PER_MINUTE`` are
processed a minute (a token bucket); what is beyond either is dropped unread and counted, and
the count goes upstream in one ``command-dropped`` record a minute at most. A flood on the
command topic (only the provider may publish there: the broker's ACL) so grows neither memory
nor the outbox without bound.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import structlog

from gateway.commands import envelope
from gateway.commands.envelope import Command, CommandRefusedError, Reason
from gateway.commands.ledger import Ledger
from gateway.commands.registry import MAX_RESULT_KEYS, Registry
from gateway.errors import GatewayError

log = structlog.get_logger("gateway.commands")

MAX_QUEUED = 8  # messages waiting for the runner; more are dropped (counted)
RATE_PER_MINUTE = 30  # commands processed per minute, sustained
RATE_BURST = 20  # ... and at once (a shift handover may send a handful together)
DROP_REPORT_INTERVAL_S = 60.0  # at most one command-dropped record per this
MAX_DETAIL = 300  # characters of an error or refusal message in a record
# Tests only (as provisioning/equipment_return.py's CRASH_ENV): the daemon kills itself with
# SIGKILL right after a command named here was accepted and its "accepted" record sealed - the
# worst moment, which the next start must report as "interrupted".
CRASH_ENV = "HOMECARE_TEST_KILL_AFTER_ACCEPT"

Seal = Callable[[dict[str, Any]], Awaitable[int]]


class TokenBucket:
    """``rate_per_s`` tokens a second up to ``burst``; ``take`` says whether one was there."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate, self._burst, self._clock = rate_per_s, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class CommandRunner:
    def __init__(
        self,
        *,
        gateway_id: str,
        episode: str | None,
        key_text: str | None,
        registry: Registry,
        ledger: Ledger,
        seal: Seal,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gateway_id = gateway_id
        self._episode = episode
        self._key = envelope.public_key_from_text(key_text) if key_text else None
        self._registry = registry
        self._ledger = ledger
        self._seal = seal
        self._now = now
        self._monotonic = monotonic
        self._queue: asyncio.Queue[bytes] = asyncio.Queue(MAX_QUEUED)
        self._bucket = TokenBucket(RATE_PER_MINUTE / 60.0, RATE_BURST, monotonic)
        self._lock = asyncio.Lock()  # ledger calls go to a thread, one at a time
        self.dropped = 0  # not yet reported
        self.dropped_total = 0
        self.outcomes: dict[str, int] = {}  # outcome -> count, for status
        self.running: str | None = None  # the command being run

    # -- input (on the event loop) --------------------------------------------------------------

    def offer(self, raw: bytes) -> None:
        """A message from the command topic. Never blocks, never raises: a full queue or an
        exhausted rate drops it (counted, reported in the next command-dropped record)."""
        if not self._bucket.take():
            self._drop("rate")
            return
        try:
            self._queue.put_nowait(bytes(raw[: envelope.MAX_ENVELOPE_BYTES + 1]))
        except asyncio.QueueFull:
            self._drop("queue-full")

    def _drop(self, why: str) -> None:
        self.dropped += 1
        self.dropped_total += 1
        if self.dropped == 1:
            log.warning("command.dropped", why=why)

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Forever; a ledger error fails the one command (logged), never the daemon."""
        try:
            await self.recover()
        except GatewayError as exc:
            log.error("command.recover_failed", error=exc.one_line())  # noqa: TRY400
        last_report = -DROP_REPORT_INTERVAL_S  # the first drops are reported at once
        while True:
            try:
                raw = await asyncio.wait_for(self._queue.get(), DROP_REPORT_INTERVAL_S)
            except TimeoutError:
                raw = None
            if raw is not None:
                try:
                    await self.handle(raw)
                except GatewayError as exc:  # the ledger's database: no outcome could be kept
                    log.error("command.ledger_failed", error=exc.one_line())  # noqa: TRY400
            if self.dropped and self._monotonic() - last_report >= DROP_REPORT_INTERVAL_S:
                await self._report_dropped()
                last_report = self._monotonic()

    async def recover(self) -> None:
        """Commands accepted before the last stop and never finished: sealed ``interrupted``."""
        for u in await self._ledger_call(self._ledger.unfinished):
            body = self._body(
                "interrupted",
                None,
                name=u.name,
                command_id=u.command_id,
                counter=u.counter,
                detail="the router stopped while the command ran; it did not finish",
            )
            await self._seal_quietly(body)
            await self._ledger_call(self._ledger.finish, u.counter, "interrupted")
            log.warning("command.interrupted", command=u.name, counter=u.counter)

    async def handle(self, raw: bytes) -> str:
        """One message, start to end; returns the outcome sealed."""
        sha = envelope.digest(raw)
        try:
            command = envelope.verify(raw, self._key, self._gateway_id, self._now())
            envelope.check_counter(command, await self._ledger_call(self._ledger.last_counter))
            spec, args = self._registry.prepare(command)
        except CommandRefusedError as exc:
            await self._refused(sha, exc)
            return "refused"
        try:
            await self._ledger_call(
                self._ledger.accept, command.counter, command.command_id, command.name
            )
        except GatewayError as exc:
            log.error("command.ledger_failed", error=exc.message)  # noqa: TRY400
            await self._seal_quietly(self._failed(sha, command, exc))
            return "failed"
        try:
            await self._seal(self._body("accepted", sha, command=command))
        except GatewayError as exc:  # no audit trail for it: it must not run
            log.error("command.accept_not_sealed", command=command.name, error=exc.message)  # noqa: TRY400
            await self._ledger_call(self._ledger.finish, command.counter, "failed")
            return "failed"
        log.info("command.accepted", command=command.name, counter=command.counter)
        _crash_point(command.name)
        self.running = command.name
        try:
            result = await asyncio.wait_for(spec.handler(command, args), spec.timeout_s)
        except CommandRefusedError as exc:
            body = self._body(
                "refused", sha, command=command, reason=exc.reason, detail=exc.message
            )
        except TimeoutError:
            body = self._body(
                "failed", sha, command=command, error="TimeoutError",
                detail=f"did not finish within {spec.timeout_s:.0f} s",
            )  # fmt: skip
        except GatewayError as exc:
            body = self._failed(sha, command, exc)
        except Exception as exc:  # noqa: BLE001 - a handler's bug must not end the command loop
            # The type only: a bug's message (or traceback) may quote a value it was handed.
            log.error("command.handler_crashed", command=command.name, error=type(exc).__name__)  # noqa: TRY400
            body = self._body("failed", sha, command=command, error=type(exc).__name__)
        else:
            body = self._body("done", sha, command=command, result=_bounded(result))
        finally:
            self.running = None
        await self._seal_quietly(body)
        await self._ledger_call(self._ledger.finish, command.counter, body["outcome"])
        self.outcomes[body["outcome"]] = self.outcomes.get(body["outcome"], 0) + 1
        log.info("command.finished", command=command.name, outcome=body["outcome"])
        return str(body["outcome"])

    def close(self) -> None:
        """At shutdown (a thread: it closes the ledger's database)."""
        self._ledger.close()

    # -- records --------------------------------------------------------------------------------

    async def _refused(self, sha: str, exc: CommandRefusedError) -> None:
        self.outcomes["refused"] = self.outcomes.get("refused", 0) + 1
        log.warning("command.refused", reason=str(exc.reason))
        await self._seal_quietly(
            self._body("refused", sha, command=exc.command, reason=exc.reason, detail=exc.message)
        )

    def _failed(self, sha: str, command: Command, exc: GatewayError) -> dict[str, Any]:
        return self._body(
            "failed", sha, command=command, error=type(exc).__name__, detail=exc.one_line()
        )

    def _body(
        self,
        outcome: str,
        sha: str | None,
        *,
        command: Command | None = None,
        name: str | None = None,
        command_id: str | None = None,
        counter: int | None = None,
        reason: Reason | None = None,
        error: str | None = None,
        detail: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        if command is not None:
            name, command_id, counter = command.name, command.command_id, command.counter
        return {
            "type": "event",
            "version": 1,
            "event": "command",
            "gateway_id": self._gateway_id,
            "episode": self._episode,
            "time": self._now().isoformat(),
            "outcome": outcome,
            "command": name,
            "command_id": command_id,
            "counter": counter,
            "envelope_sha256": sha,
            "reason": str(reason) if reason else None,
            "error": error,
            "detail": detail[:MAX_DETAIL] if detail else None,
            "result": result,
        }

    async def _report_dropped(self) -> None:
        count, self.dropped = self.dropped, 0
        body = {
            "type": "event",
            "version": 1,
            "event": "command-dropped",
            "gateway_id": self._gateway_id,
            "episode": self._episode,
            "time": self._now().isoformat(),
            "dropped": count,
            "limits": {"queued": MAX_QUEUED, "per_minute": RATE_PER_MINUTE},
        }
        await self._seal_quietly(body)

    async def _seal_quietly(self, body: dict[str, Any]) -> None:
        try:
            await self._seal(body)
        except GatewayError as exc:  # outbox full or failing: its own alarms say so
            log.error(  # noqa: TRY400
                "command.record_not_sealed", outcome=body.get("outcome"), error=exc.message
            )

    async def _ledger_call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async with self._lock:
            return await asyncio.to_thread(fn, *args)


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _bounded(result: Mapping[str, Any]) -> dict[str, Any]:
    """A handler's summary, kept small (it goes into a sealed record)."""
    return {str(k)[:64]: _exact(v) for k, v in list(result.items())[:MAX_RESULT_KEYS]}


def _exact(value: Any, depth: int = 0) -> Any:
    """Canonical JSON has no floats (docs/wire-format.md): a float becomes an exact Decimal."""
    if depth > 4:
        return None
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {str(k)[:64]: _exact(v, depth + 1) for k, v in list(value.items())[:MAX_RESULT_KEYS]}
    if isinstance(value, list | tuple):
        return [_exact(v, depth + 1) for v in list(value)[:MAX_RESULT_KEYS]]
    if value is None or isinstance(value, bool | int | str | Decimal):
        return value
    return str(value)[:MAX_DETAIL]
