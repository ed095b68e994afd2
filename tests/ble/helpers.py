"""Shared test data for the BLE decoder tests: strategies for wire pieces, exact comparisons."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import strategies as st

from drivers.ble.gatt_time import encode_date_time
from drivers.ble.measure import Readable, to_measurements
from gateway.errors import DecodeError
from gateway.model import DeviceId, DeviceIdKind, Measurement

DEVICE = DeviceId(DeviceIdKind.BTMAC, "a4:c1:38:00:12:34")
RECEIVED_AT = datetime(2024, 5, 1, 8, 0, 5, tzinfo=UTC)
CEST_OFFSET = timedelta(hours=2)  # an accurate device clock set to Central European Summer Time


def wall(
    year: int,
    month: int,
    day: int,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    microsecond: int = 0,
) -> datetime:
    """A device's wall-clock reading: naive, as the GATT Date Time field carries no zone."""
    return datetime(year, month, day, hour, minute, second, microsecond)  # noqa: DTZ001


DATE_TIMES = st.datetimes(min_value=wall(1582, 1, 1), max_value=wall(9999, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
# A Date Time field: a real date, or all zeros ("unknown").
DATE_TIME_BYTES = st.one_of(DATE_TIMES.map(encode_date_time), st.just(bytes(7)))
SFLOAT_BYTES = st.binary(min_size=2, max_size=2)
FLOAT_BYTES = st.binary(min_size=4, max_size=4)


def fixed(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


def same(a: object, b: object) -> bool:
    """Equal including Decimal exponents (dataclass == would call 2.0 and 2.00 equal)."""
    return repr(a) == repr(b)


def dec(text: str) -> Decimal:
    return Decimal(text)


def is_exactly(value: object, text: str) -> bool:
    """``value`` is a Decimal with exactly the digits and exponent of ``text``."""
    return isinstance(value, Decimal) and value.as_tuple() == Decimal(text).as_tuple()


def decode_or_reject(decode: Callable[[bytes], object], payload: bytes) -> object | None:
    """Decode ``payload``; a DecodeError is an accepted outcome (returns None), anything else
    propagates and fails the test."""
    try:
        return decode(payload)
    except DecodeError as err:
        caught = err
    assert set(caught.fields) == {"uuid", "reason"}
    return None


def measurements_of(
    parsed: Readable, offset: timedelta | None = CEST_OFFSET
) -> tuple[Measurement, ...]:
    return to_measurements(parsed, DEVICE, RECEIVED_AT, offset, raw=b"\x00")
