"""Devices as processes: kill -9 the analyser mid-transfer, power it on again, nothing lost."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from rig.serial.process import SimProcess
from tests.serial_io.helpers import Consumer, by_id, eventually
from tests.serial_io.test_astm_driver import driver_for

pytestmark = pytest.mark.integration  # a device in a subprocess


async def test_a_killed_analyser_resends_after_power_on_and_the_result_is_stored(
    tmp_path: Path,
) -> None:
    link = by_id(tmp_path, "Afinion")
    args = ["--crp", "6.5", "--reply-timeout", "1.0", "--retry-after", "0.2"]
    first = SimProcess("astm", link, args).start()
    try:
        driver = driver_for(link)
        async with Consumer(driver, auto_commit=False) as consumer:
            await eventually(lambda: len(consumer.received) == 1, what="the result")
            first.kill()  # power cut while the result waits for its commit
            await eventually(lambda: driver.health()[0].state == "unplugged", what="the loss")
            assert first.wait_for(lambda e: e.get("event") == "delivered", 0.0) is None
            consumer.auto_commit = True
            # Powered on again, the analyser still holds the unsent result and sends it.
            with SimProcess("astm", link, args) as second:
                delivered = await asyncio.to_thread(
                    second.wait_for, lambda e: e.get("event") == "delivered", 8.0
                )
                assert delivered is not None
        assert [m.value for m in consumer.received] == [Decimal("6.5"), Decimal("6.5")]
        assert [m.value for m in consumer.committed] == [Decimal("6.5")]
    finally:
        first.kill()
