"""Typed errors of the update path; each says who can fix it."""

from __future__ import annotations

from gateway.errors import GatewayError


class UpdateError(GatewayError):
    """An update was refused or could not be applied; the running version stays."""

    hint = (
        "nothing changed on the router; check the release with `homecare-provider release verify`"
    )


class ReleaseInvalidError(UpdateError):
    """The manifest or artifact is malformed, oversized or does not match its digest."""

    hint = "rebuild the release with `homecare-provider release build` and offer it again"


class ReleaseSignatureError(ReleaseInvalidError):
    """Not signed by the release key pinned in gateway.toml ([updates] release_signing_key)."""

    hint = "sign with the provider's release key, or check the router's pinned release key"


class ReleaseNotApplicableError(UpdateError):
    """Valid, but not for this router: another architecture, a downgrade without the rollback
    flag, or an outbox schema the fallback release could not open."""

    hint = "build the release for this router's architecture and version (see docs/operations.md)"


class UpdateBusyError(UpdateError):
    """Another update is being installed or is in its health gate."""

    hint = "wait for the running update to finish (gatewayctl status shows it), then offer again"
