"""The small interface every scenario talks to, whatever the rig is made of.

``HilRig`` is implemented by :class:`hil.sim.SimRig` (simulated parts on this machine) and
:class:`hil.real.RealRig` (hardware driven by the commands of a rig profile). ``Lifecycle`` is the
equipment-return / re-enrolment seam: provisioning is being built in parallel, so the suite
depends on this interface only and :class:`CliLifecycle` adapts it to ``gatewayctl``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from hil.profile import RigProfile
from tests.integration.rig import Received


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """One attached device as the scenarios see it."""

    name: str  # the profile's name for it
    transport: str  # "ble", "serial" or "sim"
    kind: str  # BLE profile, serial protocol or simulated kind
    wire_id: str  # Measurement.device.value on the provider side (address or serial number)
    keeps_records: bool  # holds readings until the gateway confirms them (RACP, ASTM, memory)


class HilRig(Protocol):
    @property
    def profile(self) -> RigProfile: ...
    @property
    def received(self) -> Received:
        """What the provider verified, in arrival order."""

    def devices(self) -> tuple[DeviceRef, ...]: ...
    def start(self) -> None: ...
    def close(self) -> None: ...
    def verifier_summary(self) -> dict[str, Any]: ...
    def measure(self, device: DeviceRef) -> None: ...
    def power_cut(self) -> None: ...
    def power_restore(self) -> None: ...
    def wan_drop(self) -> None: ...
    def wan_restore(self) -> None: ...
    def out_of_range(self, device: DeviceRef) -> None: ...
    def back_in_range(self, device: DeviceRef) -> None: ...
    def rotate_broker_cert(self) -> None: ...
    def broker_fingerprint(self) -> str: ...
    def wait_daemon_up(self, timeout_s: float) -> None: ...
    def outbox_depth(self) -> int | None: ...
    def confirmed(self, device: DeviceRef) -> int | None: ...
    def gatewayctl(self, *args: str, timeout_s: float = 30,
                   stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        ...
    def facts(self) -> dict[str, Any]: ...

    # Provisioning (Capability.ENROLMENT): the provider's side of enrolling the gateway.
    def enrolment_token(self, episode: str) -> str:
        """A one-time token from the provider for a new episode binding the rig's devices."""
    def after_enrolment(self) -> None:
        """The provider trusts the newly issued identity; the gateway service runs again."""
    def capture_identity(self) -> Any | None:
        """The gateway's TLS identity as a thief would copy it (None: not readable here)."""
    def broker_accepts(self, identity: Any) -> bool:
        """Does the provider's broker accept a session with that identity?"""


class Lifecycle(Protocol):
    """Equipment return and re-enrolment, as logistics staff do it."""

    def return_equipment(self) -> dict[str, Any]:
        """Drain the outbox to the provider, revoke, erase, back to factory; returns the facts
        (``unsent_records``, ``revoked``, ``erased``, ...)."""

    def enrol(self, episode: str) -> None:
        """Bind the gateway to a new patient episode (one-time token from the provider)."""

    def state(self) -> tuple[str, str | None]:
        """(phase, episode): phase is factory, enrolled, bound or returning."""


NOT_AVAILABLE = "provisioning commands not available in this build"


def no_token_issuer(episode: str) -> str:
    raise AssertionError(
        f"no enrolment token issuer is connected to the HIL rig for episode {episode!r}: "
        "wire the test provider's EST token service into CliLifecycle(token_for=...)"
    )


class CliLifecycle:
    """``Lifecycle`` through gatewayctl, as provisioning builds it: ``return [--force]``
    (``--json``: state, unsent_records, forced, revoked, erased), ``enrol --token-file -``
    (the token on stdin), ``lifecycle --json`` (state, episode). ``token_for(episode)`` gets a
    one-time enrolment token from the provider's test service (connected at merge)."""

    def __init__(self, rig: HilRig, token_for: Callable[[str], str] = no_token_issuer,
                 after_enrol: Callable[[], None] = lambda: None) -> None:
        self._rig = rig
        self._token_for = token_for
        self._after_enrol = after_enrol  # the product says: restart the service after enrol

    def return_equipment(self) -> dict[str, Any]:
        proc = self._rig.gatewayctl("return", "--json", timeout_s=660)
        self._check(proc, "return")
        try:
            facts: dict[str, Any] = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError(f"gatewayctl return --json printed no JSON document: "
                                 f"{proc.stdout[:300]!r}") from None
        return facts

    def enrol(self, episode: str) -> None:
        token = self._token_for(episode)
        self._check(self._rig.gatewayctl("enrol", "--token-file", "-", timeout_s=120, stdin=token),
                    "enrol")
        self._after_enrol()

    def state(self) -> tuple[str, str | None]:
        proc = self._rig.gatewayctl("lifecycle", "--json")
        self._check(proc, "lifecycle")
        data = json.loads(proc.stdout)
        return str(data["state"]), data.get("episode")

    @staticmethod
    def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
        if proc.returncode != 0:
            raise AssertionError(
                f"gatewayctl {what} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
