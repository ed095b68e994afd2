"""docs/wire-format.md stays true: its test vector opens and verifies with the code as it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.errors import VerifyError
from gateway.seal import cjson, wire
from gateway.seal.sealing import open_record
from provider import fhir_read
from provider.verifier import Verifier

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC = (DOCS / "wire-format.md").read_text()
VECTORS = dict(re.findall(r"```text vector:(\w+)\n(.*?)\n```", DOC, flags=re.S))
RECORD = bytes.fromhex((DOCS / "vectors" / "observation-record.hex").read_text().strip())
BATCH = bytes.fromhex((DOCS / "vectors" / "observation-batch.hex").read_text().strip())
PLAINTEXT = (DOCS / "vectors" / "observation-plaintext.json").read_bytes()
SIGNING_PUB = ed25519.Ed25519PublicKey.from_public_bytes(
    bytes.fromhex(VECTORS["gateway_ed25519_public_raw"])
)
PROVIDER = x25519.X25519PrivateKey.from_private_bytes(
    bytes.fromhex(VECTORS["provider_x25519_private_raw"])
)


def test_documented_keys_are_consistent() -> None:
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(VECTORS["gateway_ed25519_private_raw"])
    )
    assert priv.public_key() == SIGNING_PUB
    assert PROVIDER.public_key().public_bytes_raw().hex() == VECTORS["provider_x25519_public_raw"]


def test_vector_record_opens_to_the_documented_plaintext() -> None:
    opened = open_record(RECORD, PROVIDER, SIGNING_PUB)
    assert opened.plaintext == PLAINTEXT
    assert opened.record_hash.hex() == VECTORS["record_hash"]
    h = opened.header
    described = (
        f"magic=HCR1 version=1 kind={int(h.kind)} lane={h.lane} flags={h.flags} "
        f"kem={h.kem_id:#06x} kdf={h.kdf_id:#06x} aead={h.aead_id:#06x} epoch={h.epoch} "
        f"seq={h.seq} created_ms={h.created_ms} prev_hash={h.prev_hash.hex()} "
        f"gateway_id={h.gateway_id}"
    )
    assert described == VECTORS["header"]


def test_vector_plaintext_is_canonical_and_maps_to_the_documented_reading() -> None:
    bundle = cjson.loads(PLAINTEXT)
    assert cjson.dumps(bundle) == PLAINTEXT
    (m,) = fhir_read.measurements_from_bundle(bundle)
    assert str(m.value) == "36.60"
    assert m.unit == "Cel"
    assert m.device.value == "A4:C1:38:00:12:34"
    assert m.device_time is not None
    assert m.device_time.isoformat() == "2024-05-01T10:00:00+02:00"


def test_vector_batch_verifies_end_to_end() -> None:
    verifier = Verifier(PROVIDER, {"gw-vector-0001": SIGNING_PUB})
    result = verifier.accept_batch(BATCH, "homecare/v1/gw/gw-vector-0001/records")
    assert result.failures == []
    assert wire.decode_batch(BATCH) == [RECORD]
    assert verifier.summary()["missing"] == 0


@pytest.mark.parametrize("bit", [0, 7])
def test_flipping_any_byte_of_the_vector_fails(bit: int) -> None:
    for pos in range(len(RECORD)):
        tampered = bytearray(RECORD)
        tampered[pos] ^= 1 << bit
        with pytest.raises(VerifyError):
            open_record(bytes(tampered), PROVIDER, SIGNING_PUB)
