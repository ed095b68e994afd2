"""Latency (device event -> PUBACK) and CPU at 10 readings/s, on the daemon as a process.

gatewayd runs as it does in production (``python -m gateway.daemon.main``, log level info, JSON
logs to
a file, health reports every 60 s) with one simulated pulse oximeter at 10 readings/s, against a
local mosquitto. The provider's subscriber runs in this process and stamps every MQTT message on
arrival, *before* verifying it. A reading's latency is that arrival time minus its
``received_at``, which the daemon set when the driver handed the reading over (the device event)
and which travels sealed inside the record (FHIR extension ``received-at``, microseconds) - so no
instrumentation is needed inside the daemon.

Arrival at the provider stands in for the PUBACK: mosquitto queues a QoS 1 message to its
subscribers and writes the PUBACK in the same pass of its event loop, so the two leave the broker
together and each then takes one loopback hop, TLS decryption and a paho read. The figure excludes
what follows the PUBACK on the gateway (the outbox delete).

CPU is the daemon's own: utime + stime from ``/proc/<pid>/stat`` over the measuring window, as a
percentage of one core. The subscriber's work (verifying, decrypting) is in this process, not in
the daemon's figure. It is measured twice:

* **spot** (the latency runs): 10 spot readings/s, each sealed, stored and sent alone - the worst
  case, since spot readings are never held back;
* **stream** (``cpu_pct_idle_load``): the same device as a continuous stream at 10 readings/s,
  which is what produces 10 readings/s in a home. Lane STREAM seals it in chunks of
  ``stream_chunk_s`` (30 s) or 256 readings, whichever comes first: at 10/s a chunk every 25.6 s.
  The window is a whole number of chunk periods, so it holds the same number of chunk seals
  whatever the phase. After the window the daemon is stopped (which seals the open chunk) and
  every reading taken in the window must arrive and verify.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.common import BenchError, Window, median, percentile, say
from bench.rig import BenchRig, Daemon, SimDevice, thread_cpu_s
from gateway.config.settings import DEFAULT_STREAM_CHUNK_S
from gateway.pipeline.ingest import MAX_OBSERVATIONS_PER_RECORD
from gateway.seal import wire
from provider.broker import MosquittoBroker
from provider.service import ProviderSubscriber, SubscriberSettings
from provider.verifier import Verifier

RATE_PER_S = 10
DEVICES = (SimDevice("pulse-oximeter", "00:1b:dc:be:01:01", 1 / RATE_PER_S),)
STREAM_DEVICES = (SimDevice("pulse-oximeter", "00:1b:dc:be:01:02", 1 / RATE_PER_S, stream=True),)
CHUNK_PERIOD_S = min(DEFAULT_STREAM_CHUNK_S, MAX_OBSERVATIONS_PER_RECORD / RATE_PER_S)
ARRIVAL_GRACE_S = 5.0  # after the window, how long readings taken in it may take to arrive


@dataclass
class Arrivals:
    """What the provider received: per reading (device event, arrival), per message bytes."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    # (device event, record sealed, arrival), Unix seconds; "sealed" is the record header's
    # created_ms, taken on the database thread right before sealing (millisecond resolution)
    readings: list[tuple[float, float, float]] = field(default_factory=list)
    # (payload bytes, readings) of every message with observation records
    record_messages: list[tuple[int, int]] = field(default_factory=list)
    failures: int = 0


class StampingSubscriber(ProviderSubscriber):
    """The reference provider subscriber, stamping each message before it verifies it."""

    def __init__(self, settings: SubscriberSettings, verifier: Verifier, sink: Arrivals) -> None:
        super().__init__(settings, verifier)
        self.sink = sink

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        arrived = time.time()
        result = self.verifier.accept_batch(bytes(msg.payload), msg.topic)
        with self.sink.lock:
            self.sink.failures += len(result.failures)
            n = 0
            for rec in result.records:
                if rec.duplicate or rec.header.kind is not wire.RecordKind.OBSERVATIONS:
                    continue
                sealed = rec.header.created_ms / 1000
                for m in rec.measurements:
                    self.sink.readings.append((m.received_at.timestamp(), sealed, arrived))
                    n += 1
            if n:
                self.sink.record_messages.append((len(msg.payload), n))


