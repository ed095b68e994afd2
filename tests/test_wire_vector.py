"""docs/wire-format.md stays true: every test vector opens and verifies with the code as it is,
with an independent receiver written from the document alone, and every documented failure
reason is what the reference receiver reports."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import zlib
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.errors import VerifyError
from gateway.seal import cjson, staged, wire
from gateway.seal.sealing import (
    AEAD_AES_256_GCM,
    KDF_HKDF_SHA256,
    MAX_PLAINTEXT_BYTES,
    hpke_suite,
    open_record,
    provider_private_key,
)
from gateway.seal.sealing import SuiteName as Suite
from provider import fhir_read
from provider.verifier import Verifier

DOCS = Path(__file__).resolve().parent.parent / "docs"
DOC = (DOCS / "wire-format.md").read_text()
VECTORS = dict(re.findall(r"```text vector:(\w+)\n(.*?)\n```", DOC, flags=re.S))
CHAIN = ("observation", "health", "gap", "event")
NAMES = (*CHAIN, "pq-observation")
GW, PQ_GW = "gw-vector-0001", "gw-vector-0002"


def _hex(name: str) -> bytes:
    return bytes.fromhex((DOCS / "vectors" / name).read_text().strip())


RECORDS = {name: _hex(f"{name}-record.hex") for name in NAMES}
PLAINTEXTS = {name: (DOCS / "vectors" / f"{name}-plaintext.json").read_bytes() for name in NAMES}
SIGNING_PUB = ed25519.Ed25519PublicKey.from_public_bytes(
    bytes.fromhex(VECTORS["gateway_ed25519_public_raw"])
)
PROVIDER = x25519.X25519PrivateKey.from_private_bytes(
    bytes.fromhex(VECTORS["provider_x25519_private_raw"])
)
MLKEM = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes.fromhex(VECTORS["provider_mlkem768_seed"]))
HYBRID = provider_private_key(PROVIDER, MLKEM)


def _key_for(name: str) -> x25519.X25519PrivateKey | object:
    return HYBRID if name.startswith("pq-") else PROVIDER


def _describe(h: wire.RecordHeader) -> str:
    return (
        f"magic=HCR1 version=1 kind={int(h.kind)} lane={h.lane} flags={h.flags} "
        f"kem={h.kem_id:#06x} kdf={h.kdf_id:#06x} aead={h.aead_id:#06x} epoch={h.epoch} "
        f"seq={h.seq} created_ms={h.created_ms} prev_hash={h.prev_hash.hex()} "
        f"gateway_id={h.gateway_id}"
    )


def test_documented_keys_are_consistent() -> None:
    priv = ed25519.Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(VECTORS["gateway_ed25519_private_raw"])
    )
    assert priv.public_key() == SIGNING_PUB
    assert PROVIDER.public_key().public_bytes_raw().hex() == VECTORS["provider_x25519_public_raw"]
    assert (
        MLKEM.public_key().public_bytes_raw().hex() == VECTORS["provider_mlkem768_public_raw"]
    )
    derive = hashlib.sha512(b"homecare-gateway test vector: provider ml-kem-768").hexdigest()
    assert VECTORS["provider_mlkem768_seed"] == derive


@pytest.mark.parametrize("name", NAMES)
def test_each_vector_opens_to_its_documented_plaintext_header_and_hash(name: str) -> None:
    opened = open_record(RECORDS[name], _key_for(name), SIGNING_PUB)  # type: ignore[arg-type]
    label = name.replace("-", "_")
    assert opened.plaintext == PLAINTEXTS[name]
    assert cjson.dumps(cjson.loads(PLAINTEXTS[name])) == PLAINTEXTS[name]  # canonical
    assert opened.record_hash.hex() == VECTORS[f"{label}_record_hash"]
    assert _describe(opened.header) == VECTORS[f"{label}_header"]


def test_the_vectors_cover_every_kind_both_suites_and_an_uncompressed_record() -> None:
    headers = {n: wire.parse_record(r).header for n, r in RECORDS.items()}
    headers["staged-chunk"] = wire.parse_record(_hex("staged-chunk-record.hex")).header  # 8.1
    assert {int(h.kind) for h in headers.values()} == {int(k) for k in wire.RecordKind}
    assert {h.kem_id for h in headers.values()} == {0x0020, 0x647A}
    assert {h.flags for h in headers.values()} == {0, wire.FLAG_ZLIB}
    assert max(h.seq for h in headers.values()) > 1


def test_the_chain_vectors_link_one_to_the_next() -> None:
    prev = wire.GENESIS_HASH
    for seq, name in enumerate(CHAIN, start=1):
        header = wire.parse_record(RECORDS[name]).header
        assert (header.seq, header.prev_hash, header.gateway_id) == (seq, prev, GW)
        prev = wire.record_hash(RECORDS[name])


def test_the_observation_vector_maps_to_the_documented_reading() -> None:
    for name in ("observation", "pq-observation"):
        (m,) = fhir_read.measurements_from_bundle(cjson.loads(PLAINTEXTS[name]))
        assert (str(m.value), m.unit, m.device.value) == ("36.60", "Cel", "A4:C1:38:00:12:34")
        assert m.device_time is not None
        assert m.device_time.isoformat() == "2024-05-01T10:00:00+02:00"


def test_the_health_vector_reports_the_sequence_before_its_own() -> None:
    body = cjson.loads(PLAINTEXTS["health"])
    assert body["outbox"]["last_seq"] == 1 < wire.parse_record(RECORDS["health"]).header.seq


def test_the_batches_verify_end_to_end_on_their_topics() -> None:
    verifier = Verifier(PROVIDER, {GW: SIGNING_PUB})
    topic = f"homecare/v1/gw/{GW}"
    one = verifier.accept_batch(_hex("observation-batch.hex"), f"{topic}/records")
    health = wire.encode_batch([RECORDS["health"]])
    two = verifier.accept_batch(health, f"{topic}/health")
    alarms = _hex("alarm-batch.hex")
    assert wire.decode_batch(alarms) == [RECORDS["gap"], RECORDS["event"]]
    three = verifier.accept_batch(alarms, f"{topic}/records")
    assert [r.failures for r in (one, two, three)] == [[], [], []]
    summary = verifier.summary()
    assert (summary["records"], summary["missing"], summary["chain_breaks"]) == (4, 0, 0)
    pq = Verifier(HYBRID, {PQ_GW: SIGNING_PUB})
    result = pq.accept_batch(wire.encode_batch([RECORDS["pq-observation"]]),
                             f"homecare/v1/gw/{PQ_GW}/records")
    assert result.failures == []
    assert pq.summary()["readings"] == 1


@pytest.mark.parametrize("name", NAMES)
def test_flipping_any_bit_of_any_vector_fails(name: str) -> None:
    record, key = RECORDS[name], _key_for(name)
    for pos in range(len(record)):
        for bit in (0, 7):
            tampered = bytearray(record)
            tampered[pos] ^= 1 << bit
            with pytest.raises(VerifyError):
                open_record(bytes(tampered), key, SIGNING_PUB)  # type: ignore[arg-type]


# --- a receiver written from the document alone (sections 2, 3, 3.1, 3.2, 3.3) ------------------


def _labeled_extract(suite_id: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hmac.new(salt or bytes(32), b"HPKE-v1" + suite_id + label + ikm, "sha256").digest()


def _labeled_expand(suite_id: bytes, prk: bytes, label: bytes, info: bytes, n: int) -> bytes:
    labeled = n.to_bytes(2, "big") + b"HPKE-v1" + suite_id + label + info
    out, block, i = b"", b"", 1
    while len(out) < n:  # RFC 5869 expand; n <= 32 here, so at most one round
        block = hmac.new(prk, block + labeled + bytes([i]), "sha256").digest()
        out, i = out + block, i + 1
    return out[:n]


def _doc_open(record: bytes) -> bytes:
    """Verify and open one record following docs/wire-format.md, with no gateway code."""
    gid_len = record[66]
    header = record[: 67 + gid_len]
    n = int.from_bytes(record[67 + gid_len : 71 + gid_len], "big")
    ct = record[71 + gid_len : 71 + gid_len + n]
    signature = record[71 + gid_len + n :]
    assert len(signature) == 64
    signed = b"homecare-gateway/record/v1/sig\x00" + record[: 71 + gid_len + n]
    SIGNING_PUB.verify(signature, signed)
    kem = int.from_bytes(record[8:10], "big")
    if kem == 0x0020:  # RFC 9180 DHKEM(X25519, HKDF-SHA256)
        enc, sealed = ct[:32], ct[32:]
        dh = PROVIDER.exchange(x25519.X25519PublicKey.from_public_bytes(enc))
        kem_ctx = enc + PROVIDER.public_key().public_bytes_raw()
        kem_id = b"KEM" + kem.to_bytes(2, "big")
        eae_prk = _labeled_extract(kem_id, b"", b"eae_prk", dh)
        shared = _labeled_expand(kem_id, eae_prk, b"shared_secret", kem_ctx, 32)
    else:  # section 3.2: MLKEM768-X25519
        assert kem == 0x647A
        enc, sealed = ct[:1120], ct[1120:]
        ct_m, ct_x = enc[:1088], enc[1088:]
        ss_m = MLKEM.decapsulate(ct_m)
        ss_x = PROVIDER.exchange(x25519.X25519PublicKey.from_public_bytes(ct_x))
        pk_x = PROVIDER.public_key().public_bytes_raw()
        label = bytes.fromhex("5c2e2f2f5e5c")  # the ASCII label \.//^\
        shared = hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + label).digest()
    suite_id = b"HPKE" + record[8:14]
    info = b"homecare-gateway/record/v1/hpke\x00" + header
    context = (
        b"\x00"
        + _labeled_extract(suite_id, b"", b"psk_id_hash", b"")
        + _labeled_extract(suite_id, b"", b"info_hash", info)
    )
    secret = _labeled_extract(suite_id, shared, b"secret", b"")
    key = _labeled_expand(suite_id, secret, b"key", context, 32)
    nonce = _labeled_expand(suite_id, secret, b"base_nonce", context, 12)
    body = AESGCM(key).decrypt(nonce, sealed, b"")
    return zlib.decompress(body) if record[7] & 1 else body


@pytest.mark.parametrize("name", NAMES)
def test_a_receiver_built_from_the_document_opens_every_vector(name: str) -> None:
    assert _doc_open(RECORDS[name]) == PLAINTEXTS[name]
    assert hashlib.sha256(RECORDS[name]).hexdigest() == VECTORS[
        f"{name.replace('-', '_')}_record_hash"
    ]


def test_the_documented_context_strings_are_what_the_code_uses() -> None:
    assert wire.SIGNING_CONTEXT == b"homecare-gateway/record/v1/sig" + b"\x00"
    assert len(wire.SIGNING_CONTEXT) == 31
    assert len(wire.HPKE_INFO_CONTEXT) == 32
    text = " ".join(DOC.split())
    assert "31 bytes of context" in text
    assert "32 bytes of context" in text


# --- every documented failure reason -----------------------------------------------------------

SIGNING = ed25519.Ed25519PrivateKey.from_private_bytes(
    bytes.fromhex(VECTORS["gateway_ed25519_private_raw"])
)


def _seal_raw(body: bytes, *, flags: int, kind: int = 4, lane: int = 0) -> bytes:
    """A correctly signed and encrypted record around ``body`` exactly (no compression step)."""
    header = wire.RecordHeader(
        kind=wire.RecordKind(kind), lane=lane, flags=flags, kem_id=0x0020,
        kdf_id=KDF_HKDF_SHA256, aead_id=AEAD_AES_256_GCM, epoch=1, seq=9,
        created_ms=1714550405250, prev_hash=bytes(32), gateway_id=GW,
    )
    ct = hpke_suite(Suite.X25519).encrypt(body, PROVIDER.public_key(), info=header.hpke_info())
    signature = SIGNING.sign(wire.SIGNING_CONTEXT + wire.signed_part(header, ct))
    return wire.assemble(header, ct, signature)


def _reason(record: bytes, topic: str = f"homecare/v1/gw/{GW}/records") -> str:
    result = Verifier(PROVIDER, {GW: SIGNING_PUB}).accept_batch(wire.encode_batch([record]), topic)
    assert len(result.failures) == 1
    return result.failures[0].reason


def _with_byte(record: bytes, offset: int, value: int) -> bytes:
    return record[:offset] + bytes([value]) + record[offset + 1 :]


EVENT = RECORDS["event"]
JSON = b'{"event":"x","type":"event","version":1}'
BOMB = zlib.compress(b" " * (MAX_PLAINTEXT_BYTES + 1))  # 16 MiB and one byte, inflated


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_with_byte(EVENT, 5, 9), "unknown-kind"),
        (_with_byte(EVENT, 6, 4), "unknown-lane"),
        (_with_byte(EVENT, 6, 3), "kind-lane-mismatch"),  # an event in the health lane
        (_with_byte(EVENT, 7, 0x02), "reserved-flags"),
        (_with_byte(EVENT, 7, 0x81), "reserved-flags"),  # zlib plus a reserved bit
        (_with_byte(EVENT, 4, 2), "version"),
        (EVENT[:-1], "malformed"),
        (_seal_raw(zlib.compress(JSON)[:-3], flags=1), "bad-compression"),  # truncated stream
        (_seal_raw(zlib.compress(JSON) + b"\x00", flags=1), "bad-compression"),  # data after it
        (_seal_raw(b"\x78\x9c garbage", flags=1), "bad-compression"),
        (_seal_raw(BOMB, flags=1), "plaintext-too-large"),
        (_seal_raw(b"not json", flags=0), "malformed-plaintext"),
    ],
)
def test_each_documented_failure_reason(record: bytes, reason: str) -> None:
    assert _reason(record) == reason
    assert f"`{reason}`" in DOC


def test_a_kind_on_the_other_topic_is_a_topic_mismatch() -> None:
    health, event = RECORDS["health"], RECORDS["event"]
    assert _reason(health, f"homecare/v1/gw/{GW}/records") == "topic-mismatch"
    assert _reason(event, f"homecare/v1/gw/{GW}/health") == "topic-mismatch"
    assert _reason(event, "homecare/v1/gw/gw-other/records") == "topic-mismatch"


def test_a_well_formed_uncompressed_record_opens() -> None:
    record = _seal_raw(JSON, flags=0)
    assert open_record(record, PROVIDER, SIGNING_PUB).plaintext == JSON


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('"\\', '"\\"\\\\"'),
        ("\b\t\n\f\r", '"\\b\\t\\n\\f\\r"'),
        ("\x00\x1f\x7f", '"\\u0000\\u001f\\u007f"'),  # DEL escaped by both encoders
        ("é/", '"\\u00e9/"'),
        ("\U0001f600", '"\\ud83d\\ude00"'),
    ],
)
def test_canonical_json_escapes_strings_as_documented(text: str, written: str) -> None:
    """Section 3.4; the fast encoder and the reference agree on every ASCII character."""
    assert cjson.dumps([text]) == cjson.dumps_reference([text]) == f"[{written}]".encode()
    for c in range(0x80):
        assert cjson.dumps({chr(c): chr(c)}) == cjson.dumps_reference({chr(c): chr(c)})


def test_canonical_json_sorts_keys_by_code_point_and_keeps_decimal_digits() -> None:
    assert cjson.dumps({"\U0001f600": 1, "\uffff": 2, "b": 3, "a": 4}) == (
        b'{"a":4,"b":3,"\\uffff":2,"\\ud83d\\ude00":1}'
    )
    assert cjson.dumps([Decimal("36.60"), Decimal("1E+2"), Decimal("1E-7"), 10**20]) == (
        b"[36.60,1E+2,1E-7,100000000000000000000]"
    )


# -- section 8.1: the staged-chunk record ---------------------------------------------------

STAGED_RECORD = _hex("staged-chunk-record.hex")
STAGED_PLAINTEXT = (DOCS / "vectors" / "staged-chunk-plaintext.json").read_bytes()
STAGED_ROWS = [(DOCS / "vectors" / f"staged-row-{n}.json").read_bytes() for n in range(2)]


def test_staged_vector_opens_unwraps_and_yields_the_documented_readings() -> None:
    opened = open_record(STAGED_RECORD, PROVIDER, SIGNING_PUB)
    assert opened.header.kind is wire.RecordKind.STAGED_CHUNK
    assert (opened.header.lane, opened.header.seq) == (2, 5)
    assert opened.header.prev_hash.hex() == VECTORS["event_record_hash"]  # chained after it
    assert opened.record_hash.hex() == VECTORS["staged_record_hash"]
    assert opened.plaintext == STAGED_PLAINTEXT
    body = cjson.loads(STAGED_PLAINTEXT)
    assert cjson.dumps(body) == STAGED_PLAINTEXT
    key = hpke_suite(Suite.X25519).decrypt(
        base64.b64decode(body["key"]),
        PROVIDER,
        info=staged.key_info(bytes.fromhex(body["chunk"]), "gw-vector-0001"),
    )
    assert key.hex() == VECTORS["staged_chunk_key"]
    rows = staged.open_rows(body, PROVIDER, Suite.X25519, "gw-vector-0001")
    assert rows == STAGED_ROWS
    values = [
        (str(m.value), m.unit, m.supplemental)
        for row in rows
        for m in fhir_read.measurements_from_bundle(cjson.loads(row))
    ]
    assert values == [("97", "%", "interval"), ("96", "%", "interval")]


def test_a_version_2_staged_row_opens_with_row_0_as_its_dictionary() -> None:
    """Section 8.1, rows version 2, with no gateway code: AES-GCM under K, then inflate with
    row 0 as the preset dictionary; without it the stream does not inflate."""
    ct = _hex("staged-row-1-v2.hex")
    chunk_id = bytes.fromhex(cjson.loads(STAGED_PLAINTEXT)["chunk"])
    nonce = bytes(4) + (1).to_bytes(8, "big")
    aad = b"homecare-gateway/staged/v1/row\x00" + chunk_id + (1).to_bytes(8, "big")
    packed = AESGCM(bytes.fromhex(VECTORS["staged_chunk_key"])).decrypt(nonce, ct, aad)
    assert int.from_bytes(packed[2:6], "big") == zlib.adler32(STAGED_ROWS[0])  # FDICT, DICTID
    assert zlib.decompressobj(zdict=STAGED_ROWS[0]).decompress(packed) == STAGED_ROWS[1]
    with pytest.raises(zlib.error):
        zlib.decompress(packed)
    assert len(ct) < len(STAGED_ROWS[1]) // 10


def test_staged_vector_verifies_after_the_chain_of_section_8() -> None:
    verifier = Verifier(PROVIDER, {"gw-vector-0001": SIGNING_PUB})
    for name in CHAIN:
        verifier.accept_record(RECORDS[name])
    verified = verifier.accept_record(STAGED_RECORD)
    assert len(verified.measurements) == 2
    summary = verifier.summary()
    assert (summary["missing"], summary["chain_breaks"], summary["failures"]) == (0, 0, {})
