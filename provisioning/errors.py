"""Provisioning errors: each has a stable code the operations guide (docs/operations.md) explains.

The people who meet these are logistics staff on a doorstep or in the depot, so every message
says what happened in plain words and the hint says what to do next. The code (``P-TOKEN``...)
is what they read out on the phone to support. Never a key, a token or a clinical value in here.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.errors import ProvisioningError


class ProvisioningStepError(ProvisioningError):
    """Base of the lifecycle errors below; ``code`` is stable and documented."""

    code: ClassVar[str] = "P-ERROR"

    def __init__(self, message: str, *, hint: str | None = None, **fields: Any) -> None:
        super().__init__(message, hint=hint, code=self.code, **fields)

    def one_line(self) -> str:
        return f"[{self.code}] {super().one_line()}"


class WrongStateError(ProvisioningStepError):
    """The command does not apply in the gateway's current lifecycle state."""

    code = "P-STATE"
    hint = (
        "run 'gatewayctl provisioning-state' to see the state; the guide says which command is next"
    )


class NotEnrolledError(ProvisioningStepError):
    """The daemon was started on a router that has no identity or episode yet."""

    code = "P-NOT-ENROLLED"
    hint = "enrol the router first: gatewayctl enrol"


class TokenRejectedError(ProvisioningStepError):
    """The provider refused the enrolment token (wrong, used already, or expired)."""

    code = "P-TOKEN"
    hint = (
        "check the token on the delivery note (typing errors: 0/O, 1/l); "
        "a token works only once - ask the provider's logistics desk for a new one"
    )


class ProviderUnreachableError(ProvisioningStepError):
    """The provider's enrolment service could not be reached or answered with an error."""

    code = "P-UNREACHABLE"
    hint = (
        "check that the router is online (WAN / 5G light), then run the same command again; "
        "nothing was lost"
    )


class BundleMissingError(ProvisioningStepError):
    """The provider has no episode bundle for this router (not yet assigned to an episode)."""

    code = "P-BUNDLE-MISSING"
    hint = (
        "ask the logistics desk to assign the router to the episode, then run "
        "'gatewayctl enrol' again (no new token needed)"
    )


class ProfileMissingError(ProvisioningStepError):
    """No provider profile (provider.toml) and no gateway.toml: the router knows no provider."""

    code = "P-PROFILE"
    hint = (
        "install the care provider's profile package (it puts provider.toml in "
        "/etc/homecare-gateway), then run the same command again; call support if you have none"
    )


class ProviderIdentityError(ProvisioningStepError):
    """The enrolment service's TLS certificate is not the provider's: refuse to talk to it."""

    code = "P-PROVIDER-CERT"
    hint = "do not continue; call the provider's logistics desk (the router may be misconfigured)"


class BundleSignatureError(ProvisioningStepError):
    """The enrolment bundle is not signed by the provider (damaged or forged)."""

    code = "P-BUNDLE-SIGNATURE"
    hint = "do not use this bundle; call the provider's logistics desk for a new one"


class BundleWrongGatewayError(ProvisioningStepError):
    """The enrolment bundle was made for another router."""

    code = "P-BUNDLE-GATEWAY"
    hint = (
        "compare the router serial on the label with the delivery note; ask the logistics desk "
        "to issue the bundle for this router"
    )


class BundleExpiredError(ProvisioningStepError):
    """The enrolment bundle is outside its validity period (too old, or not valid yet)."""

    code = "P-BUNDLE-EXPIRED"
    hint = (
        "ask the logistics desk to reissue the bundle; if it was just issued, check the router "
        "clock (gatewayctl selftest)"
    )


class BundleInvalidError(ProvisioningStepError):
    """The enrolment bundle is signed but its content is unusable (a provider-side bug)."""

    code = "P-BUNDLE-INVALID"
    hint = "call the provider's logistics desk and read them this message"


class KeyStoreError(ProvisioningStepError):
    """The key store could not create, read or destroy a key."""

    code = "P-KEYSTORE"
    hint = "check free space and permissions of the state directory; then run the command again"


class DrainIncompleteError(ProvisioningStepError):
    """Return: records are still waiting for the provider's acknowledgement."""

    code = "P-DRAIN"
    hint = (
        "leave the router connected and run 'gatewayctl return' again; if it can never reach the "
        "provider, 'gatewayctl return --force' records the unsent count in the return report"
    )


class RevocationError(ProvisioningStepError):
    """Return: the provider did not confirm that the router's certificate is revoked."""

    code = "P-REVOKE"
    hint = (
        "check the connection and run 'gatewayctl return' again; with --force the return "
        "completes and the provider revokes the certificate from its records"
    )


class DaemonStillRunningError(ProvisioningStepError):
    """The step needs the gateway service stopped and it did not stop."""

    code = "P-SERVICE-RUNNING"
    hint = "stop it with 'systemctl stop gatewayd', then run the same command again"


class InstallCheckFailedError(ProvisioningStepError):
    """The installation check found a problem (the table says which line failed)."""

    code = "P-INSTALL-CHECK"
    hint = "fix the line marked FAIL (the guide lists what each means), then run the check again"


class BundleNotBoundError(ProvisioningStepError):
    """The bundle was not made for this enrolment: another certificate key, or an older one."""

    code = "P-BUNDLE-BINDING"
    hint = (
        "do not use this bundle (it may be a previous episode's, for another patient); ask the "
        "logistics desk to issue the bundle again for this router's current enrolment"
    )


class UnsafePathError(ProvisioningStepError):
    """Root found something in the service account's files it must not touch (link, FIFO...)."""

    code = "P-UNSAFE-PATH"
    hint = (
        "someone changed the gateway's files: do not run the command again; "
        "call support (the router needs a depot reset and an investigation)"
    )


ALL_ERRORS: tuple[type[ProvisioningStepError], ...] = (
    WrongStateError,
    NotEnrolledError,
    TokenRejectedError,
    ProviderUnreachableError,
    BundleMissingError,
    ProfileMissingError,
    ProviderIdentityError,
    BundleSignatureError,
    BundleWrongGatewayError,
    BundleExpiredError,
    BundleInvalidError,
    KeyStoreError,
    DrainIncompleteError,
    RevocationError,
    DaemonStillRunningError,
    InstallCheckFailedError,
    BundleNotBoundError,
    UnsafePathError,
)