@dataclass(frozen=True, slots=True)
class LoadRun:
    latencies_ms: list[float]
    to_seal_ms: list[float]  # device event -> sealing starts (queue, commit window, FHIR mapping)
    cpu_pct: float
    cpu_loop_pct: float  # of which the main thread (the asyncio event loop)
    window_s: float
    readings_in_window: int
    payload_bytes_per_reading: float
    startup_s: float

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def _subscriber(
    rig: BenchRig, broker: MosquittoBroker, run: int, sink: Arrivals
) -> StampingSubscriber:
    settings, verifier = rig.provider_side(broker, f"provider-bench-{run}")
    return StampingSubscriber(settings, verifier, sink)


def _arrived(
    sink: Arrivals, t0: float, t1: float, what: str
) -> tuple[list[tuple[float, float, float]], list[tuple[int, int]]]:
    """Readings taken in [t0, t1) and every message's (bytes, readings); any rejection fails."""
    with sink.lock:
        window = [r for r in sink.readings if t0 <= r[0] < t1]
        sizes = list(sink.record_messages)
        failures = sink.failures
    if failures:
        raise BenchError(f"{what}: the provider rejected {failures} records")
    return window, sizes


def run_once(
    rig: BenchRig, broker: MosquittoBroker, workdir: Path, run: int, timing: Window
) -> LoadRun:
    window_s = timing.window_s
    sink = Arrivals()
    sub = _subscriber(rig, broker, run, sink)
    config = rig.write_config(broker, workdir / f"load-{run}", DEVICES)
    daemon = Daemon(config, workdir, f"load-{run}")
    sub.start()
    try:
        if not sub.wait_subscribed(15):
            raise BenchError("latency: the provider subscriber could not subscribe")
        startup_s = daemon.start()
        time.sleep(timing.warmup_s)  # connect, first health report, caches warm
        t0, cpu0, threads0 = time.time(), daemon.sample().cpu_s, thread_cpu_s(daemon.pid)
        time.sleep(window_s)
        t1, cpu1, threads1 = time.time(), daemon.sample().cpu_s, thread_cpu_s(daemon.pid)
        deadline = time.monotonic() + ARRIVAL_GRACE_S
        while time.monotonic() < deadline:  # bounded: readings taken late in the window
            with sink.lock:
                if any(rx > t1 for rx, _, _ in sink.readings):
                    break
            time.sleep(0.05)
        if daemon.stop() != 0:
            raise BenchError(f"latency: gatewayd exited with an error; see {daemon.log_path}")
    finally:
        daemon.kill()
        sub.stop()
    window, sizes = _arrived(sink, t0, t1, "latency")
    expected = window_s * RATE_PER_S
    if len(window) < 0.9 * expected:
        raise BenchError(f"latency: {len(window)} readings in the window, expected ~{expected:.0f}")
    total_bytes, total_readings = sum(b for b, _ in sizes), sum(n for _, n in sizes)
    return LoadRun(
        latencies_ms=[(arr - rx) * 1000 for rx, _, arr in window],
        to_seal_ms=[(sealed - rx) * 1000 for rx, sealed, _ in window],
        cpu_pct=(cpu1 - cpu0) / (t1 - t0) * 100,
        cpu_loop_pct=(threads1.get(daemon.pid, 0.0) - threads0.get(daemon.pid, 0.0))
        / (t1 - t0)
        * 100,
        window_s=t1 - t0,
        readings_in_window=len(window),
        payload_bytes_per_reading=total_bytes / max(1, total_readings),
        startup_s=startup_s,
    )


@dataclass(frozen=True, slots=True)
class StreamRun:
    cpu_pct: float
    window_s: float
    readings_in_window: int
    readings_per_record: float


