"""Print the field tier's last line from its junit report: ``field: N passed, M failed, arches=``.

    python field/summary.py field/report/junit.xml field/report/arches.txt

``arches`` lists only the architectures whose container actually booted. Skipped and xfailed
tests count as neither; their reasons are printed above by pytest (``-rs``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from xml.etree import ElementTree as ET


def counts(junit: Path) -> tuple[int, int]:
    if not junit.exists():
        return 0, 0
    root = ET.parse(junit).getroot()  # noqa: S314
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tests = failed = skipped = 0
    for suite in suites:
        tests += int(suite.get("tests", 0))
        failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
        skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed


def main(argv: list[str]) -> int:
    junit, arches_file = Path(argv[1]), Path(argv[2])
    passed, failed = counts(junit)
    arches = arches_file.read_text().strip() if arches_file.exists() else ""
    print(f"field: {passed} passed, {failed} failed, arches={arches}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
