"""No two distinct results from any driver share a FHIR identifier (a shared one is a silent loss).

The provider's FHIR server creates Observations conditionally on their identifier: two distinct
readings with one identifier become one. Each driver's real decoder runs on generated input; every
pair of resulting measurements with equal identifiers must be the same reading. "The same reading"
is what the PHD IG identifier means by it: equal device, type, value (digits included), unit,
components, device time (the reception time when there is none), supplemental info and device
record id. Raw bytes, status and, for readings with a device time, the reception time are not part
of it: the same reading received twice (or with a reserved bit changed) is one Observation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ble.cgm import CgmMeasurement
from drivers.ble.glucose import GlucoseJoiner, GlucoseMeasurement
from drivers.ble.intake import _DECODERS  # the table the BLE intake decodes with
from drivers.ble.measure import to_measurements as ble_measurements
from drivers.serial import nonin
from drivers.serial.astm_records import parse_messages
from drivers.serial.astm_results import lab_results
from drivers.serial.cms50 import PULSE_INVALID, SPO2_INVALID, Cms50Packet
from drivers.serial.oximeter_driver import OximeterDriver, OximeterDriverConfig, OximeterProtocol
from drivers.serial.port import PortSpec, SerialPort
from drivers.serial.port_errors import PortUnpluggedError
from drivers.serial.reducer import OximetryReducer, ReducerConfig
from gateway.errors import GatewayError
from gateway.fhir.observation import observation_identifier
from gateway.model import DeviceId, DeviceIdKind, Measurement, ReceptionStamps
from rig.devices import SimulatedDevice

EPISODE = "ep-0001"
INSTANT = datetime(2024, 5, 1, 8, 0, 0, 123456, tzinfo=UTC)
BLE_DEVICE = DeviceId(DeviceIdKind.BTMAC, "A4:C1:38:00:12:34")


def _same_reading_key(m: Measurement) -> tuple[object, ...]:
    exact = [(c.mdc_code, c.value.as_tuple() if c.value is not None else None, c.unit,
              c.absent_reason) for c in m.components]
    when = m.device_time if m.device_time is not None else m.received_at
    return (
        m.device, m.mdc_code, m.value.as_tuple() if m.value is not None else None, m.unit,
        m.absent_reason, tuple(exact), when, when.utcoffset(), m.supplemental, m.device_record_id,
    )


def assert_no_collision(measurements: Iterable[Measurement]) -> None:
    by_identifier: dict[str, Measurement] = {}
    for m in measurements:
        ident = observation_identifier(m, EPISODE)
        other = by_identifier.setdefault(ident, m)
        assert _same_reading_key(other) == _same_reading_key(m), (
            f"two distinct readings share the identifier {ident!r}"
        )


# --- ASTM (laboratory analyser) -----------------------------------------------------------------

HEADER = "H|\\^&|||Afinion 2^1.10^AS0012345|||||||P|LIS2-A2|20240301102000\r"


def astm_message(orders: Sequence[tuple[str, Sequence[str]]], header: str = HEADER) -> str:
    """One message, one patient; each order (specimen, results as 'value' strings)."""
    lines = [header, "P|1\r"]
    for o, (specimen, values) in enumerate(orders, start=1):
        lines.append(f"O|{o}|{specimen}||^^^CRP|R\r")
        lines += [f"R|{r}|^^^CRP|{v}|mg/L||N||F|||20240301101200|20240301101500\r"
                  for r, v in enumerate(values, start=1)]
    return "".join(lines) + "L|1|N\r"


def astm_measurements(text: str) -> list[Measurement]:
    messages, errors = parse_messages(text)
    assert errors == []
    out = []
    for msg in messages:
        batch = lab_results(msg, received_at=INSTANT)
        assert batch.errors == ()
        out += [r.measurement for r in batch.results]
    return out


def test_two_specimens_with_the_same_value_in_the_same_second_get_two_identifiers() -> None:
    """The collision the clinical check found (20 of 20 pairs): specimen IDs tell them apart."""
    a, b = astm_measurements(astm_message([("S-0001", ["5.0"]), ("S-0002", ["5.0"])]))
    assert (a.value, a.device_time) == (b.value, b.device_time)
    assert observation_identifier(a, EPISODE) != observation_identifier(b, EPISODE)
    assert "specimen:S%2D0001/" in observation_identifier(a, EPISODE)


def test_two_messages_without_specimen_ids_are_told_apart_by_their_message_time() -> None:
    one = astm_measurements(astm_message([("", ["5.0"])]))
    two = astm_measurements(astm_message([("", ["5.0"])], HEADER.replace("102000", "102001")))
    assert observation_identifier(one[0], EPISODE) != observation_identifier(two[0], EPISODE)


def test_the_same_result_sent_twice_keeps_its_identifier() -> None:
    """A retransmission must de-duplicate at the provider, not become a second result."""
    text = astm_message([("S-0001", ["5.0", "7.5"])])
    first, again = astm_measurements(text), astm_measurements(text)
    assert [observation_identifier(m, EPISODE) for m in first] == [
        observation_identifier(m, EPISODE) for m in again
    ]


_specimen = st.text(alphabet="ABCS-0123456789/:^&%", min_size=0, max_size=8).map(
    lambda s: s.replace("&", "&E&").replace("^", "&S&").replace("|", "")
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_specimen, st.lists(st.sampled_from(["5.0", "5.00", "12"]), min_size=1,
                                      max_size=4)),
        min_size=1, max_size=5,
        unique_by=lambda o: o[0],
    )
)
def test_astm_results_never_share_an_identifier(
    orders: list[tuple[str, list[str]]],
) -> None:
    """Results of distinct orders/specimens, same values, same second: all identifiers differ."""
    ms = astm_measurements(astm_message(orders))
    identifiers = [observation_identifier(m, EPISODE) for m in ms]
    assert len(set(identifiers)) == len(identifiers)


# --- serial oximeters (Nonin, CMS50): no device clock -------------------------------------------


class _ChunkPort:
    """A port that hands over prepared reads, then reports itself unplugged."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = list(chunks)

    async def read(self, timeout_s: float) -> bytes:
        if not self._chunks:
            raise PortUnpluggedError("test port exhausted", path="test")
        return self._chunks.pop(0)


