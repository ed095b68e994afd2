"""Alarm latency: a device's alarm condition -> verified at the provider (issue 17, item 1).

A Nonin oximeter simulator on a pseudo-terminal (real pyserial in gatewayd, real mosquitto, the
reference verifier in this process) is driven through desaturation episodes: SpO2 drops from 97
to 80 %, the gateway must deliver the "desaturation" alarm, then SpO2 recovers and the gateway
must deliver "desaturation-end". The clock starts when this process changes the simulated
oximeter's state, so the figure includes the device's own packet cadence (a packet every 1/3 s)
as well as framing, the reducer, the commit, sealing, MQTT and verification. It stops when the
provider has verified the record.

Measured twice: **idle** (only the oximeter, whose interval readings wait in 30-s stream chunks)
and **stream** (plus a simulated device streaming 10 readings/s into the same outbox). Target:
p99 <= 1 s in both.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from bench.common import BenchError, median, percentile, say
from bench.rig import BenchRig, Daemon, SimDevice
from provider.broker import MosquittoBroker
from provider.service import ProviderSubscriber, SubscriberSettings
from provider.verifier import Verifier
from rig.serial.oximeter import NoninSim

SERIAL = "ALARM-BENCH-1"
NORMAL = {"spo2_pct": 97, "pulse_bpm": 80}
DESATURATED = {"spo2_pct": 80, "pulse_bpm": 118}
ALARM_TIMEOUT_S = 15.0  # one alarm not verified by then: the benchmark fails, no figure
STREAM = (SimDevice("pulse-oximeter", "00:1b:dc:be:02:01", 0.1, stream=True),)


@dataclass
class AlarmArrivals:
    """Verification time (Unix seconds) of each alarm reading, by its reason."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    verified: list[tuple[str, float]] = field(default_factory=list)
    failures: int = 0


class AlarmSubscriber(ProviderSubscriber):
    def __init__(self, settings: SubscriberSettings, verifier: Verifier, sink: AlarmArrivals):
        super().__init__(settings, verifier)
        self.sink = sink

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        result = self.verifier.accept_batch(bytes(msg.payload), msg.topic)
        verified = time.time()
        with self.sink.cond:
            self.sink.failures += len(result.failures)
            for rec in result.records:
                for m in rec.measurements:
                    if m.device.value == SERIAL and m.supplemental.startswith("desaturation"):
                        self.sink.verified.append((m.supplemental, verified))
            self.sink.cond.notify_all()


@dataclass(frozen=True, slots=True)
class AlarmRun:
    latencies_ms: list[float]

    @property
    def p50_ms(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 99)


def _subscriber(rig: BenchRig, broker: MosquittoBroker, name: str, sink: AlarmArrivals) -> Any:
    settings, verifier = rig.provider_side(broker, f"provider-alarm-{name}")
    return AlarmSubscriber(settings, verifier, sink)


def _wait_alarm(sink: AlarmArrivals, reason: str, after: int) -> float:
    """Verification time of the first ``reason`` alarm after the first ``after`` arrivals."""
    deadline = time.monotonic() + ALARM_TIMEOUT_S
    with sink.cond:
        while True:
            for what, at in sink.verified[after:]:
                if what == reason:
                    return at
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError(f"alarm: no {reason!r} verified within {ALARM_TIMEOUT_S} s")
            sink.cond.wait(remaining)


def run_once(
    rig: BenchRig, broker: MosquittoBroker, workdir: Path, name: str, *, episodes: int, stream: bool
) -> AlarmRun:
    sink = AlarmArrivals()
    sub = _subscriber(rig, broker, name, sink)
    link = workdir / f"spo2-{name}"
    config = rig.write_config(broker, workdir / f"alarm-{name}", STREAM if stream else ())
    config.write_text(
        config.read_text()
        + f'\n[[serial_devices]]\nkind = "nonin"\nname = "spo2"\npath = "{link}"\n'
        f'serial = "{SERIAL}"\ninterval_s = 2\n'
    )
    latencies: list[float] = []
    with NoninSim(link) as oximeter:
        oximeter.set(**NORMAL)
        daemon = Daemon(config, workdir, f"alarm-{name}")
        sub.start()
        try:
            if not sub.wait_subscribed(15):
                raise BenchError("alarm: the provider subscriber could not subscribe")
            daemon.start()
            time.sleep(3.0)  # the oximeter streaming, a baseline interval reading taken
            for _ in range(episodes):
                for state, reason in ((DESATURATED, "desaturation"), (NORMAL, "desaturation-end")):
                    with sink.cond:
                        seen = len(sink.verified)
                    t0 = time.time()
                    oximeter.set(**state)
                    latencies.append((_wait_alarm(sink, reason, seen) - t0) * 1000)
                time.sleep(2.5)  # a new baseline interval before the next drop
            if daemon.stop() != 0:
                raise BenchError(f"alarm: gatewayd exited with an error; see {daemon.log_path}")
        finally:
            daemon.kill()
            sub.stop()
    if sink.failures:
        raise BenchError(f"alarm: the provider rejected {sink.failures} records")
    return AlarmRun(latencies)


def measure(
    rig: BenchRig, workdir: Path, runs: int, episodes: int
) -> tuple[list[AlarmRun], list[AlarmRun]]:
    """(idle runs, runs under a 10/s stream)."""
    broker = rig.start_broker("alarm")
    out: tuple[list[AlarmRun], list[AlarmRun]] = ([], [])
    for stream, results in ((False, out[0]), (True, out[1])):
        label = "stream" if stream else "idle"
        for run in range(runs):
            results.append(
                run_once(rig, broker, workdir, f"{label}-{run}", episodes=episodes, stream=stream)
            )
        say(
            f"alarm    {label:<6} device -> verified p50 "
            f"{median([r.p50_ms for r in results]):.0f} ms, p99 "
            f"{median([r.p99_ms for r in results]):.0f} ms "
            f"({2 * episodes} alarms a run, medians of {runs} runs)"
        )
    return out
