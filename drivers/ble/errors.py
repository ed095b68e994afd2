"""Errors of the BLE transport: the link, pairing and the BlueZ service (not payload decoding,
which raises ``DecodeError``)."""

from __future__ import annotations

from gateway.errors import GatewayError


class BleTransportError(GatewayError):
    """Talking to a device through BlueZ failed (not the device's payload)."""

    hint = "check that bluetoothd runs and the device is within range and switched on"


class PairingError(BleTransportError):
    """BlueZ could not bond with a device that requires it (wrong or missing passkey, the
    device refused, nobody answered in time). Blame: the binding or the device, not the link."""

    hint = ("check the passkey in the episode binding against the one the device shows, "
            "then clear the device's bonds (see its manual) and let it pair again")

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(f"pairing with {device} failed: {reason}", device=device,
                         reason=reason)
        self.device = device
        self.reason = reason


class AgentError(BleTransportError):
    """Our org.bluez.Agent1 could not be registered with BlueZ's AgentManager1."""

    hint = "check that bluetoothd runs and that this user may talk to org.bluez on the system bus"
