"""A cancellation swallowed inside a bleak call still stops the BLE driver's loop."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from drivers.ble.session import _raise_if_cancelled


async def test_a_swallowed_cancel_is_honoured_at_the_next_check() -> None:
    """Like bleak turning a cancel into a D-Bus error: the loop must not go on as if it failed."""
    went_on, started = asyncio.Event(), asyncio.Event()

    async def loop() -> None:
        _raise_if_cancelled()  # not cancelled yet: goes on
        started.set()
        with contextlib.suppress(asyncio.CancelledError):  # the library that swallows it
            await asyncio.sleep(10)
        _raise_if_cancelled()
        went_on.set()

    task = asyncio.create_task(loop())
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not went_on.is_set()