def _oximeter_run(protocol: OximeterProtocol, chunks: Sequence[bytes]) -> list[Measurement]:
    """The real driver session on the chunks; every chunk arrives in the same instant."""
    driver = OximeterDriver(
        OximeterDriverConfig("spo2", protocol, PortSpec("/dev/null", line=protocol.line),
                             DeviceId(DeviceIdKind.SERIAL, "OX-1"),
                             ReducerConfig(interval_s=60.0)),
        monotonic=lambda: 100.0, wallclock=lambda: INSTANT,
    )
    async def run() -> list[Measurement]:
        out: list[Measurement] = []
        port = cast(SerialPort, _ChunkPort(chunks))
        with contextlib.suppress(PortUnpluggedError):
            async for m in driver._session(port, OximetryReducer(driver.config.reducer)):
                out.append(m)
        return out

    return asyncio.run(run())


_sample = st.tuples(st.sampled_from([None, 80, 85, 97]), st.sampled_from([None, 60, 61]),
                    st.booleans())


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_sample, min_size=1, max_size=6), min_size=1, max_size=3))
def test_nonin_readings_received_in_the_same_instant_never_share_an_identifier(
    reads: list[list[tuple[int | None, int | None, bool]]],
) -> None:
    chunks = [b"".join(nonin.encode_packet(s, p, status=nonin.STATUS_ALWAYS
                                           | (nonin.SNSD if off else 0))
                       for s, p, off in read) for read in reads]
    assert_no_collision(_oximeter_run(OximeterProtocol.NONIN, chunks))


def _cms50(spo2: int | None, pulse: int | None, finger_out: bool) -> bytes:
    return Cms50Packet(
        signal_strength=8, finger_out=finger_out, spo2_dropping=False, beep=False, pleth=50,
        bar_graph=5, probe_error=False, searching=False,
        pulse_raw=PULSE_INVALID if pulse is None else pulse,
        spo2_raw=SPO2_INVALID if spo2 is None else spo2,
    ).encode()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_sample, min_size=1, max_size=6), min_size=1, max_size=3))
def test_cms50_readings_received_in_the_same_instant_never_share_an_identifier(
    reads: list[list[tuple[int | None, int | None, bool]]],
) -> None:
    chunks = [b"".join(_cms50(s, p, off) for s, p, off in read) for read in reads]
    assert_no_collision(_oximeter_run(OximeterProtocol.CMS50, chunks))


