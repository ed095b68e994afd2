"""The measurement vocabulary: pinned MDC / LOINC / UCUM facts and the table's own consistency."""

from __future__ import annotations

import pytest

from gateway.fhir import codes

# (MDC code, reference id, default UCUM unit, LOINC codes for that unit)
PINNED = [
    (150364, "MDC_TEMP_BODY", "Cel", ["8310-5"]),
    (150020, "MDC_PRESS_BLD_NONINV", "mm[Hg]", ["85354-9"]),
    (150021, "MDC_PRESS_BLD_NONINV_SYS", "mm[Hg]", ["8480-6"]),
    (150022, "MDC_PRESS_BLD_NONINV_DIA", "mm[Hg]", ["8462-4"]),
    (150023, "MDC_PRESS_BLD_NONINV_MEAN", "mm[Hg]", ["8478-0"]),
    (149546, "MDC_PULS_RATE_NON_INV", "/min", ["8867-4"]),
    (150456, "MDC_PULS_OXIM_SAT_O2", "%", ["59408-5", "2708-6"]),
    (149530, "MDC_PULS_OXIM_PULS_RATE", "/min", ["8867-4"]),
    (147842, "MDC_ECG_HEART_RATE", "/min", ["8867-4"]),
    (147240, "MDC_ECG_TIME_PD_RR_GL", "ms", []),
    (188736, "MDC_MASS_BODY_ACTUAL", "kg", ["29463-7"]),
    (188740, "MDC_LEN_BODY_ACTUAL", "cm", ["8302-2"]),
    (188752, "MDC_RATIO_MASS_BODY_LEN_SQ", "kg/m2", ["39156-5"]),
    (160184, "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", "mg/dL", ["41653-7"]),
    (160188, "MDC_CONC_GLU_CAPILLARY_PLASMA", "mg/dL", []),
    (160212, "MDC_CONC_GLU_ISF", "mg/dL", ["99504-3"]),
    (67996, "MDC_ATTR_VAL_BATT_CHARGE", "%", []),
]


def _loinc_check_digit_ok(code: str) -> bool:
    """LOINC's mod-10 check digit (the Luhn scheme) over 'NNNN-C'."""
    digits = [int(ch) for ch in code.replace("-", "")]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += d if i % 2 == 0 else (2 * d if d < 5 else 2 * d - 9)
    return total % 10 == 0


@pytest.mark.parametrize(("mdc", "ref_id", "unit", "loinc"), PINNED)
def test_pinned_code_facts(mdc: int, ref_id: str, unit: str, loinc: list[str]) -> None:
    """Each supported type has its normative reference id, default unit and LOINC terms."""
    entry = codes.info(mdc)
    assert entry is not None
    assert (entry.mdc_code, entry.reference_id, entry.unit) == (mdc, ref_id, unit)
    assert [t.code for t in entry.loinc_for(unit)] == loinc


@pytest.mark.parametrize(("mdc", "ref_id", "unit", "loinc"), PINNED)
def test_module_constant_named_by_reference_id_holds_the_code(
    mdc: int, ref_id: str, unit: str, loinc: list[str]
) -> None:
    assert getattr(codes, ref_id) == mdc


def test_mdc_codes_are_partition_and_term() -> None:
    """32-bit MDC = partition * 2**16 + term: SCADA (2) for measurements, OBJ (1) for battery."""
    assert divmod(codes.MDC_TEMP_BODY, 2**16) == (2, 19292)
    assert divmod(codes.MDC_ECG_TIME_PD_RR_GL, 2**16) == (2, 16168)
    assert divmod(codes.MDC_CONC_GLU_ISF, 2**16) == (2, 29140)
    assert divmod(codes.MDC_ATTR_VAL_BATT_CHARGE, 2**16) == (1, 2460)


def test_unknown_code_has_no_info() -> None:
    assert codes.info(999_999) is None


def test_every_loinc_code_has_a_valid_check_digit() -> None:
    """Guards against a typo in a LOINC code: a wrong code is worse than none."""
    terms = [t for entry in codes.CODES.values() for t in entry.loinc]
    assert terms
    for term in terms:
        assert _loinc_check_digit_ok(term.code), term.code


def test_check_digit_helper_rejects_a_typo() -> None:
    assert _loinc_check_digit_ok("8310-5")
    assert not _loinc_check_digit_ok("8310-6")


def test_loinc_terms_only_name_units_the_entry_admits() -> None:
    for entry in codes.CODES.values():
        for term in entry.loinc:
            assert set(term.units) <= set(entry.units), (entry.reference_id, term.code)


def test_glucose_loinc_follows_the_unit() -> None:
    """41653-7 is a mass concentration: a mmol/L reading gets the molar term 14743-9."""
    entry = codes.info(codes.MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD)
    assert entry is not None
    assert [t.code for t in entry.loinc_for("mg/dL")] == ["41653-7"]
    assert [t.code for t in entry.loinc_for("mmol/L")] == ["14743-9"]
    assert entry.loinc_for("g/L") == ()


def test_table_is_keyed_by_each_entrys_own_code_and_ids_are_unique() -> None:
    assert all(code == entry.mdc_code for code, entry in codes.CODES.items())
    ref_ids = [entry.reference_id for entry in codes.CODES.values()]
    assert len(ref_ids) == len(set(ref_ids))


def test_vital_signs_are_exactly_the_fhir_vital_sign_types() -> None:
    vital = {e.mdc_code for e in codes.CODES.values() if e.category == "vital-signs"}
    assert vital == {
        150364,
        150020,
        150021,
        150022,
        150023,
        149546,
        150456,
        149530,
        147842,
        188736,
        188740,
        188752,
    }


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("ntp", (532226, "MDC_TIME_SYNC_NTPV4")),
        (" NTP ", (532226, "MDC_TIME_SYNC_NTPV4")),
        ("sntp", (532228, "MDC_TIME_SYNC_SNTPV4330")),
        ("gps", (532238, "MDC_TIME_SYNC_GPS")),
        ("none", (532224, "MDC_TIME_SYNC_NONE")),
        ("ptp", (532236, "MDC_TIME_SYNC_OTHER")),
    ],
)
def test_time_sync_method_maps_to_mdc_code(method: str, expected: tuple[int, str]) -> None:
    assert codes.time_sync_code(method) == expected
