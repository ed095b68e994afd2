"""Regenerate the test vectors of docs/wire-format.md (section 8) from fixed throwaway keys.

HPKE encryption is randomised, so each run gives different record bytes: regenerate a vector only
when its plaintext format changes, then commit the files this writes and the document it updates
(header lines and record hashes). The records form one chain: observation (seq 1), health (2),
gap (3), event (4, uncompressed); ``alarm-batch`` holds the gap and event records (one lane, two
records); ``pq-observation`` is the first record of a second gateway that uses the post-quantum
hybrid suite; ``staged-chunk`` (seq 5, after the event record) is a recovered stream chunk of two
staged rows (section 8.1). A vector not named on the command line is read back from its file, so
the chain stays linked to the records already published.

Usage: .venv/bin/python -m scripts.make_test_vector [observation health gap event pq-observation
staged-chunk] (no names: all of them)
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519, mlkem, x25519

from gateway.fhir import codes
from gateway.fhir import observation as fhir
from gateway.model import DeviceId, DeviceIdKind, TimeQuality
from gateway.seal import cjson, sealing, staged, wire
from gateway.seal.sealing import RecordSealer, provider_public_key
from tests.factories import RECEIVED_AT, make_gateway_info, make_measurement

DOCS = Path(__file__).resolve().parent.parent / "docs"
VECTORS = DOCS / "vectors"
SIGNING = ed25519.Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"homecare-gateway test vector: gateway identity").digest()
)
PROVIDER = x25519.X25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"homecare-gateway test vector: provider hpke").digest()
)
# ML-KEM-768 private keys are a 64-byte seed (FIPS 203 d || z).
PROVIDER_MLKEM = mlkem.MLKEM768PrivateKey.from_seed_bytes(
    hashlib.sha512(b"homecare-gateway test vector: provider ml-kem-768").digest()
)
GATEWAY_ID = "gw-vector-0001"
PQ_GATEWAY_ID = "gw-vector-0002"
CREATED_MS = 1714550405250  # 2024-05-01T08:00:05.250Z
STAGED = "staged-chunk"
CHUNK_ID = hashlib.sha256(b"homecare-gateway test vector: chunk id").digest()[:16]
CHUNK_KEY = hashlib.sha256(b"homecare-gateway test vector: chunk key").digest()
OXIMETER = DeviceId(DeviceIdKind.SERIAL, "501234567")


@dataclass(frozen=True, slots=True)
class Vector:
    name: str
    kind: wire.RecordKind
    lane: int
    seq: int
    gateway_id: str = GATEWAY_ID
    compress: bool = True
    pq: bool = False


CHAIN = (
    Vector("observation", wire.RecordKind.OBSERVATIONS, 1, 1),
    Vector("health", wire.RecordKind.HEALTH, 3, 2),
    Vector("gap", wire.RecordKind.GAP, 0, 3),
    Vector("event", wire.RecordKind.EVENT, 0, 4, compress=False),
)
PQ = Vector("pq-observation", wire.RecordKind.OBSERVATIONS, 1, 1, PQ_GATEWAY_ID, pq=True)


def plaintext(v: Vector) -> bytes:
    if v.kind is wire.RecordKind.OBSERVATIONS:
        gw = make_gateway_info(gateway_id=v.gateway_id, episode_id="ep-vector")
        return cjson.dumps(fhir.bundle([make_measurement()], gw))
    body: dict[str, Any]
    if v.kind is wire.RecordKind.HEALTH:
        body = health_report()
    elif v.kind is wire.RecordKind.GAP:
        body = {
            "type": "gap",
            "version": 1,
            "ongoing": False,
            "quota_bytes": 67108864,
            "held_bytes": 67100000,
            "refused": [
                {
                    "device": "btmac:A4:C1:38:00:12:34",
                    "reason": "outbox-quota",
                    "lane": 2,
                    "readings": 12,
                    "first": "2024-05-01T08:00:00.100000+00:00",
                    "last": "2024-05-01T08:00:04.900000+00:00",
                }
            ],
        }
    else:
        body = {
            "type": "event",
            "version": 1,
            "event": "stream-chunk-lost",
            "reason": "unclean-stop",
            "lane": 2,
            "opened": "2024-05-01T07:59:40+00:00",
            "detected": "2024-05-01T08:00:08.250000+00:00",
        }
    return cjson.dumps(body)


def health_report() -> dict[str, Any]:
    return {
        "type": "health",
        "version": 1,
        "gateway_id": GATEWAY_ID,
        "episode": "ep-vector",
        "time": "2024-05-01T08:00:05.200000+00:00",
        "software_version": "0.1.0",
        "uptime_s": Decimal("60.0"),
        "outbox": {
            "depth": 1,
            "bytes": 1085,
            "oldest_age_s": Decimal("0.1"),
            "last_seq": 1,
            "epoch": 1,
            "quota_bytes": 67108864,
            "refused_readings": 0,
        },
        "ingest": {"committed_readings": 1, "unusable_readings": 0, "last_error": None},
        "uplink": {"state": "connected", "delivered_records": 0, "last_error": None},
        "devices": [
            {
                "device": "btmac:A4:C1:38:00:12:34",
                "driver": "ble.thermometer",
                "state": "connected",
                "last_seen": "2024-05-01T08:00:05.250000+00:00",
                "expected_interval_s": Decimal("3600.0"),
                "silent": False,
                "readings": 1,
                "battery_pct": 80,
                "rssi_dbm": -61,
                "port": None,
                "duplicates": 0,
            }
        ],
        "links": {},
        "clock": {"source": "chrony", "synchronised": True, "offset_ms": Decimal("0.25"),
                  "stratum": 2},
        "certificate": {"not_after": "2024-06-01T00:00:00+00:00", "days_left": Decimal("30.7")},
        "loops": {},
        "power": {"state": "unknown", "reason": "no UPS configured"},
        "alarms": [],
    }


def seal(v: Vector, prev_hash: bytes) -> bytes:
    key = provider_public_key(
        PROVIDER.public_key(), PROVIDER_MLKEM.public_key() if v.pq else None
    )
    sealer = RecordSealer(v.gateway_id, SIGNING, key)
    saved = sealing.COMPRESS_MIN_BYTES
    if not v.compress:  # the sealer stores short plaintexts as they are: make this one "short"
        sealing.COMPRESS_MIN_BYTES = 1 << 30
    try:
        return sealer.seal(
            plaintext(v), kind=v.kind, lane=v.lane, epoch=1, seq=v.seq, prev_hash=prev_hash,
            created_ms=CREATED_MS + 1000 * (v.seq - 1),
        )
    finally:
        sealing.COMPRESS_MIN_BYTES = saved


def record_file(name: str) -> Path:
    return VECTORS / f"{name}-record.hex"


def describe(record: bytes) -> str:
    h = wire.parse_record(record).header
    return (
        f"magic=HCR1 version=1 kind={int(h.kind)} lane={h.lane} flags={h.flags} "
        f"kem={h.kem_id:#06x} kdf={h.kdf_id:#06x} aead={h.aead_id:#06x} epoch={h.epoch} "
        f"seq={h.seq} created_ms={h.created_ms} prev_hash={h.prev_hash.hex()} "
        f"gateway_id={h.gateway_id}"
    )


def _set_block(text: str, label: str, value: str) -> str:
    pattern = rf"(```text vector:{re.escape(label)}\n)[^`]*?\n```"
    if not re.search(pattern, text):
        raise SystemExit(f"docs/wire-format.md has no ```text vector:{label} block")
    return re.sub(pattern, lambda m: m.group(1) + value + "\n```", text)


def staged_vector(prev_hash: bytes) -> bytes:
    """Section 8.1: a staged-chunk record of two SpO2 readings, chained after ``prev_hash``."""
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
    sealer = RecordSealer(GATEWAY_ID, SIGNING, PROVIDER.public_key())
    wrapped = sealer.wrap_key(CHUNK_KEY, staged.key_info(CHUNK_ID, GATEWAY_ID))
    header = staged.ChunkHeader(CHUNK_ID, CREATED_MS - 30_000, sealer.kem_id, wrapped)
    cipher = staged.ChunkCipher(header, CHUNK_KEY)
    rows = []
    for n, m in enumerate(readings):
        plain = cjson.dumps(fhir.bundle([m], gw), float_free=True)
        (VECTORS / f"staged-row-{n}.json").write_bytes(plain)
        rows.append(cipher.encrypt(n, plain))
    body = staged.recovered_body(header, rows, 2, RECEIVED_AT + timedelta(seconds=60))
    text = cjson.dumps(body)
    (VECTORS / f"{STAGED}-plaintext.json").write_bytes(text)
    return sealer.seal(
        text, kind=wire.RecordKind.STAGED_CHUNK, lane=2, epoch=1, seq=5, prev_hash=prev_hash,
        created_ms=CREATED_MS + 60_000,
    )


def main(argv: Sequence[str]) -> None:
    wanted = set(argv) or {v.name for v in (*CHAIN, PQ)} | {STAGED}
    records: dict[str, bytes] = {}
    prev = wire.GENESIS_HASH
    for v in (*CHAIN, PQ):
        if v.pq:
            prev = wire.GENESIS_HASH
        if v.name in wanted:
            records[v.name] = seal(v, prev)
            record_file(v.name).write_text(records[v.name].hex() + "\n")
            (VECTORS / f"{v.name}-plaintext.json").write_bytes(plaintext(v))
            print(f"{v.name}: record {len(records[v.name])} bytes", file=sys.stderr)
        else:
            records[v.name] = bytes.fromhex(record_file(v.name).read_text().strip())
        prev = wire.record_hash(records[v.name])
    if STAGED in wanted:
        staged_record = staged_vector(wire.record_hash(records["event"]))
        record_file(STAGED).write_text(staged_record.hex() + "\n")
    else:
        staged_record = bytes.fromhex(record_file(STAGED).read_text().strip())
    (VECTORS / "observation-batch.hex").write_text(
        wire.encode_batch([records["observation"]]).hex() + "\n"
    )
    (VECTORS / "alarm-batch.hex").write_text(
        wire.encode_batch([records["gap"], records["event"]]).hex() + "\n"
    )
    doc = DOCS / "wire-format.md"
    text = doc.read_text()
    text = _set_block(text, "staged_record_hash", wire.record_hash(staged_record).hex())
    text = _set_block(text, "staged_chunk_key", CHUNK_KEY.hex())
    for name, record in records.items():
        label = name.replace("-", "_")
        text = _set_block(text, f"{label}_header", describe(record))
        text = _set_block(text, f"{label}_record_hash", wire.record_hash(record).hex())
    text = _set_block(
        text, "provider_mlkem768_seed", hashlib.sha512(
            b"homecare-gateway test vector: provider ml-kem-768").hexdigest()
    )
    text = _set_block(
        text, "provider_mlkem768_public_raw", PROVIDER_MLKEM.public_key().public_bytes_raw().hex()
    )
    doc.write_text(text)


if __name__ == "__main__":
    main(sys.argv[1:])
