"""One exception tree for the whole project.

Blame is in the type: a ``ProtocolError`` means a device or peer sent something we cannot
accept, a ``ConfigError`` means the person who wrote the configuration must fix it, a
``StoreError`` means the local database is in trouble. Every error carries structured fields
(never clinical values, never key material) and a ``hint`` telling the technician what to do.
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """Root of every error this project raises on purpose."""

    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.fields = fields

    def one_line(self) -> str:
        """The message plus the hint, on one line, for a terminal or a journal."""
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(GatewayError):
    """The configuration file is missing, unreadable or has a bad value."""

    hint = "fix the named key in the configuration file and restart the service"

    def __init__(self, key: str, problem: str, *, path: str | None = None) -> None:
        where = f"{path}: " if path else ""
        super().__init__(f"config error: {where}{key}: {problem}", key=key, path=path)
        self.key = key
        self.problem = problem


class ConfigFileMissingError(ConfigError):
    """The configuration file is not there at all (a wrong path, not a wrong key)."""

    hint = (
        "check the path given with --config (gatewayctl also reads $HOMECARE_GATEWAY_CONFIG; "
        "the demo's file is .demo/gateway.toml)"
    )

    def __init__(self, path: str) -> None:
        super().__init__("-", "file not found", path=path)
        self.message = f"config error: {path}: file not found"


class UsageError(GatewayError):
    """A command line asks for something the command cannot do. Blame: the person typing it."""

    hint = "see `gatewayctl COMMAND --help` for the options and an example"


class ModelError(GatewayError):
    """A measurement value was constructed with inconsistent fields (a bug in a driver)."""


class ProtocolError(GatewayError):
    """A device or peer sent bytes we cannot decode. Blame: the other side."""

    hint = "capture the bytes with the technician CLI and report the device model and firmware"


class DecodeError(ProtocolError):
    """A payload does not follow its specification."""


class SealError(GatewayError):
    """Sealing failed (missing or wrong key). Blame: our configuration or provisioning."""

    hint = "check the identity and provider key files named in the configuration"


class VerifyError(GatewayError):
    """A sealed record or batch failed to open or verify on the provider side."""

    def __init__(self, message: str, *, reason: str, **fields: Any) -> None:
        super().__init__(message, reason=reason, **fields)
        self.reason = reason


class StoreError(GatewayError):
    """The outbox database failed (disk full, corruption, permissions)."""

    hint = "check free space and permissions of the state directory; nothing was deleted"


class UploadError(GatewayError):
    """The uplink could not deliver (broker unreachable, refused, TLS failure)."""

    hint = "check the VPN / WAN link, the broker address and the client certificate"


class ProvisioningError(GatewayError):
    """Enrolment, binding or equipment return failed."""
