"""The readings of one device already stored, by PHD IG identifier: a small, bounded, durable set.

Thermometers, blood-pressure monitors, scales and spot-check oximeters without RACP push their
stored backlog as a burst of indications after every subscription; many send their whole memory
each time. The health-devices reference: de-duplicate by the PHD IG identifier. The identifier is
``gateway.fhir.observation.observation_identifier`` (device, type, value, unit, the *device's*
timestamp,
supplemental info), so only readings with a device timestamp can be recognised again; readings
without one carry their reception time and are never dropped here.

The set holds HMAC-SHA-256 digests under a per-episode key, the newest ``capacity`` of them, in a
JSON file written atomically and fsynced - only for readings the pipeline confirmed as durable
(``add`` is called from ``committed``). Not plain SHA-256: the identifier contains the value and
the device's time, a small space - a plain digest of "38.7 Cel at 07:00" was found by brute force
in seconds (issue 16). The key (32 random bytes, ``seen.key`` beside the files, 0600) is made
on first use in an episode; the equipment return erases the folder with it, so no digest left
in a flash block can be tested against guesses. A file of the older plain-digest format is
dropped on load: at worst a backlog is read again, and duplicates are allowed upstream (the
identifier de-duplicates them), losses are not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

from gateway.atomicfile import atomic_write
from gateway.errors import ConfigError, StoreError

DEFAULT_CAPACITY = 2048  # a device's memory holds a few hundred readings at most
KEY_FILE = "seen.key"
KEY_BYTES = 32
_FORMAT = 2  # 2: HMAC-SHA-256 under the episode key; 1 (no "format"): plain SHA-256, dropped


def digest(key: bytes, identifier: str) -> str:
    return hmac.new(key, identifier.encode(), hashlib.sha256).hexdigest()[:32]


def episode_key(directory: Path) -> bytes:
    """The seen-sets' HMAC key in ``directory``, created (0600, atomically) when missing."""
    path = directory / KEY_FILE
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = b""
    except OSError as exc:
        raise StoreError(f"cannot read the BLE seen key: {exc.strerror}", path=str(path)) from exc
    if len(key) == KEY_BYTES:
        return key
    key = secrets.token_bytes(KEY_BYTES)  # missing or damaged: a new one (old digests unmatched)
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(path, key, mode=0o600)
    except OSError as exc:
        raise StoreError(f"cannot write the BLE seen key: {exc.strerror}", path=str(path)) from exc
    return key


class SeenSet:
    """Digests of identifiers already durably stored, newest last, at most ``capacity``."""

    def __init__(self, path: Path, capacity: int = DEFAULT_CAPACITY) -> None:
        self.path = path
        self.capacity = capacity
        self._key = episode_key(path.parent)
        self._digests: OrderedDict[str, None] = OrderedDict()
        try:
            data = json.loads(path.read_text())
            items = data["seen"]
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError("ble seen file", f"unreadable ({type(exc).__name__})",
                              path=str(path)) from exc
        if not isinstance(items, list) or not all(isinstance(d, str) for d in items):
            raise ConfigError("ble seen file", "unreadable (not a list of digests)",
                              path=str(path))
        if data.get("format") != _FORMAT:
            self._save()  # plain digests on disk: overwrite them now, do not keep them
            return
        for d in items[-capacity:]:
            self._digests[d] = None

    def __contains__(self, identifier: str) -> bool:
        return digest(self._key, identifier) in self._digests

    def __len__(self) -> int:
        return len(self._digests)

    def add(self, identifiers: Iterable[str]) -> bool:
        """Remember ``identifiers`` (durably). False when all were known already (no write)."""
        changed = False
        for identifier in identifiers:
            d = digest(self._key, identifier)
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
            data = {"format": _FORMAT, "seen": list(self._digests)}
            atomic_write(self.path, json.dumps(data).encode(), mode=0o600)
        except OSError as exc:
            raise StoreError(f"cannot write the BLE seen file: {exc.strerror}",
                             path=str(self.path)) from exc
