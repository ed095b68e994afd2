"""Enrolment bundle verification: what is refused, and with which message."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioning.bundle import BoundDevice, EnrolmentBundle, sign_bundle, verify_bundle
from provisioning.errors import (
    BundleExpiredError,
    BundleInvalidError,
    BundleSignatureError,
    BundleWrongGatewayError,
)

KEY = ed25519.Ed25519PrivateKey.generate()
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DEVICES = (
    BoundDevice("ble", "AA:BB:CC:00:00:01", "thermometer", 3600.0, passkey="123456"),
    BoundDevice("serial", "/dev/ttyUSB0", "astm", 86400.0),
)


def bundle(**changes: object) -> EnrolmentBundle:
    fields: dict[str, object] = {
        "gateway_id": "gw-1",
        "episode_id": "ep-42",
        "not_before": NOW - timedelta(hours=1),
        "not_after": NOW + timedelta(days=1),
        "broker_host": "broker.example",
        "broker_port": 8883,
        "broker_ca_pem": "-----BEGIN CERTIFICATE-----\n...",
        "provider_hpke_public_pem": "-----BEGIN PUBLIC KEY-----\n...",
        "devices": DEVICES,
    }
    fields.update(changes)
    return EnrolmentBundle(**fields)  # type: ignore[arg-type]


def test_a_good_bundle_round_trips_with_every_device() -> None:
    got = verify_bundle(sign_bundle(bundle(), KEY), KEY.public_key(), "gw-1", NOW)
    assert got == bundle()


def test_signed_by_another_key_is_refused() -> None:
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(BundleSignatureError) as err:
        verify_bundle(sign_bundle(bundle(), other), KEY.public_key(), "gw-1", NOW)
    assert err.value.one_line().startswith("[P-BUNDLE-SIGNATURE]")
    assert "logistics desk" in err.value.hint


def test_a_changed_payload_is_refused_before_it_is_parsed() -> None:
    outer = json.loads(sign_bundle(bundle(), KEY))
    payload = json.loads(base64.b64decode(outer["payload"]))
    payload["devices"][0]["address"] = "AA:BB:CC:99:99:99"  # a neighbour's device slipped in
    outer["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    with pytest.raises(BundleSignatureError):
        verify_bundle(json.dumps(outer).encode(), KEY.public_key(), "gw-1", NOW)


@pytest.mark.parametrize("raw", [b"", b"not json", b'{"payload": "%%%", "signature": ""}'])
def test_garbage_is_a_damaged_bundle(raw: bytes) -> None:
    with pytest.raises(BundleSignatureError):
        verify_bundle(raw, KEY.public_key(), "gw-1", NOW)


def test_a_bundle_for_another_gateway_is_refused_naming_both() -> None:
    with pytest.raises(BundleWrongGatewayError) as err:
        verify_bundle(sign_bundle(bundle(gateway_id="gw-2"), KEY), KEY.public_key(), "gw-1", NOW)
    assert "gw-2" in err.value.message
    assert "gw-1" in err.value.message


@pytest.mark.parametrize(
    ("before", "after"),
    [(timedelta(days=-3), timedelta(days=-1)), (timedelta(hours=1), timedelta(days=2))],
    ids=["expired", "not-yet-valid"],
)
def test_outside_the_validity_period_is_refused(before: timedelta, after: timedelta) -> None:
    raw = sign_bundle(bundle(not_before=NOW + before, not_after=NOW + after), KEY)
    with pytest.raises(BundleExpiredError):
        verify_bundle(raw, KEY.public_key(), "gw-1", NOW)
    # The daemon re-reads a stored bundle later: its signature still counts, its dates don't.
    assert verify_bundle(raw, KEY.public_key(), "gw-1", NOW, check_validity=False).episode_id


def test_a_few_minutes_of_clock_skew_are_tolerated() -> None:
    raw = sign_bundle(bundle(not_before=NOW + timedelta(minutes=3)), KEY)
    assert verify_bundle(raw, KEY.public_key(), "gw-1", NOW).gateway_id == "gw-1"


def test_signed_but_unusable_content_is_a_provider_bug() -> None:
    twice = (DEVICES[0], DEVICES[0])
    with pytest.raises(BundleInvalidError):
        verify_bundle(sign_bundle(bundle(devices=twice), KEY), KEY.public_key(), "gw-1", NOW)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"transport": "wifi", "address": "x", "profile": "p", "expected_interval_s": 60},
        {"transport": "ble", "address": "aa:bb", "profile": "p", "expected_interval_s": 60},
        {
            "transport": "ble",
            "address": "AA:BB:CC:00:00:01",
            "profile": "P!",
            "expected_interval_s": 60,
        },
        {
            "transport": "ble",
            "address": "AA:BB:CC:00:00:01",
            "profile": "p",
            "expected_interval_s": 0,
        },
        {
            "transport": "serial",
            "address": "/dev/ttyS0",
            "profile": "astm",
            "expected_interval_s": 60,
            "passkey": "123456",
        },
        {
            "transport": "ble",
            "address": "AA:BB:CC:00:00:01",
            "profile": "p",
            "expected_interval_s": 60,
            "passkey": "12",
        },
    ],
)
def test_bound_device_refuses_bad_entries(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BoundDevice(**kwargs)  # type: ignore[arg-type]


def test_the_passkey_never_shows_in_a_repr() -> None:
    assert "123456" not in repr(DEVICES[0])
