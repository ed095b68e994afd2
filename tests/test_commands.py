"""The signed-command core (gateway/commands): the envelope's verification, the registry, the
ledger and the runner, with fakes for the daemon's parts (the real broker and daemon run in
tests/integration/test_commands_downlink.py and tests/provisioning/test_commands_episode.py)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.commands import envelope
from gateway.commands.envelope import (
    CLOCK_SKEW,
    MAX_ENVELOPE_BYTES,
    Command,
    CommandRefusedError,
    Reason,
)
from gateway.commands.ledger import Ledger
from gateway.commands.registry import Registry, no_args
from gateway.commands.runner import MAX_QUEUED, RATE_BURST, CommandRunner
from gateway.errors import GatewayError, StoreError

GW = "gw-unit-0001"
NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUB = KEY.public_key()


def command(counter: int = 1, name: str = "health.report", **kw: Any) -> Command:
    fields: dict[str, Any] = {
        "gateway_id": GW,
        "command_id": f"c-{counter}",
        "counter": counter,
        "issued_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
        "name": name,
        "args": {},
    } | kw
    return Command(**fields)


def refusal(raw: bytes, key: ed25519.Ed25519PublicKey | None = PUB, now: datetime = NOW) -> Reason:
    with pytest.raises(CommandRefusedError) as info:
        envelope.verify(raw, key, GW, now)
    return info.value.reason


def signed_payload(payload: Any, key: ed25519.Ed25519PrivateKey = KEY) -> bytes:
    data = json.dumps(payload).encode()
    return json.dumps(
        {
            "format": 1,
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(key.sign(data)).decode(),
        }
    ).encode()


# -- the envelope -------------------------------------------------------------------------------


def test_a_signed_command_verifies_to_exactly_what_was_signed() -> None:
    c = command(counter=42, name="config.set", args={"key": "log_level", "value": "info"})
    assert envelope.verify(envelope.sign(c, KEY), PUB, GW, NOW) == c


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (envelope.sign(command(), ed25519.Ed25519PrivateKey.generate()), Reason.BAD_SIGNATURE),
        (envelope.sign(command(gateway_id="gw-other"), KEY), Reason.WRONG_GATEWAY),
        (b"{}", Reason.MALFORMED),
        (b"\xff\xfe", Reason.MALFORMED),
        (b'{"format": 2, "payload": "", "signature": ""}', Reason.MALFORMED),
        (b" " * (MAX_ENVELOPE_BYTES + 1), Reason.TOO_LARGE),
        (signed_payload({"format": 1}), Reason.MALFORMED),  # signed, but not a command
        (signed_payload(command().payload_json() | {"counter": True}), Reason.MALFORMED),
        (signed_payload(command().payload_json() | {"extra": 1}), Reason.MALFORMED),
        (
            signed_payload(command().payload_json() | {"issued_at": "2026-12-07T10:00:00"}),
            Reason.MALFORMED,  # no UTC offset
        ),
    ],
)
def test_each_bad_envelope_is_refused_with_its_reason(raw: bytes, reason: Reason) -> None:
    assert refusal(raw) is reason


def test_validity_window_allows_the_clock_skew_and_no_more() -> None:
    c = envelope.sign(command(), KEY)
    assert envelope.verify(c, PUB, GW, NOW - CLOCK_SKEW)  # a router clock a little behind
    assert refusal(c, now=NOW - CLOCK_SKEW - timedelta(seconds=1)) is Reason.NOT_YET_VALID
    end = NOW + timedelta(hours=1)
    assert envelope.verify(c, PUB, GW, end + CLOCK_SKEW)
    assert refusal(c, now=end + CLOCK_SKEW + timedelta(seconds=1)) is Reason.EXPIRED


def test_a_command_living_longer_than_a_day_is_refused() -> None:
    c = command(expires_at=NOW + timedelta(hours=24, seconds=1))
    assert refusal(envelope.sign(c, KEY)) is Reason.TOO_LONG_LIVED


def test_without_a_pinned_key_every_command_is_refused() -> None:
    assert refusal(envelope.sign(command(), KEY), key=None) is Reason.NO_COMMAND_KEY


def test_the_counter_must_rise_above_the_last_accepted() -> None:
    envelope.check_counter(command(counter=8), 7)
    for counter in (7, 3):
        with pytest.raises(CommandRefusedError) as info:
            envelope.check_counter(command(counter=counter), 7)
        assert info.value.reason is Reason.REPLAYED


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_garbage_bytes_never_raise_anything_but_a_refusal(raw: bytes) -> None:
    with contextlib.suppress(CommandRefusedError):
        envelope.verify(raw, PUB, GW, NOW)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json, st.dictionaries(st.sampled_from(sorted(command().payload_json())), _json))
def test_any_signed_payload_is_a_command_or_a_refusal(
    garbage: Any, overrides: dict[str, Any]
) -> None:
    """A validly signed payload of any shape: never an exception other than our refusal."""
    for payload in (garbage, command().payload_json() | overrides):
        try:
            got = envelope.verify(signed_payload(payload), PUB, GW, NOW)
        except CommandRefusedError:
            continue
        assert isinstance(got, Command)


# -- the registry -------------------------------------------------------------------------------


async def _ok(_: Command, __: Any) -> Mapping[str, Any]:
    return {"ok": True}


def test_an_unknown_command_and_bad_arguments_are_refused_before_anything_runs() -> None:
    r = Registry()
    r.register("health.report", no_args, _ok)
    with pytest.raises(CommandRefusedError) as info:
        r.prepare(command(name="reboot.now"))
    assert info.value.reason is Reason.UNKNOWN_COMMAND
    with pytest.raises(CommandRefusedError) as info:
        r.prepare(command(args={"x": 1}))
    assert info.value.reason is Reason.BAD_ARGS
    assert info.value.command == command(args={"x": 1})  # the refusal names the command
    with pytest.raises(ValueError, match="twice"):
        r.register("health.report", no_args, _ok)


# -- the ledger ---------------------------------------------------------------------------------


def test_the_ledger_keeps_the_counter_and_unfinished_commands_across_a_reopen(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "commands.db")
    ledger.accept(5, "c-5", "rescan")
    ledger.finish(5, "done")
    ledger.accept(9, "c-9", "support.bundle")
    with pytest.raises(StoreError):
        ledger.accept(9, "c-9b", "rescan")  # never twice, never lower
    ledger.close()
    again = Ledger(tmp_path / "commands.db")
    assert again.last_counter() == 9
    assert [(u.counter, u.name) for u in again.unfinished()] == [(9, "support.bundle")]
    again.close()


def test_a_ledger_erased_with_the_episode_goes_on_from_the_kept_counter(tmp_path: Path) -> None:
    """The equipment return erases commands.db but keeps commands.counter: a command of the
    previous episode is still a replay for the next."""
    ledger = Ledger(tmp_path / "commands.db")
    ledger.accept(12, "c-12", "rescan")
    ledger.close()
    for p in tmp_path.glob("commands.db*"):
        p.unlink()
    assert (tmp_path / "commands.counter").read_text() == "12\n"
    assert Ledger(tmp_path / "commands.db").last_counter() == 12


# -- the runner ---------------------------------------------------------------------------------


class Harness:
    def __init__(self, tmp_path: Path, registry: Registry) -> None:
        self.sealed: list[dict[str, Any]] = []
        self.mono = 0.0
        self.ledger = Ledger(tmp_path / "commands.db")
        self.runner = CommandRunner(
            gateway_id=GW,
            episode="ep-1",
            key_text=base64.b64encode(
                PUB.public_bytes_raw()
            ).decode(),
            registry=registry,
            ledger=self.ledger,
            seal=self.seal,
            now=lambda: NOW,
            monotonic=lambda: self.mono,
        )

    async def seal(self, body: dict[str, Any]) -> int:
        self.sealed.append(body)
        return len(self.sealed)

    def outcomes(self) -> list[tuple[str, str | None]]:
        return [(b["outcome"], b["reason"]) for b in self.sealed if b["event"] == "command"]


async def _fails(_: Command, __: Any) -> Mapping[str, Any]:
    raise GatewayError("the modem is gone", hint="call support")


async def _crashes(_: Command, __: Any) -> Mapping[str, Any]:
    raise KeyError("patient-value-37.2")  # a bug's message must never reach a record


async def _half(_: Command, __: Any) -> Mapping[str, Any]:
    return {"interval_s": 0.5}  # a float: sealed as an exact decimal


def _registry() -> Registry:
    r = Registry()
    r.register("health.report", no_args, _ok)
    r.register("fails", no_args, _fails)
    r.register("crashes", no_args, _crashes)
    r.register("half", no_args, _half)
    return r


async def test_the_runner_seals_accepted_then_the_outcome_and_the_counter_first(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, _registry())
    assert await h.runner.handle(envelope.sign(command(1), KEY)) == "done"
    assert await h.runner.handle(envelope.sign(command(2, "fails"), KEY)) == "failed"
    assert await h.runner.handle(envelope.sign(command(3, "crashes"), KEY)) == "failed"
    assert await h.runner.handle(envelope.sign(command(4, "half"), KEY)) == "done"
    assert await h.runner.handle(envelope.sign(command(4), KEY)) == "refused"  # replay
    assert h.outcomes() == [
        ("accepted", None), ("done", None), ("accepted", None), ("failed", None),
        ("accepted", None), ("failed", None), ("accepted", None), ("done", None),
        ("refused", "replayed"),
    ]  # fmt: skip
    failed, crashed = h.sealed[3], h.sealed[5]
    assert failed["error"] == "GatewayError"
    assert failed["detail"] == "the modem is gone (call support)"
    assert (crashed["error"], crashed["detail"]) == ("KeyError", None)
    assert "37.2" not in json.dumps(h.sealed, default=str)
    assert str(h.sealed[7]["result"]["interval_s"]) == "0.5"
    assert h.ledger.last_counter() == 4
    assert h.ledger.unfinished() == []


async def test_a_flood_is_dropped_unread_and_reported_in_one_record(tmp_path: Path) -> None:
    """More than the queue holds, faster than the rate: the surplus is dropped and counted,
    never queued; one command-dropped record carries the count."""
    h = Harness(tmp_path, _registry())
    raw = envelope.sign(command(1), KEY)
    for _ in range(RATE_BURST + 5):
        h.runner.offer(raw)
    assert h.runner._queue.qsize() == MAX_QUEUED
    assert h.runner.dropped == RATE_BURST + 5 - MAX_QUEUED
    h.mono = 1000.0
    task = asyncio.create_task(h.runner.run())
    while not any(b["event"] == "command-dropped" for b in h.sealed):  # noqa: ASYNC110 - a fake
        await asyncio.sleep(0.01)
    task.cancel()
    dropped = next(b for b in h.sealed if b["event"] == "command-dropped")
    assert dropped["dropped"] == RATE_BURST + 5 - MAX_QUEUED
    # The queued copies of one command: it ran once, the others were replays.
    assert h.outcomes().count(("done", None)) == 1


async def test_a_command_accepted_before_a_crash_is_reported_interrupted(tmp_path: Path) -> None:
    h = Harness(tmp_path, _registry())
    h.ledger.accept(3, "c-3", "support.bundle")
    await h.runner.recover()
    assert [(b["outcome"], b["counter"]) for b in h.sealed] == [("interrupted", 3)]
    assert h.ledger.unfinished() == []
