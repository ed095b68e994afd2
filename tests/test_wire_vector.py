"""docs/wire-format.md stays true: its test vector opens and verifies with the code as it is."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.errors import VerifyError
from gateway.seal import cjson, staged, wire
from gateway.seal.sealing import SuiteName, hpke_suite, open_record
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


# -- section 8.1: the staged-chunk record ---------------------------------------------------

STAGED_RECORD = bytes.fromhex((DOCS / "vectors" / "staged-chunk-record.hex").read_text().strip())
STAGED_PLAINTEXT = (DOCS / "vectors" / "staged-chunk-plaintext.json").read_bytes()
STAGED_ROWS = [(DOCS / "vectors" / f"staged-row-{n}.json").read_bytes() for n in range(2)]


def test_staged_vector_opens_unwraps_and_yields_the_documented_readings() -> None:
    opened = open_record(STAGED_RECORD, PROVIDER, SIGNING_PUB)
    assert opened.header.kind is wire.RecordKind.STAGED_CHUNK
    assert (opened.header.lane, opened.header.seq) == (2, 2)
    assert opened.header.prev_hash.hex() == VECTORS["record_hash"]  # chained to the first one
    assert opened.record_hash.hex() == VECTORS["staged_record_hash"]
    assert opened.plaintext == STAGED_PLAINTEXT
    body = cjson.loads(STAGED_PLAINTEXT)
    assert cjson.dumps(body) == STAGED_PLAINTEXT
    wrapped = base64.b64decode(body["key"])
    key = hpke_suite(SuiteName.X25519).decrypt(
        wrapped, PROVIDER, info=staged.key_info(bytes.fromhex(body["chunk"]), "gw-vector-0001")
    )
    assert key.hex() == VECTORS["staged_chunk_key"]
    rows = staged.open_rows(body, PROVIDER, SuiteName.X25519, "gw-vector-0001")
    assert rows == STAGED_ROWS
    values = [
        (str(m.value), m.unit, m.supplemental)
        for row in rows
        for m in fhir_read.measurements_from_bundle(cjson.loads(row))
    ]
    assert values == [("97", "%", "interval"), ("96", "%", "interval")]


def test_staged_vector_verifies_after_the_first_in_one_chain() -> None:
    verifier = Verifier(PROVIDER, {"gw-vector-0001": SIGNING_PUB})
    result = verifier.accept_batch(
        wire.encode_batch([RECORD, STAGED_RECORD]), "homecare/v1/gw/gw-vector-0001/records"
    )
    assert result.failures == []
    assert [len(r.measurements) for r in result.records] == [1, 2]
    summary = verifier.summary()
    assert (summary["missing"], summary["chain_breaks"]) == (0, 0)
