"""Local control socket: how gatewayctl asks the running daemon what it knows.

One request per connection: a JSON object on one line (``{"command": "status"}``), answered with
one JSON line (``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``). The socket
lives in the runtime directory and is created mode 0660: only root, the service user and its group
may connect (file permissions are the access control; systemd's RuntimeDirectory makes the folder).
Nothing clinical is ever served here: the answers are the same facts as the health reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from gateway.errors import GatewayError

log = structlog.get_logger("gateway.control")

MAX_REQUEST_BYTES = 64 * 1024
Handler = Callable[[Mapping[str, Any]], Awaitable[Any]]


class ControlError(GatewayError):
    """The daemon could not be asked (not running, no permission, bad answer)."""

    hint = "is gatewayd running? are you root or in the service's group?"


class ControlServer:
    def __init__(self, path: Path, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self._handlers = dict(handlers)
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
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            answer = await self._answer(line)
        except (TimeoutError, ConnectionError):
            answer = {"ok": False, "error": "request not received"}
        try:
            writer.write(json.dumps(answer, default=str).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > MAX_REQUEST_BYTES or not line.endswith(b"\n"):
            return {"ok": False, "error": "request too long or not one line"}
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'request must be {"command": "..."}'}
        handler = self._handlers.get(request["command"])
        if handler is None:
            return {"ok": False, "error": f"unknown command {request['command']!r}"}
        try:
            return {"ok": True, "result": await handler(request)}
        except GatewayError as exc:
            return {"ok": False, "error": exc.one_line()}


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
        raise ControlError(f"gatewayd: {message}")
    return answer.get("result")
