"""Canonical JSON: the orjson fast path gives the reference encoder's bytes, or its error."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.fhir import observation as fhir
from gateway.seal import cjson
from tests.factories import make_bp_measurement, make_gateway_info, make_measurement

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits: orjson refuses
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.text()  # control characters, quotes, backslashes, non-ASCII, surrogates
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)


def both(value: Any) -> tuple[bytes | str, bytes | str]:
    def run(fn: Any) -> bytes | str:
        try:
            return bytes(fn(value))
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            return type(exc).__name__
    return run(cjson.dumps), run(cjson.dumps_reference)


@given(documents)
def test_fast_path_and_reference_agree(value: Any) -> None:
    fast, reference = both(value)
    assert fast == reference
    if isinstance(reference, bytes):
        assert cjson.dumps(value, float_free=True) == reference


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_floats_are_refused_wherever_they_hide(x: float) -> None:
    for value in (x, [x], {"a": {"b": (1, x)}}):
        with pytest.raises(TypeError, match="floats are not allowed"):
            cjson.dumps(value)


def test_decimals_keep_their_digits_and_non_finite_ones_are_refused() -> None:
    assert cjson.dumps({"v": Decimal("36.60"), "e": Decimal("1E+2")}) == b'{"e":1E+2,"v":36.60}'
    with pytest.raises(ValueError, match="non-finite"):
        cjson.dumps([Decimal("NaN")])


def test_non_ascii_is_escaped_like_the_reference() -> None:
    assert cjson.dumps({"name": "Säule ✓"}) == b'{"name":"S\\u00e4ule \\u2713"}'


def test_fhir_bundles_encode_the_same_on_both_paths() -> None:
    gw = make_gateway_info()
    bundle = fhir.bundle(
        [make_measurement(device_record_id=i) for i in range(5)] + [make_bp_measurement()], gw
    )
    assert cjson.dumps(bundle, float_free=True) == cjson.dumps_reference(bundle)
