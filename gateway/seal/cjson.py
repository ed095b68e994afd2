"""Canonical JSON: deterministic bytes, and decimals that keep their transmitted precision.

The standard ``json`` module cannot write ``Decimal('2.00')`` as the JSON number ``2.00``; a FHIR
``valueQuantity.value`` must keep it (PHD IG: precision is part of the reading). This encoder writes
objects with sorted keys, no insignificant white space, UTF-8, and decimals as their exact digits.
Read back with :func:`loads`, which parses numbers with a fraction or exponent as ``Decimal``.

Two encoders give the same bytes. The reference one below is pure Python (about 200 µs for one
reading's FHIR Bundle). The fast path hands the structure to orjson (a C extension, ~15 µs) with
sorted keys and each ``Decimal`` passed through as its exact digits. Its output is used only when
it is pure ASCII without DEL (the reference escapes non-ASCII and U+007F as ``\\uXXXX``, orjson
writes UTF-8 and a raw DEL) and the
structure holds no float (orjson would write one; canonical JSON refuses them, since a reading's
digits must be exact). Everything else (a float, a non-string key, an integer beyond 64 bits,
another type) goes to the reference encoder, which gives the bytes or raises the error it always
did. Property tests check that the two agree.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import orjson

_encode_str = json.encoder.encode_basestring_ascii
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS


def _fast_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(_decimal_text(value).encode("ascii"))
    raise TypeError  # any other type: the reference encoder decides


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError("JSON has no representation for a non-finite decimal")
    return str(value)


def _write(value: Any, out: list[str]) -> None:  # noqa: PLR0912 - one branch per JSON type
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_encode_str(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value))
    elif isinstance(value, float):
        raise TypeError("floats are not allowed in canonical JSON; use Decimal")
    elif isinstance(value, Mapping):
        out.append("{")
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"object keys must be strings, got {type(key).__name__}")
            if i:
                out.append(",")
            out.append(_encode_str(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any, *, float_free: bool = False) -> bytes:
    """Encode to canonical JSON bytes (sorted keys, compact, ASCII-safe, exact decimals).

    ``float_free=True`` skips the search for floats, for structures that cannot hold one by
    construction (a FHIR Bundle of :class:`~gateway.model.Measurement` values, which are
    ``Decimal``); the search costs about as much as orjson's whole encoding.
    """
    if not float_free and _has_float(value):
        return dumps_reference(value)  # raises: canonical JSON has no floats
    try:
        data = orjson.dumps(value, default=_fast_default, option=_ORJSON_OPTIONS)
    except (orjson.JSONEncodeError, ValueError):
        return dumps_reference(value)  # gives the same bytes, or raises the reference's error
    # orjson writes U+007F (DEL) as it is; the reference (and docs/wire-format.md 3.4) escapes it.
    return data if data.isascii() and b"\x7f" not in data else dumps_reference(value)


def _has_float(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        t = type(v)
        if t is float:
            return True
        if t is dict:
            stack.extend(v.values())
        elif t is list or t is tuple:
            stack.extend(v)
    return False


def dumps_reference(value: Any) -> bytes:
    """The reference encoder (pure Python); :func:`dumps` gives the same bytes, faster."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("ascii")


def loads(data: bytes | str) -> Any:
    """Decode JSON, keeping every non-integer number as an exact ``Decimal``."""
    return json.loads(data, parse_float=Decimal)
