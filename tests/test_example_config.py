"""The packaged gateway.toml.example documents every table and key the gateway reads.

It says so in its header, so a key added to the parser without a line in the example fails here
(read from packaging/build-deb.sh, which writes it; no package build needed).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from gateway.config import ble, power, serial, updates

ROOT = Path(__file__).parents[1]


def example() -> str:
    script = (ROOT / "packaging" / "build-deb.sh").read_text()
    match = re.search(r"gateway\.toml\.example\" <<'EOF'\n(.*?)\nEOF\n", script, flags=re.S)
    assert match, "the example heredoc moved"
    return match.group(1)


def documented() -> dict[str, set[str]]:
    """table -> keys shown (set or commented out) in the example."""
    found: dict[str, set[str]] = {}
    table = ""
    for line in example().splitlines():
        head = re.match(r"#?\s*\[\[?([a-z_]+)\]\]?\s*$", line)
        if head:
            table = head.group(1)
            found.setdefault(table, set())
            continue
        key = re.match(r"#?\s*([a-z_0-9]+) = ", line)
        if key and table:
            found[table].add(key.group(1))
    return found


def read_by_the_gateway() -> dict[str, set[str]]:
    tree = ast.parse((ROOT / "gateway" / "config" / "settings.py").read_text())
    tables: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_table":
            name = node.args[1]
            assert isinstance(name, ast.Constant)
            tables[str(name.value)] = {
                str(a.value) for a in node.args[3:] if isinstance(a, ast.Constant)
            }
        if isinstance(node, ast.Tuple):
            values = {getattr(e, "value", None) for e in node.elts}
            if {"kind", "address", "memory"} <= values:
                tables["sim_devices"] = {str(v) for v in values}
    tables["ble_devices"] = set(ble._KEYS)
    tables["serial_devices"] = set(serial._KEYS)
    tables["power"] = set(power.KEYS)
    tables["updates"] = set(updates.KEYS)
    return tables


def test_the_parser_reading_is_found() -> None:
    tables = read_by_the_gateway()
    assert {"gateway", "uplink", "outbox", "provisioning", "sim_devices"} <= set(tables)
    assert "est_url" in tables["provisioning"]


def test_every_table_and_key_the_gateway_reads_is_in_the_example() -> None:
    shown = documented()
    missing = {
        table: sorted(keys - shown.get(table, set()))
        for table, keys in read_by_the_gateway().items()
        if keys - shown.get(table, set())
    }
    assert missing == {}


def test_the_example_shows_no_key_the_gateway_does_not_read() -> None:
    known = read_by_the_gateway()
    extra = {
        table: sorted(keys - known.get(table, set()))
        for table, keys in documented().items()
        if keys - known.get(table, set())
    }
    assert extra == {}
