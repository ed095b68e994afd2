"""Events shared by the sans-I/O machines (h11 style): bytes to write, and "nothing to do"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SendBytes:
    """Write ``data`` to the port, exactly and in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class NeedData:
    """No event is pending: feed more bytes or tell the machine the time."""


NEED_DATA = NeedData()
