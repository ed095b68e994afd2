"""The updater's durable state: one JSON file, replaced atomically (write, fsync, rename, fsync).

``phase`` says where a power cut found the updater, and recovery (updater.recover) resumes
from it: ``installing`` (the new tree may be half unpacked: drop the .partial, nothing changed),
``switching`` (``current`` is old or new, both whole: finish the switch), ``trial`` (the new
version runs under the health gate: go on gating, or roll back after too many reboots),
``reverting`` (finish switching back). ``outcomes`` keeps the last results for the daemon to
seal as event records upstream (gateway/updates/beacon.py); the file holds no secrets and is
world-readable so the sandboxed daemon can read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.atomicfile import atomic_write

Phase = Literal["idle", "installing", "switching", "trial", "reverting"]
PHASES: tuple[Phase, ...] = ("idle", "installing", "switching", "trial", "reverting")
STATE_FORMAT = 1
MAX_OUTCOMES = 16  # enough for the daemon to catch up after days away; the oldest drop off
MAX_STATE_BYTES = 64 * 1024
MAX_REASON = 300


@dataclass(slots=True)
class UpdateState:
    phase: Phase = "idle"
    from_version: str | None = None
    to_version: str | None = None
    trial_boot_id: str | None = None
    trial_started_mono: float | None = None
    trial_boots: int = 0
    switch_gap_s: float | None = None
    next_n: int = 1
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "phase": self.phase,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "trial": {
                "boot_id": self.trial_boot_id,
                "started_mono": self.trial_started_mono,
                "boots": self.trial_boots,
            },
            "switch_gap_s": self.switch_gap_s,
            "next_n": self.next_n,
            "outcomes": self.outcomes[-MAX_OUTCOMES:],
        }

    @classmethod
    def from_json(cls, d: Any) -> UpdateState:
        if not isinstance(d, dict) or d.get("format") != STATE_FORMAT:
            raise ValueError("not an updater state file of format 1")
        phase = d["phase"]
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}")
        trial = d.get("trial") or {}
        return cls(
            phase=phase,
            from_version=d.get("from_version"),
            to_version=d.get("to_version"),
            trial_boot_id=trial.get("boot_id"),
            trial_started_mono=trial.get("started_mono"),
            trial_boots=int(trial.get("boots", 0)),
            switch_gap_s=d.get("switch_gap_s"),
            next_n=int(d.get("next_n", 1)),
            outcomes=list(d.get("outcomes", [])),
        )

    def add_outcome(
        self,
        event: str,
        *,
        from_version: str | None,
        to_version: str | None,
        reason: str,
        time: str,
        gap_s: float | None = None,
    ) -> dict[str, Any]:
        outcome = {
            "n": self.next_n,
            "event": event,
            "from_version": from_version,
            "to_version": to_version,
            "reason": reason[:MAX_REASON],
            "time": time,
            "switch_gap_s": None if gap_s is None else round(gap_s, 2),
        }
        self.next_n += 1
        self.outcomes = [*self.outcomes, outcome][-MAX_OUTCOMES:]
        return outcome


def load_state(path: Path) -> UpdateState:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return UpdateState()
    if len(raw) > MAX_STATE_BYTES:
        raise ValueError("updater state file is too large")
    return UpdateState.from_json(json.loads(raw))


def save_state(path: Path, state: UpdateState) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    atomic_write(path, json.dumps(state.to_json(), indent=1).encode() + b"\n", mode=0o644)
