"""Delivery checks shared by the scenarios. Failure messages name devices, counts and record ids,
never a clinical value (invariant 3: the report may be attached to a ticket)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable

import pytest

from gateway.model import Measurement
from hil.base import DeviceRef, HilRig
from tests.integration.rig import Received


def readings_of(received: Received, device: DeviceRef) -> list[Measurement]:
    """What the provider verified from ``device``, in arrival order."""
    return [m for _, m in received.readings if m.device.value == device.wire_id]


def record_ids(received: Received, device: DeviceRef) -> list[int]:
    return [m.device_record_id for m in readings_of(received, device) if m.device_record_id]


def assert_verifier_clean(rig: HilRig, settle_s: float = 30.0) -> None:
    """The provider proves completeness from what it received: no gap in the sequence, no broken
    hash chain, every signature good, nothing it could not open. Batches in flight may land out
    of order, so a gap gets ``settle_s`` to close before it counts as a loss."""
    deadline = time.monotonic() + settle_s
    summary = rig.verifier_summary()
    while summary["missing"] and time.monotonic() < deadline:
        time.sleep(0.2)
        summary = rig.verifier_summary()
    problems = {
        "missing records": summary["missing"],
        "chain breaks": summary["chain_breaks"],
        "signature failures": summary["signature_failures"],
        "undecodable batches": sum(summary["failures"].values()),
    }
    bad = {k: v for k, v in problems.items() if v}
    assert not bad, f"provider verifier: {bad} (missing seqs {summary['missing_seqs']})"


def assert_contiguous(received: Received, device: DeviceRef, *, since: int = 1) -> list[int]:
    """Every record id of ``device`` from ``since`` to the highest seen arrived (re-sends after a
    crash are allowed, holes are not). Returns the distinct ids."""
    ids = sorted(set(record_ids(received, device)))
    assert ids, f"{device.name}: no readings with device record ids arrived"
    want = set(range(since, ids[-1] + 1))
    holes = sorted(want - set(ids))
    assert not holes, f"{device.name}: {len(holes)} readings lost, record ids {holes[:10]}"
    return ids


def assert_in_order(received: Received, device: DeviceRef) -> None:
    """Readings of one device reached the provider in the order the device took them."""
    ids = record_ids(received, device)
    late = [(a, b) for a, b in itertools.pairwise(ids) if b <= a]
    assert not late, f"{device.name}: {len(late)} readings out of order, first {late[:3]}"


def device_of(rig: HilRig, name: str, ble_reason: str | None) -> DeviceRef:
    """The rig's DeviceRef called ``name``; skips a BLE device the daemon cannot take yet."""
    if ble_reason and any(d.name == name for d in rig.profile.ble_devices):
        pytest.skip(ble_reason)
    device = next((d for d in rig.devices() if d.name == name), None)
    assert device is not None, f"the rig has no device {name!r}"
    return device


Finding = dict[str, str]


def findings(rig: HilRig) -> list[Finding]:
    """What ``gatewayctl status --json`` diagnoses right now ([] if the gateway does not answer)."""
    proc = rig.gatewayctl("status", "--json", timeout_s=15)
    try:
        return list(json.loads(proc.stdout).get("findings", []))
    except (json.JSONDecodeError, AttributeError):
        return []


def diagnosed(
    rig: HilRig, match: Callable[[Finding], bool], timeout_s: float, what: str
) -> Finding:
    """Wait until a finding of ``gatewayctl status`` matches (the technician's view of a fault);
    the failure message lists what it said instead."""
    deadline = time.monotonic() + timeout_s
    said: list[Finding] = []
    while time.monotonic() < deadline:
        said = findings(rig)
        hit = next((f for f in said if match(f)), None)
        if hit is not None:
            return hit
        time.sleep(1.0)
    shown = "; ".join(f"{f.get('code')} ({f.get('subject')})" for f in said) or "nothing"
    pytest.fail(f"gatewayctl status did not diagnose {what} within {timeout_s:.0f}s; it said: "
                f"{shown}")
