"""Oximeter drivers against simulated Nonin and CMS50 devices streaming at their real rates."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from drivers.serial.oximeter_driver import OximeterDriver, OximeterDriverConfig, OximeterProtocol
from drivers.serial.port import PortSpec
from drivers.serial.reducer import ReducerConfig
from gateway.fhir.codes import MDC_PULS_OXIM_PULS_RATE, MDC_PULS_OXIM_SAT_O2
from gateway.model import AbsentReason, DeviceId, DeviceIdKind, Measurement, MeasurementStatus
from rig.serial.oximeter import Cms50Sim, NoninSim, OximeterSim
from tests.serial_io.helpers import FAST_BACKOFF, Consumer, by_id, eventually

INTERVAL_S = 1.0


def driver_for(link: Path, protocol: OximeterProtocol) -> OximeterDriver:
    return OximeterDriver(
        OximeterDriverConfig(
            "spo2",
            protocol,
            PortSpec(str(link), line=protocol.line),
            DeviceId(DeviceIdKind.SERIAL, "OX-501234"),
            ReducerConfig(interval_s=INTERVAL_S),
            no_data_s=0.8,
            backoff=FAST_BACKOFF,
            poll_s=0.05,
        )
    )


def of(consumer: Consumer, reason: str, mdc: int = MDC_PULS_OXIM_SAT_O2) -> list[Measurement]:
    return [m for m in consumer.received if m.supplemental == reason and m.mdc_code == mdc]


def since(consumer: Consumer, start: float) -> list[Measurement]:
    return [m for m, t in zip(consumer.received, consumer.received_at, strict=True) if t >= start]


SIMS: list[tuple[OximeterProtocol, type[OximeterSim]]] = [
    (OximeterProtocol.NONIN, NoninSim),
    (OximeterProtocol.CMS50, Cms50Sim),
]


@pytest.mark.parametrize(("protocol", "sim_type"), SIMS)
async def test_readings_come_at_the_interval_and_at_once_on_desaturation_and_sensor_off(
    tmp_path: Path,
    protocol: OximeterProtocol,
    sim_type: type[OximeterSim],
) -> None:
    link = by_id(tmp_path, protocol.value)
    with sim_type(link) as sim:
        driver = driver_for(link, protocol)
        async with Consumer(driver) as consumer:
            await eventually(
                lambda: len(of(consumer, "interval")) >= 2,
                timeout_s=4.0,
                what="two interval readings",
            )
            first, second = of(consumer, "interval")[:2]
            gap_s = (second.received_at - first.received_at).total_seconds()
            assert gap_s == pytest.approx(INTERVAL_S, abs=0.3)
            assert (first.value, first.unit, first.status) == (
                Decimal(97),
                "%",
                MeasurementStatus.NONE,
            )
            assert of(consumer, "interval", MDC_PULS_OXIM_PULS_RATE)[0].value == Decimal(72)
            assert driver.health()[0].state == "streaming"

            sim.garbage(b"\x01\x81\x00line noise\xff\x80")  # the framer resynchronises
            readings = len(consumer.received)
            await eventually(lambda: driver.frame_errors > 0, what="the noise to be counted")
            await eventually(
                lambda: len(consumer.received) > readings,
                timeout_s=3.0,
                what="readings after the noise",
            )

            sim.set(spo2_pct=85)
            changed = time.monotonic()
            await eventually(
                lambda: bool(of(consumer, "desaturation")),
                timeout_s=2.0,
                what="the desaturation reading",
            )
            desaturation = of(consumer, "desaturation")[0]
            arrived = consumer.received_at[consumer.received.index(desaturation)]
            assert arrived - changed < INTERVAL_S  # reported at once, not held for the interval
            assert desaturation.value == Decimal(85)

            sim.set(spo2_pct=97, sensor_off=True)
            changed = time.monotonic()
            await eventually(
                lambda: any(
                    m.absent_reason is AbsentReason.SENSOR_OFF for m in since(consumer, changed)
                ),
                timeout_s=2.0,
                what="the sensor-off reading",
            )
            event = next(
                m for m in since(consumer, changed) if m.absent_reason is AbsentReason.SENSOR_OFF
            )
            assert event.supplemental == "status-change"
            assert driver.health()[0].state == "sensor-off"

            sim.set(streaming=False)
            await eventually(
                lambda: driver.health()[0].state == "no-data",
                timeout_s=3.0,
                what="the no-data state",
            )