def test_two_equal_sensor_off_events_in_one_read_get_two_identifiers() -> None:
    """Sensor off, on, off again in one buffer: the two 'off' events are two readings."""
    off = nonin.encode_packet(None, None, status=nonin.STATUS_ALWAYS | nonin.SNSD)
    on = nonin.encode_packet(97, 60)
    ms = _oximeter_run(OximeterProtocol.NONIN, [off + on + off + on + off])
    events = [m for m in ms if m.supplemental == "status-change"]
    assert len(events) >= 4
    identifiers = [observation_identifier(m, EPISODE) for m in events]
    assert len(set(identifiers)) == len(identifiers)
    assert max(m.received_at for m in events) - INSTANT < timedelta(milliseconds=1)


# --- BLE profiles -------------------------------------------------------------------------------

# (characteristic, a full payload, positions drawn at random, position of the seconds byte)
_BLE_TEMPLATES: list[tuple[int, str, Sequence[int], int | None]] = [
    (0x2A1C, "064c0e00fee80705010a000006", range(1, 5), 11),  # thermometer
    (0x2A1E, "064c0e00fee80705010a000006", range(1, 5), 11),  # intermediate temperature
    (0x2A35, "1e780050005d00e80705010a050048000101 00".replace(" ", ""), [*range(1, 7),
                                                                        *range(14, 19)], 13),
    (0x2A36, "1e780050005d00e80705010a050048000101 00".replace(" ", ""), [*range(1, 7),
                                                                        *range(14, 19)], 13),
    (0x2A5E, "1f61004800e8070501090f00800020000019f0", [*range(1, 5), *range(12, 19)], 11),
    (0x2A5F, "1f6100480060004a0062004600200000800012f0", range(1, 20), None),
    (0x2A9D, "0eb036e8070501071e0002e500d606", [1, 2, *range(10, 15)], 9),
    (0x2A37, "1f4800230100043303", range(1, 9), None),
    (0x2AA7, "0de36e0005000440 02f1ff5f00".replace(" ", ""), range(3, 7), None),  # CGM
    (0x2A18, "0b0500e8070501072d003c0078b0120000", [1, 2, *range(10, 17)], 9),  # glucose
]
def _ble_decode(uuid16: int) -> Callable[[bytes], object]:
    if uuid16 == 0x2AA7:
        return lambda p: CgmMeasurement.decode(p).in_session(None)
    if uuid16 == 0x2A18:  # no context follows (flags 0x0B): the joiner gives the record at once
        return lambda p: GlucoseJoiner().add_measurement(GlucoseMeasurement.decode(p))[0]
    return _DECODERS[uuid16]


@st.composite
def _ble_payload(draw: st.DrawFn) -> tuple[int, bytes]:
    uuid16, hexed, positions, seconds = draw(st.sampled_from(_BLE_TEMPLATES))
    payload = bytearray(bytes.fromhex(hexed))
    for pos in positions:
        payload[pos] = draw(st.integers(0, 255))
    if seconds is not None:
        payload[seconds] = draw(st.integers(0, 59))
    return uuid16, bytes(payload)


def test_every_ble_characteristic_the_intake_decodes_is_in_the_property_test() -> None:
    assert set(_DECODERS) <= {uuid16 for uuid16, *_ in _BLE_TEMPLATES}


@settings(max_examples=150, deadline=None)
@given(st.lists(_ble_payload(), min_size=2, max_size=6))
def test_ble_readings_never_share_an_identifier_unless_the_phd_ig_says_they_are_one(
    payloads: list[tuple[int, bytes]],
) -> None:
    """Every payload arrives in the same instant (as notifications in one microsecond would):
    the session's reception stamps keep clockless readings apart; readings with a device time
    collide only when they are the same reading (the PHD IG rule the BLE intake counts)."""
    stamps = ReceptionStamps()
    out: list[Measurement] = []
    for uuid16, payload in payloads:
        try:
            parsed = _ble_decode(uuid16)(payload)
            out += ble_measurements(parsed, BLE_DEVICE, stamps.stamp(INSTANT),  # type: ignore[arg-type]
                                    timedelta(0), raw=payload)
        except (GatewayError, ValueError):
            continue  # a malformed payload gives no reading (the intake counts it)
    assert_no_collision(out)


# --- simulated devices (the rig's driver plug-in) -----------------------------------------------


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["thermometer", "blood-pressure", "pulse-oximeter"]),
       st.lists(st.integers(1, 10_000), min_size=2, max_size=20, unique=True))
def test_simulated_devices_never_repeat_an_identifier(kind: str, numbers: list[int]) -> None:
    device = SimulatedDevice(kind, "C0:FF:EE:00:00:01", 1.0)
    assert_no_collision(device._reading(n) for n in numbers)
