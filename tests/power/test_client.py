"""The asyncio half of the NUT client against a scripted upsd on loopback: a reply becomes a
reading, and every way upsd can fail (refused, silent, closed mid-list, garbage) is a typed
UpsError within the caller's timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from gateway.power import client, nut
from tests.power.test_nut import REPLY_ON_MAINS

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def with_server(serve: Serve, ups: str = "ups", timeout_s: float = 2.0) -> nut.UpsReading:
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        return await client.query("127.0.0.1", port, ups, timeout_s)
    finally:
        server.close()
        await server.wait_closed()


def answering(reply: bytes) -> Serve:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readline()
        assert request == b"LIST VAR ups\n"
        writer.write(reply)
        await writer.drain()
        await reader.read()  # LOGOUT, then the client closes
        writer.close()

    return serve


def test_a_reply_becomes_a_reading() -> None:
    r = asyncio.run(with_server(answering(REPLY_ON_MAINS)))
    assert r.on_battery is False
    assert r.test_result == "Done and passed"


def test_an_err_reply_is_a_protocol_error_with_its_code() -> None:
    with pytest.raises(nut.UpsProtocolError) as err:
        asyncio.run(with_server(answering(b"ERR DATA-STALE\n")))
    assert err.value.code == "DATA-STALE"


def test_a_connection_closed_mid_list_is_unreachable() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.write(REPLY_ON_MAINS[:200])
        writer.close()

    with pytest.raises(nut.UpsUnreachableError, match="closed"):
        asyncio.run(with_server(hang_up))


def test_an_over_long_line_is_a_protocol_error() -> None:
    with pytest.raises(nut.UpsProtocolError, match="over-long"):
        asyncio.run(with_server(answering(b"BEGIN LIST VAR ups\n" + b"V" * 4000 + b"\n")))


def test_a_silent_upsd_times_out_within_the_callers_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    started = time.monotonic()
    with pytest.raises(nut.UpsUnreachableError, match="did not answer"):
        asyncio.run(with_server(silent, timeout_s=0.3))
    assert time.monotonic() - started < 5


def test_nobody_listening_is_unreachable() -> None:
    async def refused() -> None:
        server = await asyncio.start_server(answering(b""), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await client.query("127.0.0.1", port, "ups", 2.0)

    with pytest.raises(nut.UpsUnreachableError, match="cannot reach upsd"):
        asyncio.run(refused())
