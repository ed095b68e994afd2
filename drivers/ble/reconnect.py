"""What a failed or ended BLE connection means, and how long the driver waits before the next.

A device that is absent or out of range is the normal case at home, so the driver retries forever;
these are the pure decisions it takes on the way, kept apart from the connection loop in
:mod:`drivers.ble.session`:

- ``Backoff``: full-jitter exponential waits, capped; a connection that lasted ``stable_s`` was
  not a flap and resets the count;
- ``classify``: the health state a failed attempt leaves the device in ("out-of-range",
  "bluez-unavailable" or "failing");
- ``pairing_failure``: a failed bonding as a typed ``PairingError`` with a hint for the
  technician (a wrong passkey does not get better by hammering).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakDBusError,
    BleakDeviceNotFoundError,
    BleakError,
)

from drivers.ble.errors import PairingError


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between connection attempts: full-jitter exponential, capped."""

    initial_s: float = 1.0
    max_s: float = 60.0
    stable_s: float = 30.0  # a connection that lasted this long was not a flap

    def delay(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt, 30))
        return max(self.initial_s, random.uniform(0, ceiling))  # noqa: S311 - jitter, not crypto


_AUTH_ERRORS = {
    "org.bluez.Error.AuthenticationFailed": "authentication failed (wrong passkey?)",
    "org.bluez.Error.AuthenticationRejected": "the device or our agent rejected pairing",
    "org.bluez.Error.AuthenticationCanceled": "pairing was cancelled",
    "org.bluez.Error.AuthenticationTimeout": "nobody answered the pairing request in time",
    "org.bluez.Error.ConnectionAttemptFailed": "the device refused the pairing request",
}


def pairing_failure(exc: BaseException, device: str) -> PairingError | None:
    """The typed error for a failed bonding, or None when ``exc`` is some other failure."""
    if isinstance(exc, BleakDBusError) and exc.dbus_error in _AUTH_ERRORS:
        return PairingError(device, _AUTH_ERRORS[exc.dbus_error])
    return None


# D-Bus errors that mean nobody owns org.bluez (bluetoothd stopped) or the adapter is not usable.
_BLUEZ_GONE = frozenset({
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
    "org.bluez.Error.NotReady",
})


def classify(exc: BaseException) -> str:
    """The health state a failed connection attempt leaves the device in."""
    if isinstance(exc, BleakBluetoothNotAvailableError) or (
        isinstance(exc, BleakDBusError) and exc.dbus_error in _BLUEZ_GONE
    ):
        return "bluez-unavailable"  # bluetoothd is not running, or no adapter / powered off
    if isinstance(exc, BleakDeviceNotFoundError | TimeoutError):
        return "out-of-range"
    if isinstance(exc, BleakError) and "not found" in str(exc).lower():
        return "out-of-range"  # BlueZ forgot the device object: not advertising
    return "failing"
