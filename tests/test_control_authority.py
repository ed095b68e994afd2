"""Per-command authority on the control socket (issue 16, finding 3).

The peer's identity comes from the kernel (SO_PEERCRED / SO_PEERGROUPS): the test connects from
real processes running as another user, with and without the technicians' group. The socket file
is opened to everyone here (0666) so that only the daemon's own check decides.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.control import (
    Authority,
    Command,
    ControlRefusedError,
    ControlServer,
    Handler,
    Peer,
    ask,
)
from gateway.daemon.answers import ControlHandlers, NotReturningError
from gateway.daemon.reports import ReportRefusedError, checked_report
from gateway.errors import GatewayError

NOBODY = 65534
TECHNICIANS = 4242  # a gid standing for the technicians' group

CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(20)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\\n")
data = b""
while not data.endswith(b"\\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode())
"""


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="ctl-", dir="/tmp"))  # reachable by another user
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


async def _ok(_: Any) -> dict[str, bool]:
    return {"answered": True}


@contextlib.asynccontextmanager
async def _server(sock_dir: Path) -> AsyncIterator[Path]:
    path = sock_dir / "control.sock"
    handlers: dict[str, Command | Handler] = {
        "status": Command(_ok, Authority.READ),
        "provisioning.event": Command(_ok, Authority.ROOT),
        "unclassified": _ok,  # a bare handler: root only
    }
    srv = ControlServer(path, handlers, group_gid=TECHNICIANS)
    await srv.start()
    path.chmod(0o666)
    try:
        yield path
    finally:
        await srv.close()


