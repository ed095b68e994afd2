"""The persisted lifecycle: allowed transitions only, durable, events queued for upstream."""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from provisioning.errors import WrongStateError
from provisioning.state import LifecycleStore, Phase


def test_the_cycle_factory_enrolled_bound_returning_factory(tmp_path: Path) -> None:
    store = LifecycleStore(tmp_path)
    assert store.load().phase is Phase.FACTORY  # no file yet
    store.transition(Phase.ENROLLED)
    store.transition(Phase.BOUND, episode_id="ep-1")
    store.transition(Phase.RETURNING)
    store.step_done("drained", unsent_records=0)
    lc = LifecycleStore(tmp_path).load()  # a fresh reader: it is on disk
    assert (lc.phase, lc.episode_id, lc.return_done) == (Phase.RETURNING, "ep-1", ("drained",))
    assert [(e["from"], e["to"]) for e in lc.events] == [
        ("factory", "enrolled"),
        ("enrolled", "bound"),
        ("bound", "returning"),
    ]
    back = store.transition(Phase.FACTORY)
    assert (back.phase, back.episode_id, back.return_done, back.events) == (
        Phase.FACTORY,
        None,
        (),
        (),
    )
    assert back.generation == 4


@pytest.mark.parametrize(
    ("path", "to"),
    [((), Phase.BOUND), ((), Phase.RETURNING), ((Phase.ENROLLED,), Phase.FACTORY)],
)
def test_other_transitions_are_refused(tmp_path: Path, path: tuple[Phase, ...], to: Phase) -> None:
    store = LifecycleStore(tmp_path)
    for p in path:
        store.transition(p)
    with pytest.raises(WrongStateError) as err:
        store.transition(to)
    assert err.value.one_line().startswith("[P-STATE]")


def test_writes_leave_no_temporary_file_and_private_mode(tmp_path: Path) -> None:
    store = LifecycleStore(tmp_path)
    store.transition(Phase.ENROLLED)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lifecycle.lock", "lifecycle.json"]
    assert store.path.stat().st_mode & 0o777 == 0o600


def test_a_damaged_file_is_not_guessed_at(tmp_path: Path) -> None:
    (tmp_path / "lifecycle.json").write_text('{"format": 1, "phase": "bogus"}')
    with pytest.raises(WrongStateError, match="damaged"):
        LifecycleStore(tmp_path).load()


def test_transitions_are_logged_without_more_than_states_and_episode(tmp_path: Path) -> None:
    with capture_logs() as logs:
        LifecycleStore(tmp_path).transition(Phase.ENROLLED)
    (entry,) = [e for e in logs if e["event"] == "provisioning.transition"]
    assert set(entry) == {"event", "log_level", "from_phase", "to_phase", "generation", "episode"}


def test_reported_events_leave_the_queue(tmp_path: Path) -> None:
    store = LifecycleStore(tmp_path)
    store.transition(Phase.ENROLLED)
    store.transition(Phase.BOUND, episode_id="ep")
    first = store.load().events[0]["id"]
    store.events_reported({first})
    assert [e["to"] for e in store.load().events] == ["bound"]


def test_a_state_directory_that_does_not_exist_yet_is_created(tmp_path: Path) -> None:
    """The lock file is the first thing a transition touches: it creates the tree."""
    store = LifecycleStore(tmp_path / "var" / "lib" / "homecare-gateway")
    assert store.transition(Phase.ENROLLED).phase is Phase.ENROLLED
    assert store.path.exists()
