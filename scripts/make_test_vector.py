"""Regenerate the test vector of docs/wire-format.md (section 8).

HPKE encryption is randomised, so each run gives different record bytes; run it only when the
plaintext format changes, then commit the files it writes and the hash it prints into the document.
Usage: .venv/bin/python -m scripts.make_test_vector
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from gateway.fhir import observation as fhir
from gateway.seal import cjson, wire
from gateway.seal.sealing import RecordSealer
from tests.factories import make_gateway_info, make_measurement

DOCS = Path(__file__).resolve().parent.parent / "docs"
SIGNING = ed25519.Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"homecare-gateway test vector: gateway identity").digest()
)
PROVIDER = x25519.X25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"homecare-gateway test vector: provider hpke").digest()
)
GATEWAY_ID = "gw-vector-0001"
CREATED_MS = 1714550405250


def main() -> None:
    gw = make_gateway_info(gateway_id=GATEWAY_ID, episode_id="ep-vector")
    plaintext = cjson.dumps(fhir.bundle([make_measurement()], gw))
    record = RecordSealer(GATEWAY_ID, SIGNING, PROVIDER.public_key()).seal(
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
    doc.write_text(text)
    print(f"record {len(record)} bytes, plaintext {len(plaintext)} bytes")


if __name__ == "__main__":
    main()
