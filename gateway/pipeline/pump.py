"""The pump: one driver's readings into the outbox, confirmed back to the driver once durable.

One pump task per driver (named ``driver.<name>``). The pump is also where the watchdog learns
whether a driver loop is turning, handing a reading over, or paused on purpose by us
(:class:`gateway.pipeline.watchdog.PumpMark`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from gateway.model import Measurement
from gateway.pipeline.ingest import IngestWriter, Lane, QuotaExceededError
from gateway.pipeline.seams import Driver
from gateway.pipeline.watchdog import LoopMark, PumpMark


def driver_mark(driver: object) -> LoopMark | None:
    """The driver's own loop mark (``progress``), if it keeps one."""
    mark = getattr(driver, "progress", None)
    return mark if isinstance(mark, LoopMark) else None


async def pump(
    driver: Driver,
    writer: IngestWriter,
    lane: Lane | Callable[[Measurement], Lane] = Lane.SPOT,
    on_durable: Callable[[Measurement, int], None] | None = None,
    mark: PumpMark | None = None,
) -> None:
    """Move one driver's readings into the outbox; confirm to the driver in order once durable.

    ``lane`` is the driver's lane, or a function choosing it per reading (a BLE oximeter's
    spot-checks and its continuous values, a serial oximeter's events); a reading the device
    flagged as an alarm (``Measurement.alarm``) goes on Lane.ALARM whatever the driver's lane.
    ``on_durable(reading, record seq)`` lets install-check follow a device's reading to the
    provider's acknowledgement (the record leaves the outbox only on PUBACK). ``mark`` tells the
    watchdog what the pump is doing."""
    base: Callable[[Measurement], Lane] = lane if callable(lane) else (lambda _m: lane)

    def lane_of(m: Measurement) -> Lane:
        # An alarm condition the device raised never waits for a stream chunk or a spot batch.
        return Lane.ALARM if m.alarm else base(m)

    mark = mark or PumpMark(driver_mark(driver))
    confirmations: asyncio.Queue[tuple[asyncio.Future[int], Measurement]] = asyncio.Queue(
        maxsize=1024
    )

    async def confirm() -> None:
        while True:
            fut, m = await confirmations.get()
            try:
                seq = await fut
                if on_durable is not None:
                    on_durable(m, seq)
                with mark.committing():
                    await driver.committed([m])
            finally:
                confirmations.task_done()

    async def refused(m: Measurement) -> None:
        # Not stored: the device keeps it (no confirmation); a device with stored records is
        # told to offer it again, and we wait for space rather than refuse reading after reading.
        hook = getattr(driver, "refused", None)
        if hook is not None:
            with mark.committing():
                await hook([m])
        with mark.paused("outbox quota reached"):
            await writer.wait_for_space(lane_of(m))

    confirmer = asyncio.create_task(confirm(), name=f"driver.{driver.name}.confirm")
    readings = aiter(driver.measurements())
    try:
        while True:
            with mark.pulling():
                try:
                    m = await anext(readings)
                except StopAsyncIteration:
                    break
            try:
                fut = await writer.enqueue([m], lane_of(m))
            except QuotaExceededError:
                await refused(m)
                continue
            await confirmations.put((fut, m))
        await confirmations.join()  # a bounded driver ended: wait for its last confirmations
    finally:
        confirmer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await confirmer
