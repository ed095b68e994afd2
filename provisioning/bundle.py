"""The signed enrolment bundle: what the provider tells a router about its patient episode.

Wire form (JSON)::

    {"format": 1, "payload": "<base64 of the payload JSON>", "signature": "<base64 Ed25519>"}

The outer ``format`` is checked before anything else. Payload format 2 binds the bundle to one
enrolment (issue 16): ``binding.tls_key_sha256`` is the SHA-256 of the DER SubjectPublicKeyInfo
of the TLS key the provider certified for this router (the key that fetched the bundle over
mutual TLS), and ``binding.generation`` a number the provider raises with every bundle it issues
for the router. A previous episode's bundle names a key that return destroyed, so it is refused
(it would attribute the new patient's readings to the old episode); an older generation is
refused too. Enrolment accepts only format 2; a stored format-1 bundle (accepted before this
check existed) still loads at start-up, so an upgrade does not silence a router in the field.

The signature covers the exact payload bytes (so no canonicalisation question arises) and is
made with the provider's bundle-signing key, whose public half ships in the router's
configuration (``[provisioning] bundle_signing_key``). The payload holds the broker address and
CA, the provider's HPKE public key, the pseudonymous episode id, a validity period, the gateway
id it was made for and the devices bound to the episode. Nothing about the patient.
Optionally ``command_key`` (issue 20): base64 of the provider's Ed25519 command-signing public
key, which the router pins for signed commands (gateway/commands); absent, it refuses them all.

``verify_bundle`` refuses, with a typed error the person on the doorstep can act on: a bad
signature, a bundle for another gateway, one outside its validity period, or unusable content.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from provisioning.errors import (
    BundleExpiredError,
    BundleInvalidError,
    BundleNotBoundError,
    BundleSignatureError,
    BundleWrongGatewayError,
)

FORMAT = 1  # the outer wire form
PAYLOAD_FORMAT = 2  # 2: bound to an enrolment; 1: unbound (loaded, never enrolled any more)
# Longest validity period a bundle may claim. The bundle is signed when the episode is booked and
# fetched when the router is installed: a courier and a depot shelf take days to a few weeks.
# A month covers that; beyond it the booking (patient, devices) must be re-confirmed and the
# bundle re-issued rather than trusted from a stale document (a 400-day or 10-year bundle is a
# standing credential for a patient who may have left the programme).
MAX_BUNDLE_VALIDITY = timedelta(days=31)
Transport = Literal["ble", "serial"]
_BLE_ADDRESS = re.compile(r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")
_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_SERIAL_ID = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9._:/-]{0,127}$")  # /dev/ttyUSB0 or a device id
_PROFILE = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")
# Clocks on a freshly unboxed router may be a little off before NTP settles.
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class BoundDevice:
    """One device bound to the episode: the daemon reads it and nothing else."""

    transport: Transport
    address: str  # BLE: EUI-48 "AA:BB:CC:DD:EE:FF"; serial: port path or device id
    profile: str  # BLE GATT profile ("thermometer", "blood-pressure") or serial protocol ("astm")
    expected_interval_s: float
    passkey: str | None = field(default=None, repr=False)  # BLE pairing secret: never logged

    def __post_init__(self) -> None:
        if self.transport not in ("ble", "serial"):
            raise ValueError(f"transport must be 'ble' or 'serial', got {self.transport!r}")
        if self.transport == "ble" and not _BLE_ADDRESS.match(self.address):
            raise ValueError(
                f"BLE address must be AA:BB:CC:DD:EE:FF (upper case): {self.address!r}"
            )
        if self.transport == "serial" and not _SERIAL_ID.match(self.address):
            raise ValueError(f"serial device id or port not usable: {self.address!r}")
        if not _PROFILE.match(self.profile):
            raise ValueError(f"profile must be a lower-case name, got {self.profile!r}")
        if not 1 <= self.expected_interval_s <= 7 * 86400:
            raise ValueError("expected_interval_s must be between 1 s and 7 days")
        if self.passkey is not None and (
            self.transport != "ble" or not re.fullmatch(r"\d{6}", self.passkey)
        ):
            raise ValueError("passkey must be 6 digits, and only for a BLE device")

    def matches(self, transport: str, address: str) -> bool:
        return self.transport == transport and self.address.upper() == address.upper()

    def to_json(self) -> dict[str, Any]:
        return {
            "transport": self.transport,
            "address": self.address,
            "profile": self.profile,
            "expected_interval_s": self.expected_interval_s,
            "passkey": self.passkey,
        }

    @classmethod
    def from_json(cls, d: Any) -> BoundDevice:
        if not isinstance(d, dict):
            raise ValueError("a device entry must be an object")  # noqa: TRY004 - bad content
        return cls(
            transport=d["transport"],
            address=str(d["address"]),
            profile=str(d["profile"]),
            expected_interval_s=float(d["expected_interval_s"]),
            passkey=None if d.get("passkey") is None else str(d["passkey"]),
        )


@dataclass(frozen=True, slots=True)
class EnrolmentBundle:
    gateway_id: str
    episode_id: str
    not_before: datetime
    not_after: datetime
    broker_host: str
    broker_port: int
    broker_ca_pem: str
    provider_hpke_public_pem: str
    devices: tuple[BoundDevice, ...]
    tls_key_sha256: str | None = None  # the enrolment it is bound to (payload format 2)
    generation: int = 0
    # A test / demo / training episode: the router labels every Observation HTEST.
    test_episode: bool = False
    # The provider's command key (issue 20): base64 of the raw Ed25519 public key that signs
    # commands for this router. None: the router refuses every command (no-command-key).
    command_key: str | None = None

    def payload_json(self) -> dict[str, Any]:
        bound = self.tls_key_sha256 is not None
        out: dict[str, Any] = {
            "format": PAYLOAD_FORMAT if bound else 1,
            **(
                {"binding": {"tls_key_sha256": self.tls_key_sha256, "generation": self.generation}}
                if bound
                else {}
            ),
            "gateway_id": self.gateway_id,
            "episode_id": self.episode_id,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "broker": {
                "host": self.broker_host,
                "port": self.broker_port,
                "ca_pem": self.broker_ca_pem,
            },
            "provider_hpke_public_pem": self.provider_hpke_public_pem,
            "devices": [d.to_json() for d in self.devices],
        }
        if self.test_episode:  # absent for clinical episodes: older routers read those unchanged
            out["test_episode"] = True
        if self.command_key is not None:  # absent without one: older routers read it unchanged
            out["command_key"] = self.command_key
        return out

    @classmethod
    def from_payload(cls, p: Any) -> EnrolmentBundle:
        if not isinstance(p, dict) or p.get("format") not in (1, PAYLOAD_FORMAT):
            raise ValueError(f"payload format must be 1 or {PAYLOAD_FORMAT}")
        tls_key, generation = None, 0
        if p["format"] == PAYLOAD_FORMAT:
            binding = p["binding"]
            tls_key, generation = str(binding["tls_key_sha256"]), binding["generation"]
            if not re.fullmatch(r"[0-9a-f]{64}", tls_key):
                raise ValueError("binding.tls_key_sha256 must be 64 lower-case hex digits")
            if not isinstance(generation, int) or isinstance(generation, bool) or generation < 1:
                raise ValueError("binding.generation must be a positive integer")
        broker = p["broker"]
        episode = str(p["episode_id"])
        if not _TOKEN.match(episode) or len(episode) > 64:
            raise ValueError("episode_id must be a pseudonym of 1-64 plain characters")
        port = int(broker["port"])
        if not 1 <= port <= 65535:
            raise ValueError("broker port out of range")
        devices = tuple(BoundDevice.from_json(d) for d in p["devices"])
        test_episode = p.get("test_episode", False)
        if not isinstance(test_episode, bool):
            raise TypeError("test_episode must be true or false")
        command_key = p.get("command_key")
        if command_key is not None and not _is_command_key(command_key):
            raise ValueError("command_key must be base64 of a 32-byte Ed25519 public key")
        keys = [(d.transport, d.address.upper()) for d in devices]
        if len(set(keys)) != len(keys):
            raise ValueError("a device is listed twice")
        return cls(
            gateway_id=str(p["gateway_id"]),
            episode_id=episode,
            not_before=_utc(p["not_before"]),
            not_after=_utc(p["not_after"]),
            broker_host=str(broker["host"]),
            broker_port=port,
            broker_ca_pem=str(broker["ca_pem"]),
            provider_hpke_public_pem=str(p["provider_hpke_public_pem"]),
            devices=devices,
            tls_key_sha256=tls_key,
            generation=generation,
            test_episode=test_episode,
            command_key=command_key,
        )


def _is_command_key(value: Any) -> bool:
    if not isinstance(value, str) or len(value) > 64:
        return False
    try:
        return len(base64.b64decode(value, validate=True)) == 32
    except (ValueError, binascii.Error):
        return False


def _utc(text: Any) -> datetime:
    t = datetime.fromisoformat(str(text))
    if t.tzinfo is None:
        raise ValueError("times must carry a UTC offset")
    return t.astimezone(UTC)


def tls_key_sha256(key: ec.EllipticCurvePublicKey) -> str:
    """The binding of a bundle: SHA-256 of the certified TLS key's DER SubjectPublicKeyInfo."""
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