async def _ask_as(path: Path, command: str, *, user: int | None, groups: list[int]) -> Any:
    python = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    kwargs: dict[str, Any] = {}
    if user is not None:
        kwargs = {"user": user, "group": user, "extra_groups": groups}
    proc = await asyncio.create_subprocess_exec(
        python,
        "-c",
        CLIENT,
        str(path),
        json.dumps({"command": command}),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **kwargs,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as other users")


@as_root
async def test_technicians_read_but_cannot_sign_or_change(sock_dir: Path) -> None:
    async with _server(sock_dir) as server:
        await _technician(server)


async def _technician(server: Path) -> None:
    tech = await _ask_as(server, "status", user=NOBODY, groups=[TECHNICIANS])
    assert tech == {"ok": True, "result": {"answered": True}}
    refused = await _ask_as(server, "provisioning.event", user=NOBODY, groups=[TECHNICIANS])
    assert refused["ok"] is False
    assert refused["code"] == "not-authorised"
    assert "root only" in refused["error"]
    bare = await _ask_as(server, "unclassified", user=NOBODY, groups=[TECHNICIANS])
    assert bare["code"] == "not-authorised"


@as_root
async def test_a_user_outside_the_group_may_not_even_read(sock_dir: Path) -> None:
    async with _server(sock_dir) as server:
        answer = await _ask_as(server, "status", user=NOBODY, groups=[])
    assert answer["code"] == "not-authorised"


@as_root
async def test_root_may_do_everything(sock_dir: Path) -> None:
    async with _server(sock_dir) as server:
        for command in ("status", "provisioning.event", "unclassified"):
            assert (await _ask_as(server, command, user=None, groups=[]))["ok"] is True


class _AsNobody(ControlServer):
    """A server that sees every peer as an unprivileged user outside the group."""

    async def _answer(self, line: bytes, peer: Peer) -> dict[str, Any]:
        return await super()._answer(line, Peer(peer.pid, NOBODY, NOBODY, frozenset()))


async def test_the_client_raises_a_typed_refusal(sock_dir: Path) -> None:
    """gatewayctl run by a technician gets ControlRefusedError, whose hint says: use root."""
    srv = _AsNobody(sock_dir / "c.sock", {"x": _ok}, group_gid=TECHNICIANS)
    await srv.start()
    try:
        with pytest.raises(ControlRefusedError) as err:
            await asyncio.to_thread(ask, sock_dir / "c.sock", "x")
    finally:
        await srv.close()
    assert "root" in (err.value.hint or "")


# -- what the daemon signs ----------------------------------------------------------------------

RETURN_REPORT: dict[str, Any] = {
    "event": "equipment-return",
    "version": 1,
    "report_id": str(uuid.uuid4()),
    "gateway_id": "gw-1",
    "episode": "ep-1",
    "started": "2026-12-07T07:00:00+00:00",
    "unsent_records": 0,
    "forced": False,
    "devices": 2,
    "bonds_removed": ["AA:BB:CC:00:00:01"],
    "to_erase": {"keys": ["signing.key", "tls.key"], "files": ["outbox.db", "identity"]},
    "time": "2026-12-07T07:10:00+00:00",
}


def test_the_defined_return_report_is_signed_with_the_daemons_identity_fields() -> None:
    body = checked_report(
        {**RETURN_REPORT, "gateway_id": "someone-else", "episode": "other-patient"},
        gateway_id="gw-1",
        episode="ep-1",
    )
    assert (body["gateway_id"], body["episode"]) == ("gw-1", "ep-1")


@pytest.mark.parametrize(
    "body",
    [
        {"event": "equipment-return", "version": 1, "forged": "anything"},
        {**RETURN_REPORT, "clinical": {"temp_c": 38.7}},  # a field the schema does not have
        {**RETURN_REPORT, "unsent_records": -1},
        {**RETURN_REPORT, "forced": "no"},
        {**RETURN_REPORT, "version": 2},
        {**RETURN_REPORT, "bonds_removed": ["x" * 500]},
        {**RETURN_REPORT, "time": "yesterday"},
        {"event": "firmware-approved", "version": 1},
        {"event": "lifecycle-transition", "version": 1, "to": "factory"},
        ["not", "an", "object"],
    ],
)
def test_anything_else_is_refused_not_signed(body: Any) -> None:
    with pytest.raises(ReportRefusedError):
        checked_report(body, gateway_id="gw-1", episode="ep-1")


class _Writer:
    def __init__(self) -> None:
        self.sealed: list[dict[str, Any]] = []

    async def submit_payload(self, kind: Any, body: dict[str, Any], lane: Any) -> int:
        self.sealed.append(body)
        return len(self.sealed)


def _handlers(*, returning: bool) -> tuple[ControlHandlers, _Writer, asyncio.Event]:
    writer, stop = _Writer(), asyncio.Event()
    h = ControlHandlers(
        writer=writer,  # type: ignore[arg-type]
        db=None,  # type: ignore[arg-type]
        outbox=None,  # type: ignore[arg-type]
        health=None,  # type: ignore[arg-type]
        links=None,  # type: ignore[arg-type]
        bound=None,  # type: ignore[arg-type]
        stop=stop,
        gateway_id="gw-1",
        episode="ep-1",
        returning=lambda: returning,
    )
    return h, writer, stop


async def test_a_forged_event_is_never_sealed() -> None:
    h, writer, _ = _handlers(returning=True)
    with pytest.raises(ReportRefusedError):
        await h.submit_event({"body": {"event": "equipment-return", "version": 1, "x": 1}})
    assert writer.sealed == []
    assert (await h.submit_event({"body": RETURN_REPORT}))["seq"] == 1


async def test_shutdown_and_intake_stop_only_during_a_return() -> None:
    """A stop that is not a return must not be the clean exit systemd leaves stopped."""
    h, _, stop = _handlers(returning=False)
    with pytest.raises(NotReturningError):
        await h.shutdown({})
    with pytest.raises(NotReturningError):
        await h.stop_intake({})
    await asyncio.sleep(0.3)  # longer than the shutdown's own delay (0.2 s)
    assert not stop.is_set()
    h, _, stop = _handlers(returning=True)
    assert await h.shutdown({}) == {"stopping": True}
    await asyncio.wait_for(stop.wait(), 10)


def test_the_command_table_gives_each_command_its_authority() -> None:
    h, _, _ = _handlers(returning=False)
    table = {name: c.authority for name, c in h.handlers(provisioned=True).items()}
    assert table == {
        "status": Authority.READ,
        "provisioning.devices": Authority.READ,
        "provisioning.pending": Authority.READ,
        "provisioning.event": Authority.ROOT,
        "return.stop_intake": Authority.ROOT,
        "return.shutdown": Authority.ROOT,
    }


@pytest.mark.parametrize("seqs", ["1", [1, "x"], [True], [-1], list(range(5000)), {"a": 1}])
async def test_pending_answers_bad_input_instead_of_dropping_the_connection(seqs: Any) -> None:
    h, _, _ = _handlers(returning=False)
    with pytest.raises(GatewayError, match="seqs"):
        await h.pending({"seqs": seqs})
