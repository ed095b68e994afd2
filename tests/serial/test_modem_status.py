"""Modem status: 27.007 CSQ mapping, registration per technology, operator, PDP addresses."""

from __future__ import annotations

import pytest

from drivers.serial.errors import AtResponseError
from drivers.serial.modem_at import (
    CEREG,
    CGPADDR,
    COPS,
    CREG,
    CSQ,
    CommandCompleted,
    UnsolicitedResult,
)
from drivers.serial.modem_status import (
    AccessTechnology,
    Domain,
    ModemStatus,
    ModemStatusTracker,
    PdpAddress,
    Registration,
    RegistrationState,
    parse_cgpaddr,
    parse_cops,
    parse_csq,
    parse_registration,
    sim_problem,
)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("+CSQ: 0,0", (-113, 0)),
        ("+CSQ: 1,7", (-111, 7)),
        ("+CSQ: 2,99", (-109, None)),
        ("+CSQ: 17,3", (-79, 3)),
        ("+CSQ: 30,99", (-53, None)),
        ("+CSQ: 31,99", (-51, None)),
        ("+CSQ: 99,99", (None, None)),
    ],
)
def test_csq_maps_rssi_to_dbm_per_27007(line: str, expected: tuple[int | None, int | None]) -> None:
    assert parse_csq(line) == expected


def test_a_read_response_and_a_urc_give_the_same_registration() -> None:
    expected = Registration(
        RegistrationState.REGISTERED_ROAMING, "1A2B", "01A2B3C4", AccessTechnology.E_UTRAN
    )
    assert parse_registration('+CEREG: 2,5,"1A2B","01A2B3C4",7', solicited=True) == (
        Domain.EPS,
        expected,
    )
    assert parse_registration('+CEREG: 5,"1A2B","01A2B3C4",7', solicited=False) == (
        Domain.EPS,
        expected,
    )


def test_registration_states_cover_home_roaming_searching_denied_and_keep_unknown_codes() -> None:
    states = [parse_registration(f"+CREG: 0,{n}", solicited=True)[1].state for n in (1, 5, 2, 3, 4)]
    assert states == [
        RegistrationState.REGISTERED_HOME,
        RegistrationState.REGISTERED_ROAMING,
        RegistrationState.SEARCHING,
        RegistrationState.DENIED,
        RegistrationState.UNKNOWN,
    ]
    odd = parse_registration("+C5GREG: 42", solicited=False)[1].state
    assert int(odd) == 42
    assert odd.name == "CODE_42"
    assert not odd.registered


def test_cops_gives_operator_name_and_access_technology() -> None:
    assert parse_cops('+COPS: 0,0,"Telia SE",12') == ("Telia SE", AccessTechnology.NG_RAN)
    assert parse_cops("+COPS: 2") == (None, None)


def test_cgpaddr_normalises_ipv4_and_dotted_ipv6() -> None:
    dotted = ".".join(["32", "1", "13", "184"] + ["0"] * 11 + ["1"])
    assert parse_cgpaddr(f'+CGPADDR: 1,"10.64.0.7","{dotted}"') == PdpAddress(
        1, ("10.64.0.7", "2001:db8::1")
    )
    assert parse_cgpaddr("+CGPADDR: 2") == PdpAddress(2, ())


@pytest.mark.parametrize(
    "event",
    [
        UnsolicitedResult("+CSQ: x,1"),
        UnsolicitedResult("+CSQ: 1"),
        UnsolicitedResult("+CREG: ,1"),
        UnsolicitedResult("+CREG"),
        CommandCompleted(COPS, ('+COPS: "a"',)),
        CommandCompleted(CGPADDR, ('+CGPADDR: 1,"not-ip"',)),
    ],
)
def test_malformed_lines_raise_the_typed_error_and_leave_the_status(
    event: UnsolicitedResult | CommandCompleted,
) -> None:
    tracker = ModemStatusTracker()
    with pytest.raises(AtResponseError):
        tracker.apply(event)
    assert tracker.status == ModemStatus()


def test_a_status_round_folds_into_one_frozen_value_and_urcs_update_it() -> None:
    tracker = ModemStatusTracker()
    tracker.apply(CommandCompleted(CSQ, ("+CSQ: 21,0",)))
    tracker.apply(CommandCompleted(CREG, ("+CREG: 0,0",)))
    tracker.apply(CommandCompleted(CEREG, ('+CEREG: 2,1,"1A2B","01A2B3C4",7',)))
    tracker.apply(CommandCompleted(COPS, ('+COPS: 0,0,"Telia SE",7',)))
    status = tracker.apply(CommandCompleted(CGPADDR, ('+CGPADDR: 1,"10.64.0.7"',)))
    assert status == ModemStatus(
        rssi_dbm=-71,
        ber=0,
        cs=Registration(RegistrationState.NOT_REGISTERED),
        eps=Registration(
            RegistrationState.REGISTERED_HOME, "1A2B", "01A2B3C4", AccessTechnology.E_UTRAN
        ),
        operator="Telia SE",
        access_technology=AccessTechnology.E_UTRAN,
        pdp_addresses=(PdpAddress(1, ("10.64.0.7",)),),
    )
    assert status.registered
    status = tracker.apply(UnsolicitedResult("+CEREG: 2"))
    assert status.eps == Registration(RegistrationState.SEARCHING)
    assert not status.registered
    assert tracker.apply(UnsolicitedResult("RING")) == status


def test_registration_names_a_registered_domain_else_the_most_telling_state() -> None:
    def reg(state: int) -> Registration:
        return Registration(RegistrationState(state))

    assert ModemStatus().registration is None
    assert ModemStatus(cs=reg(0), eps=reg(1)).registration == "registered-home"
    assert ModemStatus(cs=reg(0), eps=reg(2), fivegs=reg(3)).registration == "denied"
    assert ModemStatus(cs=reg(0), eps=reg(2)).registration == "searching"
    assert ModemStatus(eps=reg(0)).registration == "not-registered"


@pytest.mark.parametrize(
    ("error", "sim"),
    [(10, "not-inserted"), (11, "pin-required"), ("SIM PUK required", "puk-required"),
     (30, None), ("no network service", None), (None, None)],
)
def test_sim_problems_are_read_from_cme_errors(error: int | str | None, sim: str | None) -> None:
    assert sim_problem(error) == sim
