"""Devices bound or unbound mid-episode by a signed command (issue 20: device.bind/unbind).

The signed enrolment bundle stays as it was issued; the changes the provider signed since are
kept next to it in ``<state_dir>/binding-changes.json`` (0600: a BLE passkey may be in it, as in
the bundle) and applied on top of the bundle's list whenever the daemon asks which devices to
read (provisioning/runtime.py ``devices``). So a binding made by command survives a restart, and
the equipment return erases it with the episode (it lives in the state directory's episode
files, which the return's erase step removes).

Written atomically (temporary file, fsync, rename); a damaged file is refused with a typed
error rather than guessed at: the bundle's own list is then read, and the alarm says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioning.bundle import BoundDevice
from provisioning.errors import BundleInvalidError
from provisioning.safepath import SafeTree

CHANGES_FILE = "binding-changes.json"
MAX_CHANGES_BYTES = 256 * 1024
MAX_BOUND_DEVICES = 32  # devices one home may have bound at once


@dataclass(frozen=True, slots=True)
class BindingChanges:
    bound: tuple[BoundDevice, ...] = ()  # added (or replacing the bundle's entry: same device)
    unbound: tuple[tuple[str, str], ...] = ()  # (transport, ADDRESS) removed

    def apply(self, devices: tuple[BoundDevice, ...]) -> tuple[BoundDevice, ...]:
        gone = {(t, a.upper()) for t, a in self.unbound}
        replaced = {(d.transport, d.address.upper()) for d in self.bound}
        kept = [
            d
            for d in devices
            if (d.transport, d.address.upper()) not in gone | replaced
        ]
        return (*kept, *(d for d in self.bound if (d.transport, d.address.upper()) not in gone))

    def bind(self, device: BoundDevice) -> BindingChanges:
        key = (device.transport, device.address.upper())
        return BindingChanges(
            bound=(*(d for d in self.bound if (d.transport, d.address.upper()) != key), device),
            unbound=tuple(u for u in self.unbound if (u[0], u[1].upper()) != key),
        )

    def unbind(self, transport: str, address: str) -> BindingChanges:
        key = (transport, address.upper())
        return BindingChanges(
            bound=tuple(d for d in self.bound if (d.transport, d.address.upper()) != key),
            unbound=(*(u for u in self.unbound if (u[0], u[1].upper()) != key), key),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": 1,
            "bound": [d.to_json() for d in self.bound],
            "unbound": [list(u) for u in self.unbound],
        }

    @classmethod
    def from_json(cls, data: Any) -> BindingChanges:
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ValueError("unknown format")
        bound = tuple(BoundDevice.from_json(d) for d in data["bound"])
        unbound = tuple((str(t), str(a).upper()) for t, a in data["unbound"])
        return cls(bound, unbound)


def load_changes(state_dir: Path) -> BindingChanges:
    try:
        raw = SafeTree(state_dir).read_bytes(CHANGES_FILE, limit=MAX_CHANGES_BYTES)
    except FileNotFoundError:
        return BindingChanges()
    try:
        return BindingChanges.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleInvalidError(
            f"{CHANGES_FILE} (devices bound by command) is damaged: {str(exc)[:100]}",
            hint="the bundle's device list is read instead; re-send the device.bind commands",
        ) from None


def save_changes(state_dir: Path, changes: BindingChanges) -> None:
    data = json.dumps(changes.to_json(), sort_keys=True).encode()
    SafeTree(state_dir).atomic_write(CHANGES_FILE, data, 0o600)
