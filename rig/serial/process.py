"""A simulated device in its own process, for tests that pull the plug with ``kill -9``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Self

_ROOT = Path(__file__).resolve().parents[2]  # the checkout that holds the rig package


class SimProcess:
    """``python -m rig.serial KIND --link LINK ARGS``; events are its JSON lines."""

    def __init__(self, kind: str, link: Path, args: Sequence[str] = ()) -> None:
        self.argv = [sys.executable, "-m", "rig.serial", kind, "--link", str(link), *args]
        self.events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 10.0) -> Self:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p
            ),
        }
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        stdout = self._proc.stdout
        if stdout is None:  # cannot happen with stdout=PIPE; keeps the type checker honest
            raise RuntimeError("simulator has no stdout pipe")
        threading.Thread(target=self._read, args=(stdout,), daemon=True).start()
        if self.wait_for(lambda e: e.get("event") == "ready", timeout_s) is None:
            self.kill()
            raise RuntimeError(f"simulator did not start: {' '.join(self.argv)}")
        return self

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout_s: float = 5.0
    ) -> dict[str, Any] | None:
        """The first event (so far or to come) that matches, or None after ``timeout_s``."""
        with self._cond:
            self._cond.wait_for(lambda: any(match(e) for e in self.events), timeout_s)
            return next((e for e in self.events if match(e)), None)

    def command(self, line: str) -> None:
        if self._proc is None or self._proc.stdin is None:
            raise RuntimeError("simulator is not running")
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def kill(self) -> None:
        """SIGKILL: the device dies at once, its pty with it (the link is left dangling)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait(timeout=5.0)

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            self.command("quit")
            self._proc.wait(timeout=5.0)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
