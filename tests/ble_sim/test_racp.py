"""Stored records behind the Record Access Control Point, driven by the real bleak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from bleak import BleakClient
from bleak.exc import BleakGATTProtocolError, BleakGATTProtocolErrorCode

from drivers.ble import racp
from drivers.ble.glucose import GLUCOSE_MEASUREMENT_UUID, GlucoseMeasurement
from drivers.ble.racp import (
    RACP_UUID,
    NumberOfRecords,
    OpCode,
    Operator,
    RacpRequest,
    ResponseCode,
    ResponseCodeResponse,
)
from rig.ble.stored import GlucoseMeter
from tests.ble_sim.conftest import StartRig
from tests.ble_sim.helpers import BOUND, Inbox, find, uuid

MEASUREMENT = uuid(GLUCOSE_MEASUREMENT_UUID)
RACP = uuid(RACP_UUID)


@asynccontextmanager
async def subscribed(client: BleakClient) -> AsyncIterator[Inbox]:
    inbox = Inbox()
    await client.start_notify(MEASUREMENT, inbox)
    await client.start_notify(RACP, inbox)
    yield inbox


def is_racp(char: str, _data: bytes) -> bool:
    return char == RACP


def split(items: list[tuple[str, bytes]]) -> tuple[list[int], racp.RacpIndication]:
    """Sequence numbers of the records, and the closing RACP indication."""
    *records, (char, last) = items
    assert char == RACP
    return [GlucoseMeasurement.decode(data).sequence_number for _, data in records], \
        racp.decode(last)


async def test_report_from_n_delivers_exactly_records_n_onwards(sim: StartRig) -> None:
    meter = GlucoseMeter(BOUND)
    rig = sim(meter)
    stored = await rig.acall(lambda: meter.fill(8))
    async with BleakClient(await find(BOUND), timeout=5) as client, \
            subscribed(client) as inbox:
        await client.write_gatt_char(RACP, RacpRequest.report_from(5).encode(), response=True)
        sequences, closing = split(await inbox.until(is_racp))
    assert sequences == [5, 6, 7, 8]
    assert closing == ResponseCodeResponse(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)
    assert [m.sequence_number for m in stored] == list(range(1, 9))


async def test_count_delete_and_no_records_found(sim: StartRig) -> None:
    meter = GlucoseMeter(BOUND)
    rig = sim(meter)
    await rig.acall(lambda: meter.fill(6))
    async with BleakClient(await find(BOUND), timeout=5) as client, \
            subscribed(client) as inbox:
        async def ask(request: RacpRequest) -> racp.RacpIndication:
            await client.write_gatt_char(RACP, request.encode(), response=True)
            return split(await inbox.until(is_racp))[1]

        assert await ask(RacpRequest.count_all()) == NumberOfRecords(6)
        assert await ask(RacpRequest.count_from(5)) == NumberOfRecords(2)
        assert await ask(RacpRequest.delete_up_to(4)) == ResponseCodeResponse(
            OpCode.DELETE_STORED_RECORDS, ResponseCode.SUCCESS)
        assert await ask(RacpRequest.count_all()) == NumberOfRecords(2)
        assert await ask(RacpRequest.report_from(7)) == ResponseCodeResponse(
            OpCode.REPORT_STORED_RECORDS, ResponseCode.NO_RECORDS_FOUND)
        assert await ask(RacpRequest(OpCode.REPORT_STORED_RECORDS, Operator.NULL)) == \
            ResponseCodeResponse(OpCode.REPORT_STORED_RECORDS, ResponseCode.INVALID_OPERATOR)
        assert await ask(RacpRequest(OpCode(9), Operator.ALL_RECORDS)) == \
            ResponseCodeResponse(OpCode(9), ResponseCode.OP_CODE_NOT_SUPPORTED)
    assert await rig.acall(lambda: meter.store.keys) == [5, 6]


async def test_abort_stops_a_running_transfer(sim: StartRig) -> None:
    meter = GlucoseMeter(BOUND)
    rig = sim(meter)
    await rig.acall(lambda: meter.fill(200))
    async with BleakClient(await find(BOUND), timeout=5) as client, \
            subscribed(client) as inbox:
        await client.write_gatt_char(RACP, RacpRequest.report_all().encode(), response=True)
        await inbox.take(3)
        with pytest.raises(BleakGATTProtocolError) as busy:
            await client.write_gatt_char(RACP, RacpRequest.count_all().encode(), response=True)
        assert busy.value.code == BleakGATTProtocolErrorCode.PROCEDURE_ALREADY_IN_PROGRESS
        await client.write_gatt_char(RACP, RacpRequest.abort().encode(), response=True)
        sequences, closing = split(await inbox.until(is_racp))
    assert closing == ResponseCodeResponse(OpCode.ABORT_OPERATION, ResponseCode.SUCCESS)
    assert len(sequences) < 197  # stopped early, not after all 200


async def test_racp_write_without_indications_is_cccd_improperly_configured(
        sim: StartRig) -> None:
    meter = GlucoseMeter(BOUND)
    sim(meter)
    async with BleakClient(await find(BOUND), timeout=5) as client:
        with pytest.raises(BleakGATTProtocolError) as refused:
            await client.write_gatt_char(RACP, RacpRequest.report_all().encode(), response=True)
    assert refused.value.code == BleakGATTProtocolErrorCode.CCCD_IMPROPERLY_CONFIGURED


async def test_disconnect_mid_transfer_then_resume_from_last_plus_one(sim: StartRig) -> None:
    """The catch-up rule: after a link loss in the middle of "report >= N", reconnect,
    resubscribe, ask ">= last + 1": every record exactly once."""
    meter = GlucoseMeter(BOUND)
    rig = sim(meter)

    def prepare() -> None:
        meter.fill(12)
        meter.script.disconnect_after_records = 4

    await rig.acall(prepare)
    device = await find(BOUND)
    dropped = asyncio.Event()
    client = BleakClient(device, disconnected_callback=lambda _c: dropped.set(), timeout=5)
    await client.connect()
    async with subscribed(client) as inbox:
        await client.write_gatt_char(RACP, RacpRequest.report_from(3).encode(), response=True)
        await asyncio.wait_for(dropped.wait(), 3)
        first = [GlucoseMeasurement.decode(d).sequence_number for _, d in await inbox.quiet(0)]
    assert first == [3, 4, 5, 6]
    assert not client.is_connected
    await client.connect()  # the same BleakClient reconnects
    async with subscribed(client) as inbox:
        await client.write_gatt_char(RACP, RacpRequest.report_from(first[-1] + 1).encode(),
                                     response=True)
        rest, closing = split(await inbox.until(is_racp))
    await client.disconnect()
    assert rest == list(range(7, 13))
    assert closing == ResponseCodeResponse(OpCode.REPORT_STORED_RECORDS, ResponseCode.SUCCESS)
    assert sorted(first + rest) == list(range(3, 13))  # no loss, no duplicate
