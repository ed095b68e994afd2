"""Progress of long operations, as a seam: library code reports it, the CLI edge shows it.

Library functions (equipment return, install-check, the support bundle, the BLE scan, the uplink
test) take a ``Progress`` and call it; they never import rich. gatewayctl passes a live display
when stderr is a terminal, a line per task otherwise, and nothing with ``--json``
(gateway/cli/output.py decides). Labels name steps, devices and counts of records: never a value.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, TextIO


class Progress(Protocol):
    def begin(self, label: str, total: float | None = None, *, unit: str = "") -> int:
        """Show a new task (``total`` None: its length is unknown); returns its handle."""
        ...

    def update(
        self, task: int, done: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        """``done`` of ``total`` so far; a new ``label`` replaces the task's."""
        ...

    def end(self, task: int, outcome: str = "done") -> None:
        """The task is over, finished or given up: ``outcome`` says which, in a few words."""
        ...


def count_text(done: float, total: float | None, unit: str) -> str:
    """``12/40 records``; seconds and other fractions with one decimal."""
    def num(x: float) -> str:
        return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"

    text = num(done) if total is None else f"{num(done)}/{num(total)}"
    return f"{text} {unit}".rstrip()


class NoProgress:
    """Shows nothing (``--json``, and the default of every library function)."""

    def __init__(self) -> None:
        self._next = 0

    def begin(self, label: str, total: float | None = None, *, unit: str = "") -> int:
        self._next += 1
        return self._next

    def update(
        self, task: int, done: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        return

    def end(self, task: int, outcome: str = "done") -> None:
        return


@dataclass(slots=True)
class _Line:
    label: str
    total: float | None
    unit: str
    done: float = 0.0
    printed_at: float = 0.0
    printed_done: float = 0.0


class LineProgress:
    """One plain line when a task begins and when it ends, and at most one line every
    ``every_s`` seconds while it moves: readable in a pipe, a log file or a ticket (no ``\\r``,
    no cursor movement). Writes to ``stream``, or to the current ``sys.stderr``."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._every_s = every_s
        self._clock = clock
        self._tasks: dict[int, _Line] = {}

    def _write(self, line: str) -> None:
        stream = self._stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    def begin(self, label: str, total: float | None = None, *, unit: str = "") -> int:
        task = len(self._tasks) + 1
        self._tasks[task] = _Line(label, total, unit, printed_at=self._clock())
        self._write(f"{label} ...")
        return task

    def update(
        self, task: int, done: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        t = self._tasks[task]
        t.done = done
        t.total = t.total if total is None else total
        now = self._clock()
        if label is not None and label != t.label:
            t.label, t.printed_at, t.printed_done = label, now, done
            self._write(f"{label} ...")
        elif done != t.printed_done and now - t.printed_at >= self._every_s:
            t.printed_at, t.printed_done = now, done
            self._write(f"{t.label}: {count_text(done, t.total, t.unit)}")

    def end(self, task: int, outcome: str = "done") -> None:
        t = self._tasks[task]
        counted = f" ({count_text(t.done, t.total, t.unit)})" if t.unit else ""
        self._write(f"{t.label}: {outcome}{counted}")


@dataclass
class FakeProgress:
    """Records what a library function reported, for tests: ``events`` in order, and each
    task's last state in ``tasks`` (label, done, total, outcome or None while it runs)."""

    events: list[tuple[object, ...]] = field(default_factory=list)
    tasks: dict[int, dict[str, object]] = field(default_factory=dict)

    def begin(self, label: str, total: float | None = None, *, unit: str = "") -> int:
        task = len(self.tasks) + 1
        self.tasks[task] = {
            "label": label, "done": 0.0, "total": total, "unit": unit, "outcome": None
        }
        self.events.append(("begin", label, total))
        return task

    def update(
        self, task: int, done: float, *, total: float | None = None, label: str | None = None
    ) -> None:
        t = self.tasks[task]
        assert t["outcome"] is None, f"update of task {t['label']!r} after it ended"
        t["done"] = done
        if total is not None:
            t["total"] = total
        if label is not None:
            t["label"] = label
        self.events.append(("update", t["label"], done, t["total"]))

    def end(self, task: int, outcome: str = "done") -> None:
        t = self.tasks[task]
        assert t["outcome"] is None, f"task {t['label']!r} ended twice"
        t["outcome"] = outcome
        self.events.append(("end", t["label"], outcome))

    def labels(self) -> list[str]:
        """Every label shown, in order (begin and update), without repeats."""
        seen: list[str] = []
        for event in self.events:
            label = str(event[1])
            if event[0] != "end" and label not in seen:
                seen.append(label)
        return seen


NO_PROGRESS: Progress = NoProgress()
