"""Local control socket: how gatewayctl asks the running daemon what it knows.

One request per connection: a JSON object on one line (``{"command": "status"}``), answered with
one JSON line (``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``). The socket
lives in the runtime directory and is created mode 0660: only root, the service user and its group
may connect (systemd's RuntimeDirectory makes the folder).

Past the file mode, each command has an :class:`Authority`, checked against the peer's kernel
credentials (SO_PEERCRED, SO_PEERGROUPS; nothing the peer says about itself): read-only commands
(``status``, ``logs``, the bound devices, delivery tracking) for root, the service account and the
socket's group (the technicians); commands that change the lifecycle or seal a signed record only
for root. A command registered without one is root-only (fail closed). A refusal is an answer
with ``"code": "not-authorised"``, raised on the client as :class:`ControlRefusedError`.
Nothing clinical is ever served here: the answers are the same facts as the health reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import GatewayError

log = structlog.get_logger("gateway.control")

MAX_REQUEST_BYTES = 64 * 1024
# Supplementary groups read from the kernel per peer, at most: Python's getsockopt buffer is
# 1024 bytes. A peer in more groups (ERANGE) counts with its primary group only: fail closed.
MAX_PEER_GROUPS = 256
_SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13; Python names it in 3.13
Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]
NOT_AUTHORISED = "not-authorised"


class Authority(enum.Enum):
    READ = "read"  # root, the service account, members of the socket's group (technicians)
    ROOT = "root"  # root only: changes the lifecycle or seals a record the gateway signs


@dataclass(frozen=True, slots=True)
class Command:
    handler: Handler
    authority: Authority


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is at the other end, as the kernel recorded it at connect()."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups = {gid}
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * MAX_PEER_GROUPS)
        groups.update(struct.unpack(f"{len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    except OSError:
        pass  # no SO_PEERGROUPS (kernel < 4.13) or too many groups: the primary group counts
    return Peer(pid, uid, gid, frozenset(groups))


def allowed(peer: Peer, authority: Authority, *, service_uid: int, group_gid: int) -> bool:
    if peer.uid == 0:
        return True
    if authority is Authority.ROOT:
        return False
    return peer.uid == service_uid or group_gid in peer.groups


class ControlError(GatewayError):
    """The daemon could not be asked (not running, no permission, bad answer)."""

    hint = "is gatewayd running? are you root or in the service's group?"


class ControlRefusedError(ControlError):
    """The daemon refused the command to this user (it needs root)."""

    hint = "this command changes the router or signs a record: run it as root (sudo gatewayctl ...)"


class ControlServer:
    def __init__(
        self,
        path: Path,
        handlers: Mapping[str, Handler | Command],
        *,
        group_gid: int | None = None,
    ) -> None:
        self.path = path
        # A bare handler is root-only: a command nobody classified must not be open to all.
        self._commands = {
            name: h if isinstance(h, Command) else Command(h, Authority.ROOT)
            for name, h in handlers.items()
        }
        self._service_uid = os.geteuid()
        self._group_gid = os.getegid() if group_gid is None else group_gid
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale socket from a crashed run
        old_umask = os.umask(0o117)  # the socket is born 0660: no window with wider access
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o660)
        log.info("control.listening", socket=str(self.path))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            answer = await self._answer(line, peer)
        except (TimeoutError, ConnectionError, ValueError):
            # ValueError: asyncio's limit on one line (64 KiB) was exceeded
            answer = {"ok": False, "error": "request not received"}
        try:
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes, peer: Peer) -> dict[str, Any]:
        request = _parse(line)
        if isinstance(request, str):
            return {"ok": False, "error": request}
        name = request["command"]
        command = self._commands.get(name)
        if command is None:
            return {"ok": False, "error": f"unknown command {name[:64]!r}"}
        if not allowed(
            peer, command.authority, service_uid=self._service_uid, group_gid=self._group_gid
        ):
            log.warning("control.refused", command=name, uid=peer.uid, pid=peer.pid)
            return {
                "ok": False,
                "code": NOT_AUTHORISED,
                "error": f"{name} is for root only (you are uid {peer.uid})",
            }
        try:
            return {"ok": True, "result": await command.handler(request)}
        except GatewayError as exc:
            return {"ok": False, "error": exc.one_line()}


def _parse(line: bytes) -> dict[str, Any] | str:
    """The request, or what is wrong with it."""
    if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
        return "request too long or not one line"
    try:
        request = json.loads(line)
    except ValueError:
        return "request is not JSON"
    if not isinstance(request, dict) or not isinstance(request.get("command"), str):
        return 'request must be {"command": "..."}'
    return request


def ask(path: Path, command: str, timeout_s: float = 10.0, **args: Any) -> Any:
    """Client side (blocking, for the CLI): send one command, return its result."""
    request = json.dumps({"command": command, **args}).encode() + b"\n"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(str(path))
            sock.sendall(request)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise ControlError(
            f"no control socket at {path}: gatewayd is not running", unreachable=True
        ) from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {path}", hint="run as root or as a member of the service group"
        ) from None
    except OSError as exc:
        raise ControlError(
            f"cannot talk to gatewayd at {path}: {exc.strerror or exc}", unreachable=True
        ) from None
    try:
        answer = json.loads(data)
    except ValueError:
        raise ControlError("gatewayd sent an answer that is not JSON") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        message = answer.get("error") if isinstance(answer, dict) else "bad answer"
        if isinstance(answer, dict) and answer.get("code") == NOT_AUTHORISED:
            raise ControlRefusedError(f"gatewayd refused: {message}", command=command)
        raise ControlError(f"gatewayd: {message}")
    return answer.get("result")
