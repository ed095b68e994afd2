"""The HIL suite's pytest wiring: rig profile, capability skips, per-scenario timeouts, report.

``RIG=sim`` (default) or ``RIG=path/to/rig.toml`` picks the rig. A scenario marked
``@pytest.mark.needs(Capability.X)`` is skipped with the profile's reason when the rig lacks X;
``@pytest.mark.timeout_s(N)`` fails it with a clear message after N seconds (SIGALRM: the
scenarios are synchronous and run on the main thread).
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
for _p in (str(_HERE.parent), str(_HERE)):  # the repo (gateway, tests.integration) and hil
    if _p not in sys.path:
        sys.path.insert(0, _p)

from hil.base import HilRig  # noqa: E402 - needs the path set up above
from hil.profile import Capability, ProfileError, RigProfile, load  # noqa: E402
from hil.report import HilReport  # noqa: E402

PROFILE = pytest.StashKey[RigProfile]()
REPORT = pytest.StashKey[HilReport]()
DEFAULT_TIMEOUT_S = 120


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "needs(*capabilities): rig capabilities a scenario needs")
    config.addinivalue_line("markers", "timeout_s(seconds): the scenario's time limit")
    # Long tracebacks print every frame's arguments - Measurement reprs with clinical values -
    # into the terminal and the JUnit XML. Short ones print only code and our messages.
    if config.option.tbstyle in ("auto", "long"):
        config.option.tbstyle = "short"
    if getattr(config.option, "showlocals", False):
        raise pytest.UsageError("--showlocals would print clinical values into the HIL report")
    rig = os.environ.get("RIG", "sim") or "sim"
    try:
        profile = load(rig)
    except ProfileError as exc:
        raise pytest.UsageError(f"bad rig profile: {exc}") from None
    config.stash[PROFILE] = profile
    config.stash[REPORT] = HilReport(profile.name, str(profile.path))
    config.pluginmanager.register(_Recorder(config.stash[REPORT]), "hil-recorder")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    profile = config.stash[PROFILE]
    for item in items:
        for mark in item.iter_markers("needs"):
            for cap in mark.args:
                reason = profile.missing(Capability(cap))
                if reason:
                    item.add_marker(pytest.mark.skip(reason=f"missing capability {cap}: {reason}"))
                    break


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    mark = item.get_closest_marker("timeout_s")
    limit = int(mark.args[0]) if mark else DEFAULT_TIMEOUT_S

    def expired(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"scenario {item.name} exceeded its time limit of {limit} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(limit)
    try:
        return (yield)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class _Recorder:
    """Collects each scenario's outcome, duration, skip reason and timings into the report."""

    def __init__(self, report: HilReport) -> None:
        self.report = report

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = self.report.row(report.nodeid)
        row.duration_s += report.duration
        for name, value in report.user_properties:
            if name.startswith("timing."):
                row.timings[name.removeprefix("timing.")] = float(str(value))
        if report.skipped:
            row.result = "skipped"
            longrepr = report.longrepr
            text = str(longrepr[2] if isinstance(longrepr, tuple) else longrepr)
            row.reason = text.removeprefix("Skipped: ")
        elif report.failed:
            row.result = "failed" if report.when == "call" else "error"
            crash = getattr(report.longrepr, "reprcrash", None)
            message = crash.message if crash is not None else report.longreprtext
            row.reason = " ".join(message.split())[:200]

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.report.rows:
            return
        path = self.report.write()
        tr = terminalreporter
        tr.section("HIL summary")
        for line in self.report.table():
            tr.write_line(line)
        tr.section("rig report")
        for line in self.report.fact_lines():
            tr.write_line(line)
        tr.write_line(f"written to {path}")


# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> RigProfile:
    return pytestconfig.stash[PROFILE]


@pytest.fixture(scope="session")
def hil_report(pytestconfig: pytest.Config) -> HilReport:
    return pytestconfig.stash[REPORT]


@pytest.fixture(scope="session")
def ble_reason(profile: RigProfile) -> str | None:
    """None if the gateway takes ``[[ble_devices]]``, else why not (the BLE skip reason)."""
    return _ble_reason(profile)


def _ble_reason(profile: RigProfile) -> str | None:
    if not profile.simulated:
        return None  # the real rig's gateway is configured by its own provisioning
    from hil.probes import daemon_ble_support  # noqa: PLC0415 - cached, asked once

    return daemon_ble_support()


