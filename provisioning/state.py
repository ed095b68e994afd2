"""The provisioning lifecycle, persisted in ``<state_dir>/lifecycle.json``.

factory -> enrolled (identity issued) -> bound (episode active) -> returning -> factory.

Every change is a whole-file rewrite: write a temporary file, fsync it, rename it over the old one,
fsync the directory. A power cut leaves either the old or the new state, never half of one
(rename(2) is atomic within a file system). Read-modify-write cycles hold an ``flock`` so the
daemon (reporting events) and gatewayctl (changing state) never lose each other's update.

Each transition is logged (``provisioning.transition``: states, episode pseudonym, no clinical
data) and queued in ``events`` until the daemon has sealed it into the outbox, so it also reaches
the provider (see :mod:`provisioning.runtime`).
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from provisioning.errors import WrongStateError
from provisioning.safepath import SafeTree

log = structlog.get_logger("provisioning.state")

STATE_FILE = "lifecycle.json"
_LOCK_FILE = ".lifecycle.lock"
_FORMAT = 1


class Phase(enum.StrEnum):
    FACTORY = "factory"
    ENROLLED = "enrolled"
    BOUND = "bound"
    RETURNING = "returning"


# The only transitions there are (issue 6). enrolled -> enrolled and bound -> bound re-fetch a
# bundle (a rejected one, or a corrected device list) without a new identity.
_ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.FACTORY: frozenset({Phase.ENROLLED}),
    Phase.ENROLLED: frozenset({Phase.BOUND, Phase.RETURNING}),
    Phase.BOUND: frozenset({Phase.BOUND, Phase.RETURNING}),
    Phase.RETURNING: frozenset({Phase.FACTORY}),
}


@dataclass(frozen=True, slots=True)
class Lifecycle:
    phase: Phase = Phase.FACTORY
    generation: int = 0  # bumped by every transition; survives a return (the router's history)
    episode_id: str | None = None
    since: str | None = None  # ISO 8601 UTC of the last transition
    return_done: tuple[str, ...] = ()  # equipment-return steps completed (resume point)
    return_facts: dict[str, Any] = field(default_factory=dict)  # counts/times for the report
    events: tuple[dict[str, Any], ...] = ()  # transitions not yet sealed into the outbox

    def to_json(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "phase": self.phase.value,
            "generation": self.generation,
            "episode_id": self.episode_id,
            "since": self.since,
            "return_done": list(self.return_done),
            "return_facts": self.return_facts,
            "events": list(self.events),
        }

    @classmethod
    def from_json(cls, data: Any) -> Lifecycle:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError("not a lifecycle file of a known format")
        return cls(
            phase=Phase(data["phase"]),
            generation=int(data["generation"]),
            episode_id=data.get("episode_id"),
            since=data.get("since"),
            return_done=tuple(str(s) for s in data.get("return_done", [])),
            return_facts=dict(data.get("return_facts", {})),
            events=tuple(dict(e) for e in data.get("events", [])),
        )


def private_dir(path: Path) -> Path:
    """mkdir 0700 one level below the state directory, owned like it when root creates it.

    fchmod/fchown act on the opened directory, never on its name: a ``keys`` the service account
    replaced by a symlink is refused (provisioning.safepath), not followed.
    """
    SafeTree(path.parent).private_dir(path.name)
    return path


class LifecycleStore:
    """The persisted lifecycle of one gateway (one state directory)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE
        self._tree = SafeTree(state_dir)

    def load(self) -> Lifecycle:
        try:
            raw = self._tree.read_bytes(STATE_FILE)
        except FileNotFoundError:
            return Lifecycle()  # a router fresh from the factory has no file yet
        try:
            return Lifecycle.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            # Written only by atomic_write, so this is tampering or disk damage: never guess.
            raise WrongStateError(
                f"the lifecycle file {self.path} is damaged ({type(exc).__name__})",
                hint="call support: the router needs a depot reset",
            ) from None

    def _save(self, lc: Lifecycle) -> None:
        data = json.dumps(lc.to_json(), indent=1, sort_keys=True).encode()
        self._tree.atomic_write(STATE_FILE, data)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        # Created owned like the state directory (root's gatewayctl and the daemon share it);
        # a link, FIFO or foreign file planted under this name is refused, never fchown'ed.
        with self._tree.open_file(_LOCK_FILE, os.O_RDWR | os.O_CREAT) as fd:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield  # closing releases the lock

    def transition(
        self, to: Phase, *, episode_id: str | None = None, detail: dict[str, Any] | None = None
    ) -> Lifecycle:
        """Move to ``to`` (refused unless allowed), persist, log and queue the event upstream."""
        with self.locked():
            lc = self.load()
            if to not in _ALLOWED[lc.phase]:
                raise WrongStateError(
                    f"cannot go from '{lc.phase}' to '{to}'", current=lc.phase.value
                )
            now = datetime.now(UTC).isoformat()
            event = {
                "id": str(uuid.uuid4()),
                "event": "lifecycle-transition",
                "from": lc.phase.value,
                "to": to.value,
                "generation": lc.generation + 1,
                "episode": episode_id if episode_id is not None else lc.episode_id,
                "time": now,
                **(detail or {}),
            }
            new = Lifecycle(
                phase=to,
                generation=lc.generation + 1,
                episode_id=None if to is Phase.FACTORY else event["episode"],
                since=now,
                # A fresh return starts with an empty step list; factory forgets the last one.
                return_done=lc.return_done if to is Phase.RETURNING else (),
                return_facts=lc.return_facts if to is Phase.RETURNING else {},
                # Back in factory there is no identity left to seal with: the return report
                # (already delivered) stands for these, so the queue is dropped with the keys.
                events=() if to is Phase.FACTORY else (*lc.events, event),
            )
            self._save(new)
        log.info(
            "provisioning.transition",
            from_phase=lc.phase.value,
            to_phase=to.value,
            generation=new.generation,
            episode=new.episode_id,
        )
        return new

    def update(self, **changes: Any) -> Lifecycle:
        """Change the return progress or the event queue (never the phase: use transition)."""
        if "phase" in changes:
            raise ValueError("use transition() to change the phase")
        with self.locked():
            new = replace(self.load(), **changes)
            self._save(new)
        return new

    def step_done(self, step: str, **facts: Any) -> Lifecycle:
        with self.locked():
            lc = self.load()
            done = lc.return_done if step in lc.return_done else (*lc.return_done, step)
            new = replace(lc, return_done=done, return_facts={**lc.return_facts, **facts})
            self._save(new)
        log.info("provisioning.return_step", step=step, generation=new.generation)
        return new

    def events_reported(self, ids: set[str]) -> None:
        with self.locked():
            lc = self.load()
            self._save(replace(lc, events=tuple(e for e in lc.events if e.get("id") not in ids)))
