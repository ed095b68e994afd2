"""A hostile serial device: bytes no protocol expects, on a pty, for the gateway's robustness tests.

``HostileLine`` plays a list of episodes, each for a while, over and over:

- ``random``: random bytes at ``rate_bps`` (framing characters included, by chance);
- ``endless-line``: text that never ends (no CR, LF or ETX; after one STX for an ASTM port);
- ``big-frame``: one ``frame_bytes`` frame (STX, 10 MB of text, ETX, checksum, CR LF);
- ``control-text``: lines full of ESC sequences and other control characters.

It never reads what the gateway answers. Bytes that do not fit in the pty (nobody reading) are
dropped as on a real line; ``written`` counts what went out, per episode.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rig.serial.pty_device import PtyDevice

STX, ETX = 0x02, 0x03
ESCAPES = b"\x1b[2J\x1b]0;owned\x07\x1b[31m\x9b1m\x00\x08\x7f"
EPISODES = ("random", "endless-line", "big-frame", "control-text")


@dataclass(frozen=True, slots=True)
class Episode:
    kind: str  # one of EPISODES
    seconds: float
    rate_bps: int | None = None  # bytes per second offered (default: the line's)


class HostileLine(PtyDevice):
    tick_s = 0.002

    def __init__(
        self,
        link: Path,
        episodes: Sequence[Episode],
        *,
        rate_bps: int = 100_000,  # ten times a 115200-baud line: more than any cable carries
        frame_bytes: int = 10 * 1024 * 1024,
        seed: int = 15,
        name: str = "hostile",
    ) -> None:
        super().__init__(link, name=name)
        for e in episodes:
            if e.kind not in EPISODES:
                raise ValueError(f"unknown hostile episode {e.kind!r}")
        self.episodes = tuple(episodes)
        self.rate_bps = rate_bps
        self.frame_bytes = frame_bytes
        self.written: dict[str, int] = {e.kind: 0 for e in episodes}
        self.rounds = 0  # complete passes through the episodes
        self._rng = random.Random(seed)  # noqa: S311 - test traffic, not cryptography
        self._index = 0
        self._since = time.monotonic()
        self._last = self._since
        self._frame_left = 0  # bytes of the big frame still to send
        self._started_line = False

    @property
    def episode(self) -> Episode:
        return self.episodes[self._index]

    def on_tick(self, now: float) -> None:
        if now - self._since >= self.episode.seconds:
            self._index = (self._index + 1) % len(self.episodes)
            self.rounds += self._index == 0
            self._since, self._frame_left, self._started_line = now, 0, False
        rate = self.episode.rate_bps or self.rate_bps
        budget = int(rate * min(0.05, now - self._last))
        self._last = now
        if budget <= 0 or self._master is None:
            return
        data = self._make(self.episode.kind, budget)
        before = self.dropped_bytes
        self.send(data)
        self.written[self.episode.kind] += len(data) - (self.dropped_bytes - before)

    def _make(self, kind: str, budget: int) -> bytes:
        if kind == "random":
            return os.urandom(budget)
        if kind == "endless-line":
            head = b"" if self._started_line else bytes([STX])
            self._started_line = True
            return head + b"A" * budget
        if kind == "control-text":
            return (ESCAPES + b"H|\\^&|||" + ESCAPES * 4 + b"\r\n") * max(1, budget // 100)
        # big-frame: one frame per episode, sent as fast as the line takes it
        if not self._started_line:
            self._started_line, self._frame_left = True, self.frame_bytes
            return bytes([STX]) + b"1" + b"R" * (budget - 2)
        if self._frame_left <= 0:
            return b""
        chunk = min(budget, self._frame_left)
        self._frame_left -= chunk
        return b"R" * chunk + (bytes([ETX]) + b"00\r\n" if self._frame_left <= 0 else b"")
