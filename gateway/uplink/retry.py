"""Retry policy as a pure classifier; tenacity is the engine that sleeps.

``classify`` says, for a real exception, whether trying again can help and the least time to wait
before it does. Reconnecting is a long-lived task (:mod:`gateway.uplink.upload`); each connect
attempt goes
through :func:`connect_retrying`, full-jitter exponential backoff with a cap.
"""

from __future__ import annotations

import enum
import ssl
from dataclasses import dataclass

import structlog
import tenacity

from gateway.errors import ConfigError, UploadError

log = structlog.get_logger("gateway.retry")


class FailureKind(enum.StrEnum):
    TRANSIENT = "transient"  # network down, broker restarting, timeout: retry soon
    REFUSED = "refused"  # broker answered "no" (ACL, quota, identity): retry slowly, raise an alarm
    CONFIG = "config"  # our own files are broken: retrying will not help until someone fixes them
    OUTSIDE_VPN = "outside-vpn"  # the VPN is down: wait for it, never send around it


@dataclass(frozen=True, slots=True)
class Decision:
    kind: FailureKind
    min_wait_s: float


def classify(exc: BaseException) -> Decision:
    from gateway.uplink.link import OutsideVpnError  # noqa: PLC0415 - avoid cycle
    from gateway.uplink.mqtt import ConnectRefusedError, PublishRefusedError  # noqa: PLC0415

    if isinstance(exc, OutsideVpnError):
        return Decision(FailureKind.OUTSIDE_VPN, 5.0)  # the tunnel may come back any second
    if isinstance(exc, ConnectRefusedError | PublishRefusedError):
        return Decision(FailureKind.REFUSED, 30.0)
    if isinstance(exc, ConfigError):
        return Decision(FailureKind.CONFIG, 60.0)
    cause = exc.__cause__ if isinstance(exc, UploadError) else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        # The broker's certificate does not chain to our CA (or has expired): someone must act,
        # but the fix may be on the provider side, so keep trying at a slow pace.
        return Decision(FailureKind.REFUSED, 30.0)
    if isinstance(cause, FileNotFoundError | PermissionError):
        return Decision(FailureKind.CONFIG, 60.0)
    return Decision(FailureKind.TRANSIENT, 0.0)


class _ClassifiedWait(tenacity.wait.wait_base):
    """Full-jitter exponential backoff, never shorter than the classifier's minimum."""

    def __init__(self, initial_s: float, max_s: float) -> None:
        self._jitter = tenacity.wait_random_exponential(multiplier=initial_s, max=max_s)
        self._max_s = max_s

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        delay = float(self._jitter(retry_state))
        outcome = retry_state.outcome
        if outcome is not None and outcome.failed:
            exc = outcome.exception()
            if exc is not None:
                delay = max(delay, min(classify(exc).min_wait_s, self._max_s))
        return delay


def _log_before_sleep(retry_state: tenacity.RetryCallState) -> None:
    outcome = retry_state.outcome
    exc = outcome.exception() if outcome is not None and outcome.failed else None
    next_s = retry_state.next_action.sleep if retry_state.next_action else None
    log.warning(
        "uplink.connect_failed",
        attempt=retry_state.attempt_number,
        error=str(exc),
        kind=str(classify(exc).kind) if exc is not None else None,
        retry_in_s=round(next_s, 2) if next_s is not None else None,
    )


def connect_retrying(initial_s: float = 0.5, max_s: float = 60.0) -> tenacity.AsyncRetrying:
    """Retry forever on UploadError (the daemon must never give up on the provider)."""
    return tenacity.AsyncRetrying(
        wait=_ClassifiedWait(initial_s, max_s),
        retry=tenacity.retry_if_exception_type(UploadError),
        before_sleep=_log_before_sleep,
        reraise=True,
    )
