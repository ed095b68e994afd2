"""Keep one configured serial port open: reconnect after unplug, power cycle or contention.

The reconnect loop is the driver's long-lived task (CONVENTIONS 5: not nested retries); each
"get me an open port" goes through tenacity with full-jitter exponential backoff and a cap,
never shorter than what :func:`~drivers.serial.port_errors.classify` asks for (a port held by
another process is not tried every 50 ms). A session that ends quickly (a device that hangs up
right after opening) makes the next open wait, so a flapping cable cannot spin the CPU.

The connection's ``state`` ("connecting", "connected", "unplugged", "busy", ...) and its
``last_error`` feed the drivers' ``health()``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
import tenacity

from drivers.serial.port import PortSpec, SerialPort
from drivers.serial.port_errors import SerialPortError
from gateway.pipeline.watchdog import LoopMark

log = structlog.get_logger("drivers.serial.connection")

Opener = Callable[[PortSpec], Awaitable[SerialPort]]


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 10.0  # a session that lasted this long was not a flap


class _ClassifiedWait(tenacity.wait.wait_base):
    def __init__(self, backoff: Backoff) -> None:
        self._jitter = tenacity.wait_random_exponential(
            multiplier=backoff.initial_s, max=backoff.max_s
        )
        self._max_s = backoff.max_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = float(self._jitter(retry_state))
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if isinstance(exc, SerialPortError):
            delay = max(delay, min(exc.min_wait_s, self._max_s))
        return delay


class PortConnection:
    """Opens ``spec`` until it succeeds (never gives up) and tracks the state for health."""

    def __init__(
        self,
        spec: PortSpec,
        *,
        name: str,
        backoff: Backoff | None = None,
        opener: Opener = SerialPort.open,
        monotonic: Callable[[], float] = time.monotonic,
        progress: LoopMark | None = None,
    ) -> None:
        self.spec = spec
        self.name = name
        self.backoff = backoff or Backoff()
        self.state = "connecting"
        self.last_error: SerialPortError | None = None
        self.connects = 0
        self._opener = opener
        self._monotonic = monotonic
        self._opened_at: float | None = None
        self._flaps = 0
        self.progress = progress or LoopMark()  # the driver's loop, shared for the watchdog
        self._log = log.bind(driver=name, path=spec.path)
        if not spec.stable:
            self._log.warning(
                "serial.port.unstable_path", hint="use /dev/serial/by-id/... or a udev name"
            )

    async def open(self) -> SerialPort:
        self.progress.turn()
        await self._flap_pause()
        retrying = tenacity.AsyncRetrying(
            wait=_ClassifiedWait(self.backoff),
            retry=tenacity.retry_if_exception_type(SerialPortError),
            before_sleep=self._failed,
            reraise=True,
        )
        port: SerialPort = await retrying(self._opener, self.spec)
        self.connects += 1
        self._opened_at = self._monotonic()
        self._log.info(
            "serial.port.opened",
            device=port.device,
            line=str(self.spec.line),
            after_error=self.state if self.last_error else None,
        )
        self.state = "connected"
        return port

    def lost(self, error: SerialPortError) -> None:
        """The open port failed; the next :meth:`open` waits if the session was short."""
        lasted = None if self._opened_at is None else self._monotonic() - self._opened_at
        self._opened_at = None
        short = lasted is not None and lasted < self.backoff.stable_s
        self._flaps = self._flaps + 1 if short else 0
        self.state, self.last_error = error.state, error
        self._log.warning(
            "serial.port.lost",
            error=error.message,
            hint=error.hint,
            lasted_s=None if lasted is None else round(lasted, 2),
            **error.fields,
        )

    async def _flap_pause(self) -> None:
        if self._flaps:
            cap = min(self.backoff.max_s, self.backoff.initial_s * 2 ** min(self._flaps, 16))
            self.progress.turn(within_s=cap)
            await asyncio.sleep(random.uniform(0, cap))  # noqa: S311 - jitter, not cryptography

    def _failed(self, retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        if not isinstance(exc, SerialPortError):
            return
        next_s = retry_state.next_action.sleep if retry_state.next_action else None
        self.progress.turn(within_s=next_s or 0.0)
        changed = exc.state != self.state
        self.state, self.last_error = exc.state, exc
        emit = self._log.warning if changed else self._log.debug  # one line per new condition
        emit(
            "serial.port.open_failed",
            error=exc.message,
            hint=exc.hint,
            attempt=retry_state.attempt_number,
            retry_in_s=None if next_s is None else round(next_s, 2),
            **exc.fields,
        )
