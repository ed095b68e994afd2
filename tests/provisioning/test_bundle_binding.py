"""Bundles bound to one enrolment, capped validity, checked format (issue 16, finding 2).

Unit level here; tests/provisioning/test_enrol.py replays a previous enrolment's bundle through
the real EST service and ``gatewayctl enrol``.
"""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from provisioning.binding import (
    accepted_generation,
    check_episode_files,
    record_generation,
)
from provisioning.bundle import (
    MAX_BUNDLE_VALIDITY,
    Binding,
    sign_bundle,
    tls_key_sha256,
    verify_bundle,
)
from provisioning.errors import BundleInvalidError, BundleNotBoundError, BundleSignatureError
from provisioning.layout import StateLayout
from tests.provisioning.test_bundle import KEY, NOW, bundle

ENROLLED = ec.generate_private_key(ec.SECP256R1()).public_key()
PREVIOUS = ec.generate_private_key(ec.SECP256R1()).public_key()  # destroyed at the last return
THIS = Binding(tls_key_sha256(ENROLLED), min_generation=3)


def _bound(key: ec.EllipticCurvePublicKey = ENROLLED, generation: int = 3, **kw: object) -> bytes:
    return sign_bundle(bundle(tls_key_sha256=tls_key_sha256(key), generation=generation, **kw), KEY)


def test_a_bundle_bound_to_this_enrolment_is_accepted() -> None:
    got = verify_bundle(_bound(generation=4), KEY.public_key(), "gw-1", NOW, binding=THIS)
    assert (got.tls_key_sha256, got.generation) == (tls_key_sha256(ENROLLED), 4)


def test_a_previous_enrolments_bundle_is_refused() -> None:
    """The wrong-patient replay: properly signed, right gateway, valid - but another key."""
    with pytest.raises(BundleNotBoundError) as err:
        verify_bundle(_bound(PREVIOUS), KEY.public_key(), "gw-1", NOW, binding=THIS)
    assert err.value.one_line().startswith("[P-BUNDLE-BINDING]")


def test_an_older_generation_is_refused() -> None:
    with pytest.raises(BundleNotBoundError, match="older"):
        verify_bundle(_bound(generation=2), KEY.public_key(), "gw-1", NOW, binding=THIS)


def test_an_unbound_bundle_is_refused_at_enrolment_but_still_loads() -> None:
    raw = sign_bundle(bundle(), KEY)  # payload format 1, as before this check
    with pytest.raises(BundleNotBoundError, match="not bound"):
        verify_bundle(raw, KEY.public_key(), "gw-1", NOW, binding=THIS)
    # a router already bound with one keeps running after the upgrade
    assert verify_bundle(raw, KEY.public_key(), "gw-1", NOW, check_validity=False)


@pytest.mark.parametrize("years", [10, 400 / 365])
def test_a_long_lived_bundle_is_refused(years: float) -> None:
    raw = _bound(not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(days=365 * years))
    with pytest.raises(BundleInvalidError, match=f"at most {MAX_BUNDLE_VALIDITY.days}"):
        verify_bundle(raw, KEY.public_key(), "gw-1", NOW, binding=THIS)


@pytest.mark.parametrize("fmt", [2, "1", None, 0])
def test_the_outer_format_is_checked(fmt: object) -> None:
    outer = json.loads(_bound())
    outer["format"] = fmt
    with pytest.raises(BundleSignatureError):
        verify_bundle(json.dumps(outer).encode(), KEY.public_key(), "gw-1", NOW, binding=THIS)


def test_a_deeply_nested_bundle_is_a_typed_refusal_not_a_recursion_error() -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(BundleSignatureError):
        verify_bundle(deep, KEY.public_key(), "gw-1", NOW)
    payload = b'{"format": 2, "binding": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    signed = json.dumps(
        {
            "format": 1,
            "payload": base64.b64encode(payload).decode(),
            "signature": base64.b64encode(KEY.sign(payload)).decode(),
        }
    ).encode()
    with pytest.raises(BundleInvalidError):
        verify_bundle(signed, KEY.public_key(), "gw-1", NOW)


@pytest.mark.parametrize(
    "binding",
    [
        {"tls_key_sha256": "AB" * 32, "generation": 1},
        {"tls_key_sha256": "ab" * 32, "generation": 0},
        {"tls_key_sha256": "ab" * 32, "generation": True},
        {"tls_key_sha256": "ab" * 32},
    ],
)
def test_a_malformed_binding_is_refused(binding: dict[str, object]) -> None:
    payload = bundle().payload_json() | {"format": 2, "binding": binding}
    data = json.dumps(payload).encode()
    signed = json.dumps(
        {
            "format": 1,
            "payload": base64.b64encode(data).decode(),
            "signature": base64.b64encode(KEY.sign(data)).decode(),
        }
    ).encode()
    with pytest.raises(BundleInvalidError):
        verify_bundle(signed, KEY.public_key(), "gw-1", NOW)


def test_the_accepted_generation_only_rises(tmp_path: Path) -> None:
    assert accepted_generation(tmp_path) == 0
    record_generation(tmp_path, 5)
    record_generation(tmp_path, 3)
    assert accepted_generation(tmp_path) == 5


def test_episode_files_must_be_the_bundles(tmp_path: Path) -> None:
    layout = StateLayout(tmp_path)
    b = bundle()
    layout.episode_dir.mkdir()
    layout.broker_ca.write_text(b.broker_ca_pem)
    layout.provider_hpke_pub.write_text(b.provider_hpke_public_pem)
    check_episode_files(layout, b)
    layout.provider_hpke_pub.write_text("-----BEGIN PUBLIC KEY-----\nswapped")
    with pytest.raises(BundleInvalidError, match=r"provider-hpke\.pub"):
        check_episode_files(layout, b)
    layout.broker_ca.unlink()
    with pytest.raises(BundleInvalidError, match="missing"):
        check_episode_files(layout, b)
