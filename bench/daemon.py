"""The daemon as a process: start-up time to READY=1, and steady-state RSS with 8 devices.

* ``startup_s``: from ``Popen`` of ``python -m gateway.daemon.main`` to the READY=1 datagram on a
  notify socket we bind (the daemon's sd_notify), with a fresh state directory each run; the
  broker is up (READY does not wait for it anyway). Also measured, not part of the JSON: the
  same with a backlog of one-reading records in the outbox (start-up runs ``PRAGMA quick_check``
  over the whole file), and how much of the time is the bare interpreter and the imports.
* ``rss_mb``: VmRSS from ``/proc/<pid>/status`` after a steady period with 8 simulated devices
  (pulse oximeters, thermometers, blood-pressure monitors in turn) at one reading per second
  each, uploading to a local mosquitto.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import SIM_KINDS, Window, address, median, say
from bench.rig import BenchRig, Daemon, SimDevice
from provider.broker import MosquittoBroker

RSS_DEVICES = tuple(
    SimDevice(SIM_KINDS[i % len(SIM_KINDS)], address(0x10 + i), 1.0) for i in range(8)
)


@dataclass(frozen=True, slots=True)
class RssRun:
    rss_mb: float  # at the end of the window
    min_mb: float  # over the window
    max_mb: float
    hwm_mb: float  # peak since start (VmHWM)
    startup_s: float
    cpu_pct: float  # over the window, % of one core


def rss_once(
    rig: BenchRig, broker: MosquittoBroker, workdir: Path, run: int, timing: Window
) -> RssRun:
    config = rig.write_config(broker, workdir / f"rss-{run}", RSS_DEVICES)
    daemon = Daemon(config, workdir, f"rss-{run}")
    try:
        startup_s = daemon.start()
        time.sleep(timing.warmup_s)
        samples = []
        first = time.monotonic()
        end = first + timing.window_s
        while True:
            samples.append(daemon.sample())
            last = time.monotonic()
            if last >= end:
                break
            time.sleep(1.0)
        daemon.stop()
    finally:
        daemon.kill()
    mb = [s.rss_kb / 1024 for s in samples]
    cpu_pct = (samples[-1].cpu_s - samples[0].cpu_s) / (last - first) * 100
    return RssRun(mb[-1], min(mb), max(mb), samples[-1].hwm_kb / 1024, startup_s, cpu_pct)


def measure_rss(rig: BenchRig, workdir: Path, runs: int, timing: Window) -> list[RssRun]:
    broker = rig.start_broker("rss")
    results = []
    for i in range(runs):
        r = rss_once(rig, broker, workdir, i, timing)
        results.append(r)
        say(
            f"rss      run {i + 1}/{runs}: {r.rss_mb:5.1f} MB after "
            f"{timing.warmup_s + timing.window_s:.0f} s "
            f"with 8 devices (window {r.min_mb:.1f}..{r.max_mb:.1f} MB, peak {r.hwm_mb:.1f} MB; "
            f"CPU {r.cpu_pct:.2f} % of one core: 8 readings/s arriving together once a second)"
        )
    say(
        f"rss      median {median([r.rss_mb for r in results]):.1f} MB; CPU with these 8 devices "
        f"median {median([r.cpu_pct for r in results]):.2f} %"
    )
    return results


def startup_once(
    rig: BenchRig, broker: MosquittoBroker, workdir: Path, name: str, backlog: Path | None = None
) -> float:
    state_dir = workdir / f"startup-{name}"
    state_dir.mkdir(parents=True)
    if backlog is not None:
        shutil.copyfile(backlog, state_dir / "outbox.db")
    config = rig.write_config(broker, state_dir, RSS_DEVICES)
    daemon = Daemon(config, workdir, f"startup-{name}")
    try:
        seconds = daemon.start()
        daemon.stop()
    finally:
        daemon.kill()
    return seconds


def _python_s(code: str) -> float:
    t0 = time.monotonic()
    subprocess.run(  # noqa: S603 - our interpreter, a fixed snippet
        [sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL, capture_output=True
    )
    return time.monotonic() - t0


OWN_PACKAGES = ("gateway", "buffer", "drivers", "provisioning")
# VmHWM, not ru_maxrss: Linux carries the parent's high-water mark into ru_maxrss across exec.
_IMPORT_PROBE = (
    "import pathlib, gateway.daemon.main; print([l.split()[1] for l in "
    "pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM')][0])"
)


@dataclass(frozen=True, slots=True)
class ImportProfile:
    bare_rss_mb: float
    imports_rss_mb: float  # peak RSS of an interpreter that only imported gateway.daemon.main
    largest_s: list[tuple[str, float]]  # third-party packages by cumulative import time


def import_profile() -> ImportProfile:
    """``python -X importtime -c 'import gateway.daemon.main'``: what start-up and memory spend
    on."""
    bare = subprocess.run(  # noqa: S603 - our interpreter, a fixed snippet
        [sys.executable, "-c", _IMPORT_PROBE.replace("gateway.daemon.main", "sys")],
        check=True,
        capture_output=True,
        text=True,
    )
    probe = subprocess.run(  # noqa: S603 - our interpreter, a fixed snippet
        [sys.executable, "-X", "importtime", "-c", _IMPORT_PROBE],
        check=True,
        capture_output=True,
        text=True,
    )
    by_root: dict[str, float] = {}
    for line in probe.stderr.splitlines():
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue  # the header line
        root = parts[2].strip().split(".")[0]
        if root not in OWN_PACKAGES:
            by_root[root] = max(by_root.get(root, 0.0), int(parts[1]) / 1e6)
    largest = sorted(by_root.items(), key=lambda kv: -kv[1])[:6]
    return ImportProfile(int(bare.stdout) / 1024, int(probe.stdout) / 1024, largest)


def measure_startup(
    rig: BenchRig, workdir: Path, runs: int, backlog: tuple[Path, int] | None
) -> list[float]:
    broker = rig.start_broker("startup")
    results = []
    for i in range(runs):
        s = startup_once(rig, broker, workdir, str(i))
        results.append(s)
        say(f"startup  run {i + 1}/{runs}: {s:.3f} s from spawn to READY=1 (fresh state dir)")
    bare = median([_python_s("pass") for _ in range(3)])
    imports = median([_python_s("import gateway.daemon.main") for _ in range(3)])
    say(
        f"startup  of which: bare interpreter {bare:.3f} s, interpreter + imports of "
        f"gateway.daemon.main {imports:.3f} s (median of 3 each)"
    )
    prof = import_profile()
    say(
        "startup  largest imports (cumulative s, nested ones counted in their parents too): "
        + ", ".join(f"{name} {sec:.3f}" for name, sec in prof.largest_s)
    )
    say(
        f"rss      an interpreter that only imports gateway.daemon.main peaks at "
        f"{prof.imports_rss_mb:.1f} MB (a bare one at {prof.bare_rss_mb:.1f} MB)"
    )
    if backlog is not None:
        with_backlog = [
            startup_once(rig, broker, workdir, f"backlog-{i}", backlog[0]) for i in range(runs)
        ]
        say(
            f"startup  with {backlog[1]} one-reading records waiting in the outbox "
            f"({backlog[0].stat().st_size / 1e6:.1f} MB): median {median(with_backlog):.3f} s"
        )
    say(f"startup  median {median(results):.3f} s")
    return results
