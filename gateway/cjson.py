"""Canonical JSON: deterministic bytes, and decimals that keep their transmitted precision.

The standard ``json`` module cannot write ``Decimal('2.00')`` as the JSON number ``2.00``; a FHIR
``valueQuantity.value`` must keep it (PHD IG: precision is part of the reading). This encoder writes
objects with sorted keys, no insignificant white space, UTF-8, and decimals as their exact digits.
Read back with :func:`loads`, which parses numbers with a fraction or exponent as ``Decimal``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

_encode_str = json.encoder.encode_basestring_ascii


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


def dumps(value: Any) -> bytes:
    """Encode to canonical JSON bytes (sorted keys, compact, ASCII-safe, exact decimals)."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("ascii")


def loads(data: bytes | str) -> Any:
    """Decode JSON, keeping every non-integer number as an exact ``Decimal``."""
    return json.loads(data, parse_float=Decimal)
