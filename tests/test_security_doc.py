"""docs/security.md names, for each control, tests that exist (so the case cannot drift)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "security.md").read_text()


def _references() -> list[tuple[str, str | None]]:
    """(test file, test name or prefix*) for every `file.py::name` and `file.py` cited; a
    `::name` right after a cited file refers to that file."""
    refs: list[tuple[str, str | None]] = []
    for cell in re.findall(r"`([^`]+)`", DOC):
        m = re.fullmatch(r"((?:[a-z_]+/)*test_[a-z0-9_]+\.py)(?:::([A-Za-z0-9_*]+))?", cell)
        if m:
            refs.append((m.group(1), m.group(2)))
        elif re.fullmatch(r"::[A-Za-z0-9_*]+", cell) and refs:
            refs.append((refs[-1][0], cell[2:]))
    return refs


def test_every_cited_test_exists() -> None:
    refs = _references()
    assert len(refs) > 40
    for path, name in refs:
        source = REPO / "tests" / path
        assert source.is_file(), path
        if name is None:
            continue
        pattern = re.escape(name).replace(r"\*", r"[A-Za-z0-9_]*")
        found = re.search(rf"^(async )?def {pattern}\(", source.read_text(), flags=re.M)
        assert found, f"{path}::{name}"


def test_every_attacker_of_the_brief_is_named() -> None:
    for who in ("household", "home LAN", "local user", "neighbour's BLE device",
                "malicious device", "stolen or returned router", "impersonated provider",
                "replay"):  # fmt: skip
        assert f"**{who}**" in DOC, who
    assert "## 5. Residual risks" in DOC
