"""Bytes per reading of a continuous SpO2 stream at 1 Hz: on the wire and on disk.

A continuous stream travels in lane STREAM, which the writer seals in chunks: one record per
``stream_chunk_s`` seconds of reception time (the daemon's default, 30 s), and the upload loop
(woken by that commit) sends it as a batch of one. This benchmark does exactly that with the real
parts, in-process: 300 readings one second apart (reception times), handed to the
:class:`IngestWriter` in lane STREAM with the default chunk time, sealed and durably committed,
then each record is leased on its own and framed with :func:`gateway.seal.wire.encode_batch` as
:class:`UploadLoop` frames it. The readings are handed over faster than real time; the chunks
close on their reception-time span exactly as they would at 1 Hz.

* ``wire_bytes_per_reading``: MQTT payload bytes (batch framing included) per reading. Printed as
  well: the PUBLISH packet (fixed header, topic, packet id, properties) and the TLS 1.3 record
  around it, and the PUBACK that comes back; TCP/IP headers are not counted.
* ``disk_bytes_per_reading``: growth of the outbox file per reading while the readings wait for
  upload (checkpointed file, SQLite pages and index included), next to the sealed bytes alone.

Printed but not in the JSON: how many bytes a reading costs when N readings of the stream share
one record (other values of ``stream_chunk_s`` at 1 Hz), sealed by the real sealer.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError, Keys, gateway_info, open_pipeline, say, spo2_stream
from gateway.config.settings import DEFAULT_STREAM_CHUNK_S
from gateway.fhir import observation as fhir
from gateway.pipeline.ingest import Lane
from gateway.seal import cjson, wire
from provider.verifier import Verifier

TOPIC = f"homecare/v1/gw/{gateway_info().gateway_id}/records"
TLS13_RECORD_OVERHEAD = 5 + 1 + 16  # record header, inner content type, AES-GCM tag (RFC 8446 5.2)
# PUBACK with reason code 0 (a subscriber exists, as in production) and no properties: fixed
# header, remaining length, packet id; the reason code may then be left out (MQTT 5 3.4.2.1).
MQTT5_PUBACK = 4
CHUNK_SIZES = (1, 5, 10, 30, 60, 300)


@dataclass(frozen=True, slots=True)
class WireRun:
    readings: int
    payload_bytes: float  # MQTT payload per reading
    publish_bytes: float  # MQTT PUBLISH packet per reading
    tls_bytes: float  # upstream TLS bytes per reading, plus the PUBACK coming back
    sealed_bytes: float  # sealed record bytes per reading
    plaintext_bytes: float  # canonical JSON of the FHIR Bundle per reading
    disk_bytes: float  # outbox file growth per reading


def _varint_len(n: int) -> int:
    size = 1
    while n >= 128:
        n //= 128
        size += 1
    return size


def publish_packet_bytes(topic: str, payload: int) -> int:
    """MQTT 5 PUBLISH, QoS 1, no properties (MQTT 5 section 3.3)."""
    remaining = 2 + len(topic.encode()) + 2 + 1 + payload
    return 1 + _varint_len(remaining) + remaining


def _file_bytes(db_path: Path) -> int:
    # Outbox.close() was the last connection: SQLite checkpointed the WAL into the file.
    conn = sqlite3.connect(db_path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    finally:
        conn.close()
    return int(page_size * pages)


async def _stream_once(readings: int, db_path: Path, keys: Keys) -> tuple[list[bytes], int]:
    stream = spo2_stream(readings)
    async with open_pipeline(db_path, keys):
        pass  # an empty outbox first: its size is the baseline
    empty = _file_bytes(db_path)
    async with open_pipeline(db_path, keys, stream_chunk_s=DEFAULT_STREAM_CHUNK_S) as p:
        futures = [await p.writer.enqueue([m], Lane.STREAM) for m in stream]
        await p.writer.drain()  # the last, partial chunk is sealed as at a clean stop
        await asyncio.gather(*futures)
        records: list[bytes] = []
        while batch := await p.db.run(p.outbox.lease, 1, 256 * 1024):
            records.extend(r.record for r in batch)
    return records, _file_bytes(db_path) - empty


def _check_opens(records: list[bytes], keys: Keys, readings: int) -> None:
    verifier = Verifier(keys.provider, {gateway_info().gateway_id: keys.signing.public_key()})
    got = sum(len(verifier.accept_record(r).measurements) for r in records)
    expected = -(-readings // int(DEFAULT_STREAM_CHUNK_S))
    if got != readings or len(records) != expected:
        raise BenchError(f"wire: {len(records)} records with {got} readings for {readings}")


def run_once(readings: int, db_path: Path) -> WireRun:
    keys = Keys.generate()
    records, disk = asyncio.run(_stream_once(readings, db_path, keys))
    _check_opens(records, keys, readings)
    payloads = [len(wire.encode_batch([r])) for r in records]
    publish = [publish_packet_bytes(TOPIC, n) for n in payloads]
    gw = gateway_info()
    stream, n = spo2_stream(readings), int(DEFAULT_STREAM_CHUNK_S)
    plaintext = sum(
        len(cjson.dumps(fhir.bundle(stream[i : i + n], gw))) for i in range(0, readings, n)
    )
    return WireRun(
        readings=readings,
        payload_bytes=sum(payloads) / readings,
        publish_bytes=sum(publish) / readings,
        tls_bytes=(sum(publish) + len(records) * (TLS13_RECORD_OVERHEAD * 2 + MQTT5_PUBACK))
        / readings,
        sealed_bytes=sum(len(r) for r in records) / readings,
        plaintext_bytes=plaintext / readings,
        disk_bytes=disk / readings,
    )


def chunk_what_if(sizes: tuple[int, ...] = CHUNK_SIZES) -> dict[int, float]:
    """MQTT payload bytes per reading when ``n`` stream readings share one record (today's FHIR)."""
    keys, gw = Keys.generate(), gateway_info()
    sealer = keys.sealer()
    out: dict[int, float] = {}
    for n in sizes:
        stream = spo2_stream(n)
        record = sealer.seal(
            cjson.dumps(fhir.bundle(stream, gw)),
            kind=wire.RecordKind.OBSERVATIONS,
            lane=int(Lane.STREAM),
            epoch=1,
            seq=1,
            prev_hash=wire.GENESIS_HASH,
            created_ms=0,
        )
        out[n] = len(wire.encode_batch([record])) / n
    return out


def measure(readings: int, runs: int, workdir: Path) -> list[WireRun]:
    results = []
    for i in range(runs):
        r = run_once(readings, workdir / f"wire-{i}.db")
        results.append(r)
        say(
            f"wire     run {i + 1}/{runs}: {r.payload_bytes:.0f} MQTT payload bytes/reading, "
            f"{r.publish_bytes:.0f} as PUBLISH, {r.tls_bytes:.0f} on the TLS stream incl. PUBACK "
            f"(SpO2 1 Hz in {DEFAULT_STREAM_CHUNK_S:.0f}-s chunks, {r.readings} readings; "
            f"sealed {r.sealed_bytes:.0f}, FHIR JSON "
            f"{r.plaintext_bytes:.0f})"
        )
        say(
            f"disk     run {i + 1}/{runs}: {r.disk_bytes:.0f} outbox file bytes/reading "
            f"({r.sealed_bytes:.0f} sealed bytes + SQLite row, index and page overhead)"
        )
    what_if = chunk_what_if()
    say(
        "wire     N stream readings per record (stream_chunk_s = N at 1 Hz; real sealer): "
        + ", ".join(f"N={n}: {b:.0f}" for n, b in what_if.items())
        + " payload bytes/reading"
    )
    return results

