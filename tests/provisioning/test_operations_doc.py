"""docs/operations.md matches the software: every error code and command it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.cli.main import COMMANDS
from provisioning.errors import ALL_ERRORS

DOC = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
SOURCES = (
    "".join(p.read_text() for p in (Path(__file__).parents[2] / "provisioning").glob("*.py"))
    + (Path(__file__).parents[2] / "gateway" / "cli" / "provisioning.py").read_text()
)


def test_every_error_code_is_explained_and_every_explained_code_exists() -> None:
    codes = {e.code for e in ALL_ERRORS}
    documented = set(re.findall(r"`(P-[A-Z-]+)`", DOC))
    assert documented == codes


def test_every_gatewayctl_command_in_the_guide_exists() -> None:
    used = set(re.findall(r"gatewayctl ([a-z-]+)", DOC))
    assert used <= set(COMMANDS), used - set(COMMANDS)


def test_quoted_messages_are_the_ones_the_software_prints() -> None:
    # Each message start in the table (split on " / ") appears in the code that raises it.
    rows = re.findall(r"^\| `P-[A-Z-]+` +\| ([^|]+)\|", DOC, flags=re.M)
    assert len(rows) == len(ALL_ERRORS)
    for row in rows:
        for fragment in row.strip().split(" / "):
            words = fragment.split(" ... ")[0].replace(" X, this is router Y", "").strip()
            words = re.sub(r"^N of M ", "", words)
            assert words, row
            assert words in SOURCES, words
