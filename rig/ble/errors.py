"""Errors of the simulated BlueZ rig: our own misuse (``SimError``), and the two signals a
virtual peripheral uses inside the simulation (``AttError`` for an ATT error response,
``LinkLostError`` when the radio link went away under a transfer)."""

from __future__ import annotations

from gateway.errors import GatewayError


class SimError(GatewayError):
    """The simulator was misused or could not start (bad scenario, dbus-daemon missing)."""

    hint = "check the scenario file and that dbus-daemon is installed (/usr/bin/dbus-daemon)"


class AttError(SimError):
    """A peripheral answers a read or write with an ATT error code (Core Vol 3 Part F 3.4.1.1);
    the BlueZ side turns it into the D-Bus error real bluetoothd sends for that code."""

    def __init__(self, code: int, what: str = "") -> None:
        super().__init__(f"ATT error 0x{code:02x} {what}".strip(), code=code)
        self.code = code


class LinkLostError(SimError):
    """The connection dropped while a peripheral was sending; what it did not send is kept."""