@dataclass(frozen=True, slots=True)
class Binding:
    """What enrolment requires of a bundle: this TLS key, and no older generation."""

    tls_key_sha256: str
    min_generation: int = 1


def sign_bundle(bundle: EnrolmentBundle, key: ed25519.Ed25519PrivateKey) -> bytes:
    """Provider side (the bundle-signing tool and the rig): the wire form of a signed bundle."""
    payload = json.dumps(bundle.payload_json(), sort_keys=True).encode()
    return json.dumps(
        {
            "format": FORMAT,
            "payload": base64.b64encode(payload).decode(),
            "signature": base64.b64encode(key.sign(payload)).decode(),
        }
    ).encode()


def verify_bundle(
    raw: bytes,
    signer: ed25519.Ed25519PublicKey,
    gateway_id: str,
    now: datetime | None = None,
    *,
    check_validity: bool = True,
    binding: Binding | None = None,
) -> EnrolmentBundle:
    """Check signature first (nothing unsigned is even parsed), then gateway, then validity,
    then (enrolment) the binding to this enrolment."""
    try:
        outer = json.loads(raw)
        if not isinstance(outer, dict) or outer.get("format") != FORMAT:
            raise ValueError("unknown outer format")  # noqa: TRY301 - one refusal for all
        payload = base64.b64decode(outer["payload"], validate=True)
        signature = base64.b64decode(outer["signature"], validate=True)
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        raise BundleSignatureError(
            "the enrolment bundle is damaged (not a signed bundle)"
        ) from None
    try:
        signer.verify(signature, payload)
    except InvalidSignature:
        raise BundleSignatureError(
            "the enrolment bundle is not signed by the provider (damaged or forged)"
        ) from None
    try:
        bundle = EnrolmentBundle.from_payload(json.loads(payload))
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise BundleInvalidError(f"the enrolment bundle content is unusable: {exc}") from None
    if bundle.gateway_id != gateway_id:
        raise BundleWrongGatewayError(
            f"the enrolment bundle is for router {bundle.gateway_id}, this is router {gateway_id}",
            bundle_gateway=bundle.gateway_id,
            gateway_id=gateway_id,
        )
    if check_validity:
        now = now or datetime.now(UTC)
        if now + CLOCK_SKEW < bundle.not_before:
            raise BundleExpiredError(
                f"the enrolment bundle is not valid before {bundle.not_before:%Y-%m-%d %H:%M} UTC"
            )
        if now - CLOCK_SKEW > bundle.not_after:
            raise BundleExpiredError(
                f"the enrolment bundle expired on {bundle.not_after:%Y-%m-%d %H:%M} UTC"
            )
        if bundle.not_after - bundle.not_before > MAX_BUNDLE_VALIDITY:
            raise BundleInvalidError(
                f"the enrolment bundle claims {(bundle.not_after - bundle.not_before).days} days "
                f"of validity; at most {MAX_BUNDLE_VALIDITY.days} are accepted"
            )
    if binding is not None:
        _check_binding(bundle, binding)
    return bundle


def _check_binding(bundle: EnrolmentBundle, binding: Binding) -> None:
    if bundle.tls_key_sha256 is None:
        raise BundleNotBoundError(
            "the enrolment bundle is not bound to an enrolment (old format): refused"
        )
    if not hmac.compare_digest(bundle.tls_key_sha256, binding.tls_key_sha256):
        raise BundleNotBoundError(
            "the enrolment bundle was made for another certificate of this router "
            "(a previous episode's?): refused"
        )
    if bundle.generation < binding.min_generation:
        raise BundleNotBoundError(
            f"the enrolment bundle is older (generation {bundle.generation}) than one this "
            f"router already accepted (generation {binding.min_generation}): refused"
        )
