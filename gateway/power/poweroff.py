"""Asking the system to power off: systemd-logind's ``PowerOff`` over the system D-Bus.

The daemon runs as the unprivileged service user; logind asks polkit, and the package ships one
rule (packaging/polkit/50-homecare-gateway.rules, see systemd/README.md) that allows that user
only ``org.freedesktop.login1.power-off`` (and its ``-multiple-sessions`` variant, so a
technician's SSH login cannot block the stop). ``interactive=false``: nobody is there to type a
password.

This is a seam (:class:`PowerOff`): the daemon takes the one named in ``[power] power_off``;
other packages (the simulated home) can register their own under the entry-point group
``homecare_gateway.power_off`` - the rig's records the request instead of switching the test
machine off.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Protocol

from gateway.errors import GatewayError

LOGIND = "org.freedesktop.login1"
LOGIND_PATH = "/org/freedesktop/login1"
LOGIND_MANAGER = "org.freedesktop.login1.Manager"
POWER_OFF_TIMEOUT_S = 10.0


class PowerOffError(GatewayError):
    """The system refused or did not answer the power-off request."""

    hint = (
        "check that the polkit rule of the package is installed "
        "(/usr/share/polkit-1/rules.d/50-homecare-gateway.rules) and that systemd-logind runs"
    )


class PowerOff(Protocol):
    async def request(self) -> None:
        """Ask the system to power off (returns once it accepted; raises PowerOffError)."""
        ...


class LogindPowerOff:
    def __init__(self, state_dir: Path | None = None) -> None:  # same signature as plug-ins
        del state_dir

    async def request(self) -> None:
        from dbus_fast import BusType, Message, MessageType  # noqa: PLC0415 - only when needed
        from dbus_fast.aio import MessageBus  # noqa: PLC0415

        try:
            async with asyncio.timeout(POWER_OFF_TIMEOUT_S):
                bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
                try:
                    reply = await bus.call(
                        Message(
                            destination=LOGIND,
                            path=LOGIND_PATH,
                            interface=LOGIND_MANAGER,
                            member="PowerOff",
                            signature="b",
                            body=[False],
                        )
                    )
                finally:
                    bus.disconnect()
        except TimeoutError:
            raise PowerOffError("systemd-logind did not answer the power-off request") from None
        except Exception as exc:  # noqa: BLE001 - dbus-fast raises plain exceptions on connect
            raise PowerOffError(f"cannot reach systemd-logind: {exc}") from None
        if reply is None or reply.message_type == MessageType.ERROR:
            name = reply.error_name if reply is not None else "no reply"
            raise PowerOffError(f"systemd-logind refused to power off: {name}")
