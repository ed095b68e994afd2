"""NUT's network protocol, sans I/O: upsd's real reply lines become a UpsReading, anything else a
typed UpsProtocolError (never another exception: upsd and the UPS are untrusted input)."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.power import nut

# Captured from NUT 2.8.0's upsd with dummy-ups (rig/nut.py), ``LIST VAR ups``.
REPLY_ON_MAINS = b"""BEGIN LIST VAR ups
VAR ups battery.charge "100"
VAR ups battery.runtime "1800"
VAR ups device.mfr "Dummy Manufacturer"
VAR ups device.model "Dummy UPS"
VAR ups device.type "ups"
VAR ups driver.name "dummy-ups"
VAR ups driver.parameter.mode "dummy-once"
VAR ups driver.parameter.pollinterval "2"
VAR ups driver.parameter.port "ups.dev"
VAR ups driver.parameter.synchronous "auto"
VAR ups driver.version "2.8.0"
VAR ups driver.version.internal "0.15"
VAR ups ups.mfr "Dummy Manufacturer"
VAR ups ups.model "Dummy UPS"
VAR ups ups.status "OL"
VAR ups ups.test.result "Done and passed"
END LIST VAR ups
"""


def feed(reader: nut.ListVarReader, lines: list[bytes]) -> None:
    for line in lines:
        reader.feed_line(line)


def read(reply: bytes, ups: str = "ups") -> nut.UpsReading:
    reader = nut.ListVarReader(ups)
    for line in reply.splitlines(keepends=True):
        reader.feed_line(line)
    assert reader.done
    return nut.reading_of(reader.variables)


def test_a_real_upsd_reply_on_mains() -> None:
    r = read(REPLY_ON_MAINS)
    assert r == nut.UpsReading(
        status_flags=frozenset({"OL"}),
        charge_pct=Decimal(100),
        runtime_s=Decimal(1800),
        test_result="Done and passed",
    )
    assert r.on_battery is False
    assert not r.low_battery
    assert r.self_test is nut.SelfTest.PASSED


def test_on_battery_and_low_battery_flags() -> None:
    reply = REPLY_ON_MAINS.replace(b'"OL"', b'"OB DISCHRG LB"').replace(b'"1800"', b'"95.5"')
    r = read(reply)
    assert r.on_battery is True
    assert r.low_battery
    assert r.runtime_s == Decimal("95.5")
    assert r.battery_low(300)


def test_low_battery_means_on_battery_and_lb_or_runtime_below_the_threshold() -> None:
    on_battery = nut.UpsReading(frozenset({"OB"}), Decimal(80), Decimal(1200))
    assert not on_battery.battery_low(300)
    assert nut.UpsReading(frozenset({"OB"}), Decimal(20), Decimal(299)).battery_low(300)
    assert nut.UpsReading(frozenset({"OB", "LB"}), Decimal(50), Decimal(3000)).battery_low(300)
    # LB on mains (a battery charging after a deep discharge): the mains feeds the router.
    assert not nut.UpsReading(frozenset({"OL", "CHRG", "LB"}), Decimal(5), Decimal(10)).battery_low(
        300
    )
    assert nut.UpsReading(frozenset({"OB"})).battery_low(300) is False  # no runtime reported


def test_neither_on_line_nor_on_battery_is_unknown_not_a_guess() -> None:
    assert nut.UpsReading(frozenset({"BYPASS"})).on_battery is None
    assert nut.UpsReading(frozenset()).on_battery is None


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("Done and passed", nut.SelfTest.PASSED),
        ("Done and warning", nut.SelfTest.FAILED),
        ("Done and error", nut.SelfTest.FAILED),
        ("Failed - battery", nut.SelfTest.FAILED),
        ("No test initiated", nut.SelfTest.NONE),
        ("In progress", nut.SelfTest.NONE),
        (None, nut.SelfTest.NONE),
    ],
)
def test_self_test_results_in_three_words(text: str | None, verdict: nut.SelfTest) -> None:
    assert nut.self_test_of(text) is verdict


def test_quoted_values_keep_escaped_quotes_and_backslashes() -> None:
    reader = nut.ListVarReader("ups")
    reader.feed_line(b"BEGIN LIST VAR ups\n")
    reader.feed_line(b'VAR ups ups.test.result "said \\"no\\" \\\\ twice"\n')
    assert reader.variables["ups.test.result"] == 'said "no" \\ twice'


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"ERR UNKNOWN-UPS\n", "UNKNOWN-UPS"),
        (b"ERR DATA-STALE\n", "DATA-STALE"),
        (b"ERR DRIVER-NOT-CONNECTED\n", "DRIVER-NOT-CONNECTED"),
    ],
)
def test_upsd_errors_are_typed_with_their_code(line: bytes, code: str) -> None:
    with pytest.raises(nut.UpsProtocolError) as err:
        nut.ListVarReader("ups").feed_line(line)
    assert err.value.code == code
    assert code in err.value.message


@pytest.mark.parametrize(
    "lines",
    [
        [b'VAR ups ups.status "OL"\n'],  # before BEGIN
        [b"BEGIN LIST VAR ups\n", b'VAR other ups.status "OL"\n'],
        [b"BEGIN LIST VAR ups\n", b"VAR ups ups.status OL\n"],  # unquoted
        [b"BEGIN LIST VAR ups\n", b'VAR ups ups.status "O"L"\n'],
        [b"BEGIN LIST VAR ups\n", b'VAR ups ups.status "OL\\"\n'],
        [b"BEGIN LIST VAR ups\n", b"VAR ups ups.status \xff\n"],
        [b"BEGIN LIST VAR ups\n", b"VAR ups x " + b"a" * 600 + b"\n"],
        [b"BEGIN LIST VAR ups\n", b"END LIST VAR ups\n", b"BEGIN LIST VAR ups\n"],
        [b"SSH-2.0-OpenSSH_9.2\n"],
    ],
)
def test_anything_else_is_a_protocol_error(lines: list[bytes]) -> None:
    with pytest.raises(nut.UpsProtocolError):
        feed(nut.ListVarReader("ups"), lines)


def test_the_number_of_variables_is_capped() -> None:
    reader = nut.ListVarReader("ups")
    reader.feed_line(b"BEGIN LIST VAR ups\n")
    for i in range(nut.MAX_VARS):
        reader.feed_line(f'VAR ups v.{i} "1"\n'.encode())
    with pytest.raises(nut.UpsProtocolError, match="more than"):
        reader.feed_line(b'VAR ups one.more "1"\n')


@pytest.mark.parametrize(
    "variables",
    [
        {"ups.status": "OL", "battery.charge": "101"},
        {"ups.status": "OL", "battery.charge": "full"},
        {"ups.status": "OL", "battery.runtime": "-5"},
        {"ups.status": "OL", "battery.runtime": "NaN"},
        {"ups.status": "OL", "battery.runtime": "Infinity"},
    ],
)
def test_impossible_values_are_refused(variables: dict[str, str]) -> None:
    with pytest.raises(nut.UpsProtocolError):
        nut.reading_of(variables)


def test_device_text_is_printable_and_capped() -> None:
    r = nut.reading_of({"ups.status": "OL", "ups.test.result": "bad\x1b[31m" + "x" * 200})
    assert r.test_result is not None
    assert r.test_result.isprintable()
    assert len(r.test_result) == nut.MAX_TEXT_CHARS


def test_the_request_names_only_a_valid_ups() -> None:
    assert nut.list_var_request("ups") == b"LIST VAR ups\n"
    with pytest.raises(ValueError, match="UPS name"):
        nut.list_var_request("ups\nFSD ups")


@given(st.lists(st.binary(max_size=80), max_size=8))
def test_any_bytes_give_a_reading_or_a_protocol_error(lines: list[bytes]) -> None:
    reader = nut.ListVarReader("ups")
    with contextlib.suppress(nut.UpsProtocolError):
        feed(reader, [b"BEGIN LIST VAR ups\n", *lines])
        nut.reading_of(reader.variables)


@given(
    st.dictionaries(
        st.sampled_from(["ups.status", "battery.charge", "battery.runtime", "ups.test.result"]),
        st.text(max_size=30),
    )
)
def test_any_variables_give_a_reading_or_a_protocol_error(variables: dict[str, str]) -> None:
    with contextlib.suppress(nut.UpsProtocolError):
        nut.reading_of(variables)
