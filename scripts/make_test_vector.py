"""Regenerate the test vector of docs/wire-format.md (section 8).

HPKE encryption is randomised, so each run gives different record bytes; run it only when the
plaintext format changes, then commit the files it writes and the hash it prints into the document.
Usage: .venv/bin/python -m scripts.make_test_vector [staged]
(``staged``: only the staged-chunk vector of section 8.1, chained to the observation vector as
it is.)
"""

from __future__ import annotations

import hashlib
import re
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.fhir import codes
from gateway.fhir import observation as fhir
from gateway.model import DeviceId, DeviceIdKind, TimeQuality
from gateway.seal import cjson, staged, wire
from gateway.seal.sealing import RecordSealer
from tests.factories import RECEIVED_AT, make_gateway_info, make_measurement

DOCS = Path(__file__).resolve().parent.parent / "docs"
SIGNING = ed25519.Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"homecare-gateway test vector: gateway identity").digest()
)
PROVIDER = x25519.X25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"homecare-gateway test vector: provider hpke").digest()
)
GATEWAY_ID = "gw-vector-0001"
CREATED_MS = 1714550405250
CHUNK_ID = hashlib.sha256(b"homecare-gateway test vector: chunk id").digest()[:16]
CHUNK_KEY = hashlib.sha256(b"homecare-gateway test vector: chunk key").digest()
OXIMETER = DeviceId(DeviceIdKind.SERIAL, "501234567")


def _set_vector(text: str, name: str, value: str) -> str:
    return re.sub(
        rf"(```text vector:{name}\n)[^\n]*\n", lambda m: m.group(1) + value + "\n", text
    )


def staged_vector(sealer: RecordSealer, prev_hash: bytes, text: str) -> str:
    """Section 8.1: a staged-chunk record of two SpO2 readings (seq 2, after the first vector)."""
    gw = make_gateway_info(gateway_id=GATEWAY_ID, episode_id="ep-vector")
    readings = [
        make_measurement(
            device=OXIMETER,
            mdc_code=codes.MDC_PULS_OXIM_SAT_O2,
            value=Decimal(v),
            unit="%",
            received_at=RECEIVED_AT + timedelta(seconds=i),
            source="serial.nonin",
            raw=b"",
            device_time=None,
            time_quality=TimeQuality.ABSENT,
            supplemental="interval",
        )
        for i, v in enumerate(("97", "96"))
    ]
    wrapped = sealer.wrap_key(CHUNK_KEY, staged.key_info(CHUNK_ID, GATEWAY_ID))
    header = staged.ChunkHeader(CHUNK_ID, CREATED_MS - 30_000, sealer.kem_id, wrapped)
    cipher = staged.ChunkCipher(header, CHUNK_KEY)
    vectors = DOCS / "vectors"
    rows = []
    for n, m in enumerate(readings):
        plain = cjson.dumps(fhir.bundle([m], gw), float_free=True)
        (vectors / f"staged-row-{n}.json").write_bytes(plain)
        rows.append(cipher.encrypt(n, plain))
    body = staged.recovered_body(header, rows, 2, RECEIVED_AT + timedelta(seconds=60))
    plaintext = cjson.dumps(body)
    record = sealer.seal(
        plaintext,
        kind=wire.RecordKind.STAGED_CHUNK,
        lane=2,
        epoch=1,
        seq=2,
        prev_hash=prev_hash,
        created_ms=CREATED_MS + 60_000,
    )
    (vectors / "staged-chunk-plaintext.json").write_bytes(plaintext)
    (vectors / "staged-chunk-record.hex").write_text(record.hex() + "\n")
    text = _set_vector(text, "staged_record_hash", wire.record_hash(record).hex())
    return _set_vector(text, "staged_chunk_key", CHUNK_KEY.hex())


def main() -> None:
    gw = make_gateway_info(gateway_id=GATEWAY_ID, episode_id="ep-vector")
    plaintext = cjson.dumps(fhir.bundle([make_measurement()], gw))
    sealer = RecordSealer(GATEWAY_ID, SIGNING, PROVIDER.public_key())
    record = sealer.seal(
        plaintext,
        kind=wire.RecordKind.OBSERVATIONS,
        lane=1,
        epoch=1,
        seq=1,
        prev_hash=wire.GENESIS_HASH,
        created_ms=CREATED_MS,
    )
    vectors = DOCS / "vectors"
    (vectors / "observation-plaintext.json").write_bytes(plaintext)
    (vectors / "observation-record.hex").write_text(record.hex() + "\n")
    (vectors / "observation-batch.hex").write_text(wire.encode_batch([record]).hex() + "\n")
    doc = DOCS / "wire-format.md"
    text = doc.read_text()
    text = re.sub(
        r"(```text vector:record_hash\n)[^\n]*\n",
        lambda m: m.group(1) + wire.record_hash(record).hex() + "\n",
        text,
    )
    text = staged_vector(sealer, wire.record_hash(record), text)
    doc.write_text(text)
    print(f"record {len(record)} bytes, plaintext {len(plaintext)} bytes")


def main_staged() -> None:
    sealer = RecordSealer(GATEWAY_ID, SIGNING, PROVIDER.public_key())
    first = bytes.fromhex((DOCS / "vectors" / "observation-record.hex").read_text().strip())
    doc = DOCS / "wire-format.md"
    doc.write_text(staged_vector(sealer, wire.record_hash(first), doc.read_text()))


if __name__ == "__main__":
    main_staged() if sys.argv[1:] == ["staged"] else main()
