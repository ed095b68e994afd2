"""The simulated home's power-off (``[power] power_off = "rig-record"``): records the request.

gatewayd, after its clean stop on a low battery, asks this instead of systemd-logind, so tests,
the demo and training see that the router would have been switched off without switching off the
machine they run on. The request is the file :data:`REQUEST_NAME` in the state directory (one
JSON line per request with its time).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

REQUEST_NAME = "poweroff-requested.jsonl"


class RecordPowerOff:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / REQUEST_NAME

    async def request(self) -> None:
        await asyncio.to_thread(self._append)

    def _append(self) -> None:
        line = json.dumps({"requested_at": datetime.now(UTC).isoformat()}) + "\n"
        with self.path.open("a") as out:
            out.write(line)


def requests(state_dir: Path) -> list[dict[str, str]]:
    path = state_dir / REQUEST_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
