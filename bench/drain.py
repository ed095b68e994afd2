"""Drain: readings per second from a full outbox to a local mosquitto, QoS 1, until acknowledged.

The real :class:`UploadLoop` and :class:`MqttUplink` (daemon defaults: batches of at most 500
records / 256 kB, 4 batches in flight, mutual TLS) run in-process against a local mosquitto with
the rig PKI and ACL. The clock starts before the TLS connect and stops when every record has been
PUBACKed *and* deleted from the outbox (the ack transaction is durable). No subscriber is
connected: mosquitto acknowledges a QoS 1 PUBLISH that matches no subscription all the same
(MQTT 5 reason code 0x10 "no matching subscribers", a success code), so the figure is the
gateway's and the broker's side only.

Two outbox shapes, because the gateway seals one record per commit window:

* ``stream`` (the headline): one reading per record, which is what an outage leaves behind when
  devices trickle in at a few readings per second (each 2 ms commit window holds one reading).
  Filled with the same steps as ``IngestWriter._seal_and_append`` for a one-reading window
  (FHIR Bundle, canonical JSON, seal, chain hash), 500 records per transaction to save time.
* ``bulk``: the outbox the ingest benchmark leaves (readings arriving faster than the commit
  window, up to 256 readings per record), e.g. a device dumping its stored records.

Each run drains a fresh copy of the same pre-filled file.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import BenchError, Keys, gateway_info, median, say, spo2_stream
from bench.rig import BenchRig, proc_sample
from buffer.outbox import ChainHead, NewRecord, Outbox, now_ms
from gateway.fhir import observation as fhir
from gateway.pipeline.dbthread import DatabaseThread
from gateway.pipeline.ingest import Lane
from gateway.seal import cjson, wire
from gateway.uplink.mqtt import MqttUplink
from gateway.uplink.upload import UploadLoop, UploadSettings
from provider.broker import MosquittoBroker

DRAIN_TIMEOUT_S = 180.0
PREFILL_RECORDS_PER_TXN = 500
KIND = int(wire.RecordKind.OBSERVATIONS)


@dataclass(frozen=True, slots=True)
class DrainRun:
    shape: str
    readings: int
    records: int
    batches: int
    seconds: float
    connect_s: float
    gateway_cpu_s: float  # CPU of this process (the uplink side) during the drain
    broker_cpu_s: float  # CPU of mosquitto during the drain

    @property
    def per_s(self) -> float:
        return self.readings / self.seconds

    @property
    def per_s_connected(self) -> float:
        return self.readings / (self.seconds - self.connect_s)


def prefill_stream(path: Path, readings: int, keys: Keys) -> int:
    """An outbox holding ``readings`` one-reading records; returns the sealed bytes held."""
    sealer, gw = keys.sealer(), gateway_info()
    outbox = Outbox(path)
    try:
        stream = spo2_stream(readings)
        for start in range(0, readings, PREFILL_RECORDS_PER_TXN):
            head = outbox.head()
            seq, prev = head.seq, head.head_hash
            new: list[NewRecord] = []
            for m in stream[start : start + PREFILL_RECORDS_PER_TXN]:
                seq += 1
                created = now_ms()
                sealed = sealer.seal(
                    cjson.dumps(fhir.bundle([m], gw)),
                    kind=wire.RecordKind.OBSERVATIONS,
                    lane=int(Lane.SPOT),
                    epoch=head.epoch,
                    seq=seq,
                    prev_hash=prev,
                    created_ms=created,
                )
                prev = wire.record_hash(sealed)
                new.append(NewRecord(seq, head.epoch, int(Lane.SPOT), KIND, created, sealed))
            outbox.append(new, ChainHead(head.epoch, seq, prev))
        return outbox.stats().bytes
    finally:
        outbox.close()


def _settings() -> UploadSettings:
    base = f"homecare/v1/gw/{gateway_info().gateway_id}"
    return UploadSettings(topic=f"{base}/records", health_topic=f"{base}/health")


async def _drain_once(
    db_path: Path, rig: BenchRig, broker: MosquittoBroker, shape: str, readings: int
) -> DrainRun:
    db = DatabaseThread()
    outbox = await db.run(Outbox, db_path)
    records = (await db.run(outbox.stats)).depth
    uplink = MqttUplink(rig.uplink_settings(broker))
    upload = UploadLoop(outbox, db, uplink, _settings(), asyncio.Event())
    loop = asyncio.get_running_loop()
    broker_cpu0, cpu0 = _broker_cpu_s(broker), time.process_time()
    start = loop.time()
    task = asyncio.create_task(upload.run(), name="bench.drain.upload")
    connect_s = 0.0
    try:
        deadline = start + DRAIN_TIMEOUT_S
        while upload.delivered_records < records:
            if task.done():
                task.result()  # raises what ended the loop
                raise BenchError("drain: the upload loop ended early")
            if loop.time() > deadline:
                raise BenchError(
                    f"drain: {upload.delivered_records}/{records} records acknowledged after "
                    f"{DRAIN_TIMEOUT_S:.0f} s (last error: {upload.last_error})"
                )
            if not connect_s and upload.connected.is_set():
                connect_s = loop.time() - start
            await asyncio.sleep(0.002)
        elapsed = loop.time() - start
        cpu, broker_cpu = time.process_time() - cpu0, _broker_cpu_s(broker) - broker_cpu0
        left = (await db.run(outbox.stats)).depth
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await uplink.close()
        await db.run(outbox.close)
        db.shutdown()
    if left:
        raise BenchError(f"drain: {left} records still in the outbox after all were acknowledged")
    return DrainRun(
        shape, readings, records, upload.delivered_batches, elapsed, connect_s, cpu, broker_cpu
    )


def _broker_cpu_s(broker: MosquittoBroker) -> float:
    pid = broker.pid
    if pid is None:
        raise BenchError("drain: the broker is not running")
    return proc_sample(pid).cpu_s


def drain_copy(
    source: Path,
    workdir: Path,
    rig: BenchRig,
    broker: MosquittoBroker,
    *,
    shape: str,
    readings: int,
) -> DrainRun:
    target = workdir / f"drain-{shape}.db"
    shutil.copyfile(source, target)
    try:
        return asyncio.run(_drain_once(target, rig, broker, shape, readings))
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{target}{suffix}").unlink(missing_ok=True)


def describe(r: DrainRun) -> str:
    return (
        f"{r.per_s:8.0f} readings/s  ({r.readings} readings in {r.records} records, "
        f"{r.batches} batches, {r.seconds:.2f} s incl. {r.connect_s * 1000:.0f} ms TLS connect "
        f"-> {r.per_s_connected:.0f}/s once connected; CPU: gateway {r.gateway_cpu_s:.2f} s, "
        f"mosquitto {r.broker_cpu_s:.2f} s)"
    )


def measure(
    rig: BenchRig,
    workdir: Path,
    runs: int,
    stream_readings: int,
    bulk: tuple[Path, int] | None,
) -> tuple[list[DrainRun], list[DrainRun], Path]:
    """Stream-shaped runs (headline) and bulk-shaped runs; also returns the stream outbox file."""
    t = time.perf_counter()
    stream_db = workdir / "drain-stream-source.db"
    held = prefill_stream(stream_db, stream_readings, Keys.generate())
    say(
        f"drain    pre-filled {stream_readings} one-reading records ({held / stream_readings:.0f} "
        f"sealed bytes each) in {time.perf_counter() - t:.1f} s"
    )
    broker = rig.start_broker("drain")
    stream_runs: list[DrainRun] = []
    bulk_runs: list[DrainRun] = []
    for i in range(runs):
        r = drain_copy(
            stream_db, workdir, rig, broker, shape="stream", readings=stream_readings
        )
        stream_runs.append(r)
        say(f"drain    run {i + 1}/{runs} stream-shaped outbox: {describe(r)}")
    if bulk is not None:
        for i in range(runs):
            r = drain_copy(bulk[0], workdir, rig, broker, shape="bulk", readings=bulk[1])
            bulk_runs.append(r)
            say(f"drain    run {i + 1}/{runs} bulk-shaped outbox:   {describe(r)}")
    say(
        f"drain    median stream {median([r.per_s for r in stream_runs]):.0f} readings/s"
        + (f", bulk {median([r.per_s for r in bulk_runs]):.0f} readings/s" if bulk_runs else "")
    )
    return stream_runs, bulk_runs, stream_db
