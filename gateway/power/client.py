"""The I/O half of the NUT client: one ``LIST VAR`` query to upsd over TCP (asyncio).

A connection per query: upsd is local (or on the LAN), a query every few seconds costs nothing,
and nothing is left half-open when upsd restarts. Every step is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import contextlib

from gateway.power import nut


async def query(host: str, port: int, ups: str, timeout_s: float) -> nut.UpsReading:
    """The UPS's reading; UpsUnreachableError or UpsProtocolError (never anything else)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _query(host, port, ups)
    except TimeoutError:
        raise nut.UpsUnreachableError(
            f"upsd at {host}:{port} did not answer within {timeout_s:g} s"
        ) from None
    except OSError as exc:
        raise nut.UpsUnreachableError(
            f"cannot reach upsd at {host}:{port}: {exc.strerror or exc}"
        ) from None


async def _query(host: str, port: int, ups: str) -> nut.UpsReading:
    reader, writer = await asyncio.open_connection(host, port, limit=nut.MAX_LINE_BYTES)
    try:
        writer.write(nut.list_var_request(ups))
        await writer.drain()
        reply = nut.ListVarReader(ups)
        for _ in range(nut.MAX_VARS + 2):  # BEGIN, the variables, END
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.IncompleteReadError:
                raise nut.UpsUnreachableError(
                    f"upsd at {host}:{port} closed the connection"
                ) from None
            except asyncio.LimitOverrunError:
                raise nut.UpsProtocolError("upsd sent an over-long line") from None
            reply.feed_line(line)
            if reply.done:
                break
        else:
            raise nut.UpsProtocolError(f"upsd sent more than {nut.MAX_VARS} variables")
        writer.write(b"LOGOUT\n")
        return nut.reading_of(reply.variables)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
