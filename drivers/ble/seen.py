"""The readings of one device already stored, by PHD IG identifier: a small, bounded, durable set.

Thermometers, blood-pressure monitors, scales and spot-check oximeters without RACP push their
stored backlog as a burst of indications after every subscription; many send their whole memory
each time. The health-devices reference: de-duplicate by the PHD IG identifier. The identifier is
``gateway.fhir.observation.observation_identifier`` (device, type, value, unit, the *device's*
timestamp,
supplemental info), so only readings with a device timestamp can be recognised again; readings
without one carry their reception time and are never dropped here.

The set holds SHA-256 digests (no clinical value on disk in plaintext: the identifier contains
the value), the newest ``capacity`` of them, in a JSON file written atomically and fsynced - only
for readings the pipeline confirmed as durable (``add`` is called from ``committed``).
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from gateway.atomicfile import atomic_write
from gateway.errors import ConfigError, StoreError

DEFAULT_CAPACITY = 2048  # a device's memory holds a few hundred readings at most


def digest(identifier: str) -> str:
    return hashlib.sha256(identifier.encode()).hexdigest()[:32]


class SeenSet:
    """Digests of identifiers already durably stored, newest last, at most ``capacity``."""

    def __init__(self, path: Path, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = path
        self.capacity = capacity
        self._digests: OrderedDict[str, None] = OrderedDict()
        try:
            items = json.loads(path.read_text())["seen"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError("ble seen file", f"unreadable ({type(exc).__name__})",
                              path=str(path)) from exc
        if not isinstance(items, list) or not all(isinstance(d, str) for d in items):
            raise ConfigError("ble seen file", "unreadable (not a list of digests)",
                              path=str(path))
        for d in items[-capacity:]:
            self._digests[d] = None

    def __contains__(self, identifier: str) -> bool:
        return digest(identifier) in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, identifiers: Iterable[str]) -> bool:
        """Remember ``identifiers`` (durably). False when all were known already (no write)."""
        changed = False
        for identifier in identifiers:
            d = digest(identifier)
            if d in self._digests:
                self._digests.move_to_end(d)
                continue
            self._digests[d] = None
            changed = True
        while len(self._digests) > self.capacity:
            self._digests.popitem(last=False)
        if changed:
            self._save()
        return changed

    def _save(self) -> None:
        try:
            atomic_write(self.path, json.dumps({"seen": list(self._digests)}).encode(), mode=0o644)
        except OSError as exc:
            raise StoreError(f"cannot write the BLE seen file: {exc.strerror}",
                             path=str(self.path)) from exc
