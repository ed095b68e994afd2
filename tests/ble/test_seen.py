"""``SeenSet``: bounded, durable, digests only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from drivers.ble.seen import KEY_FILE, SeenSet
from gateway.errors import ConfigError


def test_the_set_keeps_the_newest_identifiers_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    seen = SeenSet(path, capacity=3)
    assert seen.add(["a-37.2", "b", "c", "d"])
    assert not seen.add(["d"])  # nothing new: no write
    again = SeenSet(path, capacity=3)
    assert len(again) == 3
    assert "a-37.2" not in again  # the oldest fell out of the bound
    assert all(x in again for x in ("b", "c", "d"))
    assert "37.2" not in path.read_text()


def test_an_unreadable_file_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "seen.json"
    path.write_text('{"seen": [1, 2]}')
    with pytest.raises(ConfigError, match="ble seen file"):
        SeenSet(path)


def _identifier(temp_c: str, minute: int) -> str:
    # the shape of gateway.fhir.observation.observation_identifier: device, type, value, unit,
    # the device's own time
    return f"AA:BB:CC:00:00:01|8310|{temp_c}|Cel|2026-12-07T07:{minute:02d}:00+00:00"


def _brute_force(text: str) -> list[str]:
    """What an attacker with the file alone tries: every plausible value at every minute."""
    found = []
    for tenths in range(340, 430):
        value = f"{tenths / 10:.1f}"
        for minute in range(60):
            ident = _identifier(value, minute)
            if hashlib.sha256(ident.encode()).hexdigest()[:32] in text:
                found.append(ident)
    return found


def test_the_file_alone_does_not_give_the_value_away(tmp_path: Path) -> None:
    """Issue 16: with plain SHA-256 digests, 38.7 Cel and its time were recovered by guessing."""
    path = tmp_path / "ble" / "AABBCC000001.seen.json"
    SeenSet(path).add([_identifier("38.7", 17)])
    assert _brute_force(path.read_text()) == []
    key = path.parent / KEY_FILE
    assert key.stat().st_mode & 0o777 == 0o600
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_new_episode_key_recognises_nothing_of_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "ble" / "x.seen.json"
    SeenSet(path).add(["a"])
    assert "a" in SeenSet(path)  # same key: a restart still recognises it
    (path.parent / KEY_FILE).unlink()  # what the equipment return erases
    assert "a" not in SeenSet(path)


def test_an_old_plain_digest_file_is_dropped_not_kept(tmp_path: Path) -> None:
    path = tmp_path / "ble" / "x.seen.json"
    path.parent.mkdir()
    old = hashlib.sha256(_identifier("38.7", 17).encode()).hexdigest()[:32]
    path.write_text(json.dumps({"seen": [old]}))
    seen = SeenSet(path)
    assert len(seen) == 0  # read again at worst: a duplicate upstream, never a loss
    assert old not in path.read_text()