def _make_rig(profile: RigProfile, base: Path, ble_reason: str | None, *,
              enrolled: bool = False) -> HilRig:
    if profile.simulated:
        from hil.sim import SimRig  # noqa: PLC0415 - root and netns only on the sim rig

        return SimRig(profile, base, ble_reason=ble_reason, enrolled=enrolled)
    from hil.real import RealRig  # noqa: PLC0415

    return RealRig(profile)


def _rig(profile: RigProfile, base: Path, ble_reason: str | None,
         report: HilReport, *, enrolled: bool = False) -> Iterator[HilRig]:
    rig = _make_rig(profile, base, ble_reason, enrolled=enrolled)
    try:
        rig.start()
        report.add_facts(rig.facts())
        yield rig
    finally:
        rig.close()


@pytest.fixture
def hil_rig(profile: RigProfile, ble_reason: str | None, hil_report: HilReport,
            tmp_path: Path) -> Iterator[HilRig]:
    """A freshly started rig for a scenario that cuts power, drops links or moves devices."""
    yield from _rig(profile, tmp_path, ble_reason, hil_report)


@pytest.fixture
def enrolled_rig(profile: RigProfile, ble_reason: str | None, hil_report: HilReport,
                 tmp_path: Path) -> Iterator[HilRig]:
    """A freshly started rig whose gateway was enrolled through EST with a one-time token and a
    signed bundle binding the rig's devices (a real rig's router always is)."""
    yield from _rig(profile, tmp_path, ble_reason, hil_report, enrolled=True)


@pytest.fixture(scope="module")
def shared_rig(profile: RigProfile, ble_reason: str | None, hil_report: HilReport,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[HilRig]:
    """One rig for the scenarios of a module that only watch (first readings)."""
    yield from _rig(profile, tmp_path_factory.mktemp("rig"), ble_reason, hil_report)


@pytest.fixture
def timing(record_property: Callable[[str, object], None]) -> Callable[[str, float], None]:
    """``timing("recovery", 4.2)``: a figure for the JUnit XML and the rig report."""

    def record(name: str, seconds: float) -> None:
        record_property(f"timing.{name}", f"{seconds:.2f}")

    return record


@pytest.fixture(scope="session", autouse=True)
def _software_version(profile: RigProfile, hil_report: HilReport) -> None:
    from hil.probes import software_version  # noqa: PLC0415

    hil_report.add_facts({"software": software_version(profile)})


@pytest.fixture(scope="session", autouse=True)
def _ble_device_information(profile: RigProfile, hil_report: HilReport) -> None:
    """Model and firmware of every BLE device, read from its Device Information service."""
    if not profile.ble_devices:
        return
    from hil.probes import ble_device_information  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="hil-dis-") as tmp:
        hil_report.add_facts({"devices": ble_device_information(profile, Path(tmp)),
                              "adapter": ("simulated BlueZ " if profile.simulated else "")
                              + str(profile.ble_adapter)})


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One scenario instance per attached device (``device_name``) or per device that can be
    moved out of range (``range_device_name``), as the rig profile lists them."""
    from hil.profile import range_devices  # noqa: PLC0415

    profile = metafunc.config.stash[PROFILE]
    ble = {d.name for d in profile.ble_devices}

    def param(name: str) -> Any:
        reason = _ble_reason(profile) if name in ble else None
        return pytest.param(name, marks=pytest.mark.skip(reason=reason)) if reason else name

    if "device_name" in metafunc.fixturenames:
        names = [d.name for d in profile.sim_devices] + [
            s.name for s in profile.medical_serial] + [d.name for d in profile.patient_ble]
        metafunc.parametrize("device_name", [param(n) for n in names])
    if "range_device_name" in metafunc.fixturenames:
        names = list(range_devices(profile))
        metafunc.parametrize("range_device_name", [param(n) for n in names] or [
            pytest.param("-", marks=pytest.mark.skip(reason=profile.missing(
                Capability.OUT_OF_RANGE) or ""))])


@pytest.fixture
def ble_ok(profile: RigProfile, ble_reason: str | None) -> None:
    """Skip (before any rig starts) when the gateway cannot take BLE devices."""
    if not profile.patient_ble:
        pytest.skip(profile.missing(Capability.BLE) or "")
    if ble_reason:
        pytest.skip(ble_reason)


@pytest.fixture(scope="session")
def lifecycle_reason(profile: RigProfile) -> str | None:
    from hil.probes import lifecycle_support  # noqa: PLC0415

    return lifecycle_support(profile)


@pytest.fixture
def profile_has_wan(profile: RigProfile) -> bool:
    return profile.missing(Capability.WAN_DROP) is None
