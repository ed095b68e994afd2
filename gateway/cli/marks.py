"""What a table cell or a word in prose means to the person reading: a problem, a warning,
good news or a muted detail. Both renderers ask here (gateway/cli/output.py for plain text and
gateway/cli/output_rich.py on a terminal); pure, no rich.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

Mark = Literal["problem", "warn", "good", "muted"]

# Whole cells that mean "look here" (verdicts, device and port states, yes/no facts). Device
# states come from drivers/ble/session.py and drivers/serial/port_errors.py; "out-of-range" is
# a BLE health device's normal rest between measurements, not a problem.
PROBLEM_CELLS = frozenset(
    {
        "FAIL", "FAILED", "SILENT", "MISSING", "NO",
        "pairing-failed", "failing", "unplugged", "busy", "no-permission", "bad-settings",
        "error", "critical",
    }
)  # fmt: skip
WARN_CELLS = frozenset({"WARN", "warning", "backoff", "connecting"})
GOOD_CELLS = frozenset({"PASS", "PASSED", "ok", "yes", "connected", "streaming", "bound", "info"})
MUTED_CELLS = frozenset({"SKIP", "-", "never", "neighbour", "not configured", "debug"})

# The same facts inside prose (gatewayctl status, the return summary).
_PROBLEM_TEXT = re.compile(
    r"\bNOT [A-Za-z-]+"
    r"|\b(?:FAIL|FAILED|SILENT|MISSING|NO)\b"
    r"|\b(?:pairing-failed|failing|unplugged|no-permission|bad-settings)\b"
    r"|\b(?:ON BATTERY|BATTERY LOW)\b"  # the power line (gateway/cli/main.py power_text)
    r"|last error: [^;\n]*"
    r"|(?m:^alarms +(?!none$)(?P<alarms>\S.*)$)"
)
# A label column: one or two words at the start of a line, then two spaces or more.
_LABEL = re.compile(r"(?m)^[a-z][\w-]*(?: [\w-]+)?(?= {2,}\S)")


def mark(text: str) -> Mark | None:
    """How a whole table cell should stand out, if at all."""
    if text in PROBLEM_CELLS or text.startswith("NOT "):
        return "problem"
    if text in WARN_CELLS:
        return "warn"
    if text in GOOD_CELLS:
        return "good"
    if text in MUTED_CELLS:
        return "muted"
    return None


def text_spans(text: str) -> list[tuple[int, int, Mark | Literal["label"]]]:
    """(start, end, kind) of the labels and the problem words in prose, in order."""
    found: list[tuple[int, int, Mark | Literal["label"]]] = [
        (m.start(), m.end(), "label") for m in _LABEL.finditer(text)
    ]
    for m in _PROBLEM_TEXT.finditer(text):
        start, end = m.span("alarms") if m.group("alarms") else m.span()
        found.append((start, end, "problem"))
    return sorted(found)


def find_block(lines: Sequence[str], block: Sequence[str]) -> tuple[int, str] | None:
    """Where ``block`` appears in ``lines`` as consecutive lines, all with the same indent:
    (index of its first line, the indent); None when it does not."""
    if not block:
        return None
    for i, line in enumerate(lines[: len(lines) - len(block) + 1]):
        indent = line[: len(line) - len(line.lstrip(" "))]
        if all(lines[i + k] == indent + row for k, row in enumerate(block)):
            return i, indent
    return None
