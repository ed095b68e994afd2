"""The pump: one driver's readings into the outbox, confirmed back to the driver once durable.

One pump task per driver (named ``driver.<name>``). The pump is also where the watchdog learns
whether a driver loop is turning, handing a reading over, or paused on purpose by us
(:class:`gateway.pipeline.watchdog.PumpMark`).

The pump tells the two sides' failures apart: an exception raised by the driver (its generator,
its ``committed`` / ``refused`` hook) becomes
:class:`~gateway.pipeline.supervise.DriverFailedError`, which its supervisor answers by
restarting that driver; one raised by the writer or the outbox goes through unchanged and stops
the daemon (gateway/pipeline/supervise.py says why).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gateway.model import Measurement
from gateway.pipeline.ingest import IngestWriter, Lane, QuotaExceededError
from gateway.pipeline.seams import Driver
from gateway.pipeline.supervise import DriverFailedError
from gateway.pipeline.watchdog import LoopMark, PumpMark


def driver_mark(driver: object) -> LoopMark | None:
    """The driver's own loop mark (``progress``), if it keeps one."""
    mark = getattr(driver, "progress", None)
    return mark if isinstance(mark, LoopMark) else None


async def pump(  # noqa: PLR0915 - its two tasks share the driver, the mark and the queue
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
    confirmations: asyncio.Queue[tuple[asyncio.Future[int], Measurement, int]] = asyncio.Queue(
        maxsize=1024
    )
    # A reading refused at commit time (the quota's hard bound, ingest.py) may be followed by
    # later readings of the same device that were already queued, or already pulled from it
    # before it heard of the refusal. Confirming one of those would tell a device that keeps a
    # cursor (a memory, RACP) that everything up to it is stored - the refused one included.
    # So each refusal starts a new epoch: readings handed over in an older epoch are told
    # "refused" too (those that were stored are then sent again: a duplicate, never a loss).
    epoch = _Epoch()

    async def confirm() -> None:
        while True:
            fut, m, handed_in = await confirmations.get()
            try:
                try:
                    seq = await fut
                except QuotaExceededError:
                    epoch.current += 1
                    await tell_refused(m)
                    continue
                if handed_in != epoch.current:
                    await tell_refused(m)  # stored, but not confirmed: see above
                    continue
                if on_durable is not None:
                    on_durable(m, seq)
                with mark.committing():
                    try:
                        await driver.committed([m])
                    except Exception as exc:
                        raise DriverFailedError(driver.name, exc) from exc
            finally:
                confirmations.task_done()

    async def tell_refused(m: Measurement) -> None:
        hook = getattr(driver, "refused", None)
        if hook is not None:
            with mark.committing():
                try:
                    await hook([m])
                except Exception as exc:
                    raise DriverFailedError(driver.name, exc) from exc

    async def refused(m: Measurement) -> None:
        # Not stored: the device keeps it (no confirmation); a device with stored records is
        # told to offer it again, and we wait for space rather than refuse reading after reading.
        await tell_refused(m)
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
                except Exception as exc:
                    raise DriverFailedError(driver.name, exc) from exc
            # The first reading pulled after a refusal may predate the device's rewind: it counts
            # in the epoch before the refusal.
            handed_in, epoch.pulled = epoch.pulled, epoch.current
            try:
                fut = await writer.enqueue([m], lane_of(m))
            except QuotaExceededError:
                await refused(m)
                continue
            await _put_or_fail(confirmations, (fut, m, handed_in), confirmer)
            if handed_in != epoch.current:
                # A refusal at commit time since the last reading: stop pulling until a record
                # like the refused one fits, rather than refuse reading after reading.
                with mark.paused("outbox quota reached"):
                    await writer.wait_for_room(lane_of(m))
        await _join_or_fail(confirmations, confirmer)  # a bounded driver ended: its last ones
    finally:
        confirmer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await confirmer
        closing = getattr(readings, "aclose", None)
        if closing is not None:  # a run ended by a fault or a cancel: release the port now
            with contextlib.suppress(Exception):
                await closing()


class _Epoch:
    """The pump's refusal epochs: ``current`` grows with each commit-time refusal, ``pulled``
    is the epoch the latest reading pulled from the driver was handed over in."""

    __slots__ = ("current", "pulled")

    def __init__(self) -> None:
        self.current = 0
        self.pulled = 0


async def _put_or_fail(
    queue: asyncio.Queue[tuple[asyncio.Future[int], Measurement, int]],
    item: tuple[asyncio.Future[int], Measurement, int],
    confirmer: asyncio.Task[None],
) -> None:
    """Queue a confirmation; a confirmer that died (a driver fault in ``committed``) ends the
    run with its exception instead of leaving the pump waiting on a full queue for ever."""
    if confirmer.done():
        confirmer.result()
    if not queue.full():
        queue.put_nowait(item)
        return
    await _first(queue.put(item), confirmer)


async def _join_or_fail(
    queue: asyncio.Queue[tuple[asyncio.Future[int], Measurement, int]],
    confirmer: asyncio.Task[None],
) -> None:
    if confirmer.done():
        confirmer.result()
    await _first(queue.join(), confirmer)


async def _first(work: Awaitable[None], confirmer: asyncio.Task[None]) -> None:
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task, confirmer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        task.result()
        return
    confirmer.result()  # the confirmer ended: its exception (a DriverFailedError) ends this run