def stream_cpu_once(
    rig: BenchRig,
    broker: MosquittoBroker,
    workdir: Path,
    run: int,
    *,
    periods: int,
    warmup_s: float,
) -> StreamRun:
    """CPU of a 10-readings/s continuous stream over ``periods`` whole chunk periods."""
    sink = Arrivals()
    sub = _subscriber(rig, broker, 100 + run, sink)
    config = rig.write_config(broker, workdir / f"stream-{run}", STREAM_DEVICES)
    daemon = Daemon(config, workdir, f"stream-{run}")
    sub.start()
    try:
        if not sub.wait_subscribed(15):
            raise BenchError("stream cpu: the provider subscriber could not subscribe")
        daemon.start()
        time.sleep(warmup_s)
        t0, cpu0 = time.time(), daemon.sample().cpu_s
        time.sleep(periods * CHUNK_PERIOD_S)
        t1, cpu1 = time.time(), daemon.sample().cpu_s
        if daemon.stop() != 0:  # a clean stop seals the open chunk
            raise BenchError(f"stream cpu: gatewayd exited with an error; see {daemon.log_path}")
        expected = (t1 - t0) * RATE_PER_S
        deadline = time.monotonic() + ARRIVAL_GRACE_S
        while time.monotonic() < deadline:
            with sink.lock:
                got = sum(1 for rx, _, _ in sink.readings if t0 <= rx < t1)
            if got >= 0.9 * expected:
                break
            time.sleep(0.1)
    finally:
        daemon.kill()
        sub.stop()
    window, sizes = _arrived(sink, t0, t1, "stream cpu")
    if len(window) < 0.9 * expected:
        raise BenchError(f"stream cpu: {len(window)} readings arrived, expected ~{expected:.0f}")
    return StreamRun(
        cpu_pct=(cpu1 - cpu0) / (t1 - t0) * 100,
        window_s=t1 - t0,
        readings_in_window=len(window),
        readings_per_record=sum(n for _, n in sizes) / max(1, len(sizes)),
    )


def measure_stream(rig: BenchRig, workdir: Path, runs: int, quick: bool) -> list[StreamRun]:
    broker = rig.start_broker("stream")
    periods = 1 if quick else 2
    results = []
    for i in range(runs):
        r = stream_cpu_once(rig, broker, workdir, i, periods=periods, warmup_s=3.0)
        results.append(r)
        say(
            f"cpu      stream run {i + 1}/{runs}: {r.cpu_pct:5.2f} % of one core at {RATE_PER_S} "
            f"readings/s as a continuous stream ({r.window_s:.1f} s = {periods} chunk "
            f"period(s); {r.readings_in_window} readings verified, {r.readings_per_record:.0f} "
            "readings per message)"
        )
    return results


def idle_cpu_pct(rig: BenchRig, broker: MosquittoBroker, workdir: Path, timing: Window) -> float:
    """The daemon's CPU with no device at all (connected, health reports due every 60 s)."""
    daemon = Daemon(rig.write_config(broker, workdir / "idle", ()), workdir, "idle")
    try:
        daemon.start()
        time.sleep(timing.warmup_s)
        t0, cpu0 = time.time(), daemon.sample().cpu_s
        time.sleep(timing.window_s)
        t1, cpu1 = time.time(), daemon.sample().cpu_s
        daemon.stop()
    finally:
        daemon.kill()
    return (cpu1 - cpu0) / (t1 - t0) * 100


def measure(rig: BenchRig, workdir: Path, runs: int, timing: Window) -> list[LoadRun]:
    broker = rig.start_broker("latency")
    results: list[LoadRun] = []
    for i in range(runs):
        r = run_once(rig, broker, workdir, i, timing)
        results.append(r)
        say(
            f"latency  run {i + 1}/{runs}: p50 {r.p50_ms:6.1f} ms  p99 {r.p99_ms:6.1f} ms  "
            f"max {max(r.latencies_ms):6.1f} ms  ({r.readings_in_window} readings in "
            f"{r.window_s:.0f} s at {RATE_PER_S}/s; event -> sealing starts: p50 "
            f"{percentile(r.to_seal_ms, 50):.1f} ms, p99 {percentile(r.to_seal_ms, 99):.1f} ms)"
        )
        say(
            f"cpu      spot run {i + 1}/{runs}: {r.cpu_pct:5.2f} % of one core at {RATE_PER_S} "
            f"spot readings/s ({r.cpu_loop_pct:.2f} % event-loop thread, "
            f"{r.cpu_pct - r.cpu_loop_pct:.2f} % database/MQTT threads; "
            f"{r.payload_bytes_per_reading:.0f} MQTT payload bytes/reading seen)"
        )
    idle = idle_cpu_pct(rig, broker, workdir, timing)
    say(
        f"cpu      baseline with no device: {idle:.2f} % of one core over {timing.window_s:.0f} s "
        "(one run; clock-tick resolution 10 ms)"
    )
    say(
        f"latency  median p50 {median([r.p50_ms for r in results]):.1f} ms, "
        f"p99 {median([r.p99_ms for r in results]):.1f} ms; "
        f"cpu (spot) median {median([r.cpu_pct for r in results]):.2f} %"
    )
    return results
