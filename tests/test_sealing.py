"""Sealing, opening and the hash chain: authenticity, confidentiality and completeness."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import VerifyError
from gateway.seal import wire
from gateway.seal.sealing import (
    RecordSealer,
    SuiteName,
    open_record,
    provider_private_key,
    provider_public_key,
)
from provider.chain import ChainTracker

SIGNING = ed25519.Ed25519PrivateKey.generate()
PROVIDER = x25519.X25519PrivateKey.generate()


def seal_chain(sealer: RecordSealer, plaintexts: list[bytes], epoch: int = 1) -> list[bytes]:
    out, prev = [], wire.GENESIS_HASH
    for i, pt in enumerate(plaintexts, start=1):
        rec = sealer.seal(
            pt,
            kind=wire.RecordKind.OBSERVATIONS,
            lane=1,
            epoch=epoch,
            seq=i,
            prev_hash=prev,
            created_ms=1_700_000_000_000 + i,
        )
        prev = wire.record_hash(rec)
        out.append(rec)
    return out


@pytest.fixture
def sealer() -> RecordSealer:
    return RecordSealer("gw-test-1", SIGNING, PROVIDER.public_key())


def test_round_trip_returns_plaintext_and_header(sealer: RecordSealer) -> None:
    plaintext = b'{"resourceType":"Bundle"}' * 10
    rec = seal_chain(sealer, [plaintext])[0]
    opened = open_record(rec, PROVIDER, SIGNING.public_key())
    assert opened.plaintext == plaintext
    assert opened.header.seq == 1
    assert opened.header.gateway_id == "gw-test-1"
    assert opened.header.prev_hash == wire.GENESIS_HASH
    assert opened.header.flags == wire.FLAG_ZLIB  # repetitive plaintext was compressed
    assert opened.record_hash == wire.record_hash(rec)


def test_record_does_not_contain_plaintext(sealer: RecordSealer) -> None:
    marker = b"MARKER-36.6-Cel"
    rec = seal_chain(sealer, [marker + b"x" * 10])[0]
    assert marker not in rec


def test_every_single_byte_change_is_detected(sealer: RecordSealer) -> None:
    rec = seal_chain(sealer, [b'{"value": 37.2}'])[0]
    for pos in range(len(rec)):
        tampered = bytearray(rec)
        tampered[pos] ^= 0x01
        with pytest.raises(VerifyError):
            open_record(bytes(tampered), PROVIDER, SIGNING.public_key())


def test_truncation_and_extension_are_detected(sealer: RecordSealer) -> None:
    rec = seal_chain(sealer, [b"hello"])[0]
    for cut in (1, 10, 64, len(rec) - 1):
        with pytest.raises(VerifyError):
            open_record(rec[:cut], PROVIDER, SIGNING.public_key())
    with pytest.raises(VerifyError):
        open_record(rec + b"\x00", PROVIDER, SIGNING.public_key())


def test_wrong_gateway_key_is_a_signature_failure(sealer: RecordSealer) -> None:
    rec = seal_chain(sealer, [b"hello"])[0]
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(VerifyError) as err:
        open_record(rec, PROVIDER, other)
    assert err.value.reason == "bad-signature"


def test_wrong_provider_key_cannot_decrypt(sealer: RecordSealer) -> None:
    rec = seal_chain(sealer, [b"hello"])[0]
    with pytest.raises(VerifyError) as err:
        open_record(rec, x25519.X25519PrivateKey.generate(), SIGNING.public_key())
    assert err.value.reason == "decrypt-failed"


def test_resigned_ciphertext_under_other_header_does_not_decrypt(sealer: RecordSealer) -> None:
    """A holder of the signing key cannot move a ciphertext under another sequence number."""
    rec = seal_chain(sealer, [b"reading"])[0]
    parts = wire.parse_record(rec)
    hdr = parts.header
    moved = wire.RecordHeader(
        kind=hdr.kind,
        lane=hdr.lane,
        flags=hdr.flags,
        kem_id=hdr.kem_id,
        kdf_id=hdr.kdf_id,
        aead_id=hdr.aead_id,
        epoch=hdr.epoch,
        seq=hdr.seq + 1,
        created_ms=hdr.created_ms,
        prev_hash=hdr.prev_hash,
        gateway_id=hdr.gateway_id,
    )
    sig = SIGNING.sign(wire.SIGNING_CONTEXT + wire.signed_part(moved, parts.ciphertext))
    forged = wire.assemble(moved, parts.ciphertext, sig)
    with pytest.raises(VerifyError) as err:
        open_record(forged, PROVIDER, SIGNING.public_key())
    assert err.value.reason == "decrypt-failed"


def test_post_quantum_hybrid_suite_round_trips() -> None:
    mk = mlkem.MLKEM768PrivateKey.generate()
    sealer = RecordSealer(
        "gw-pq", SIGNING, provider_public_key(PROVIDER.public_key(), mk.public_key())
    )
    assert sealer.suite_name is SuiteName.MLKEM768_X25519
    rec = seal_chain(sealer, [b"pq reading"])[0]
    assert wire.parse_record(rec).header.kem_id == 0x647A
    opened = open_record(rec, provider_private_key(PROVIDER, mk), SIGNING.public_key())
    assert opened.plaintext == b"pq reading"
    with pytest.raises(VerifyError) as err:  # a receiver set up for X25519 only says so
        open_record(rec, PROVIDER, SIGNING.public_key())
    assert err.value.reason == "suite-mismatch"


def test_chain_reports_exactly_the_missing_sequence_numbers(sealer: RecordSealer) -> None:
    records = seal_chain(sealer, [f"r{i}".encode() for i in range(1, 11)])
    tracker = ChainTracker()
    for i, rec in enumerate(records, start=1):
        if i in (3, 7, 8):
            continue
        opened = open_record(rec, PROVIDER, SIGNING.public_key())
        tracker.add(opened.header, opened.record_hash)
    assert tracker.missing("gw-test-1", 1) == [3, 7, 8]
    assert tracker.breaks == []
    assert tracker.missing("gw-test-1", 1, upto=12) == [3, 7, 8, 11, 12]


def test_chain_accepts_out_of_order_and_counts_duplicates(sealer: RecordSealer) -> None:
    records = seal_chain(sealer, [b"a", b"b", b"c"])
    tracker = ChainTracker()
    for rec in (records[2], records[0], records[1], records[1]):
        opened = open_record(rec, PROVIDER, SIGNING.public_key())
        tracker.add(opened.header, opened.record_hash)
    assert tracker.missing("gw-test-1", 1) == []
    assert tracker.duplicates == 1
    assert tracker.breaks == []


def test_chain_detects_a_replaced_record(sealer: RecordSealer) -> None:
    """Seq 2 re-sealed with different content (validly signed) breaks the link from seq 3."""
    good = seal_chain(sealer, [b"a", b"b", b"c"])
    forged_2 = sealer.seal(
        b"B",
        kind=wire.RecordKind.OBSERVATIONS,
        lane=1,
        epoch=1,
        seq=2,
        prev_hash=wire.record_hash(good[0]),
        created_ms=1,
    )
    tracker = ChainTracker()
    for rec in (good[0], forged_2, good[2]):
        opened = open_record(rec, PROVIDER, SIGNING.public_key())
        tracker.add(opened.header, opened.record_hash)
    assert [b.seq for b in tracker.breaks] == [3]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_a_typed_error(data: bytes) -> None:
    with pytest.raises(VerifyError):
        open_record(data, PROVIDER, SIGNING.public_key())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_batches_give_records_or_a_typed_error(data: bytes) -> None:
    try:
        records = wire.decode_batch(data)
    except VerifyError:
        return
    assert wire.encode_batch(records) == data


def test_batch_round_trip() -> None:
    recs = [b"a", b"bb" * 100, b"c"]
    assert wire.decode_batch(wire.encode_batch(recs)) == recs
