"""``SeenSet``: bounded, durable, digests only."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.ble.seen import SeenSet
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
