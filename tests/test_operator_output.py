"""What people at the router read: no Python in it, one verdict per check, config found.

The human renderings of ``status``, ``devices``, ``config-check``, the support bundle's config
and the demo's receiver lines are pinned here against Python reprs (``True``, ``None``,
``['10.64.12.7']``, ``BleDeviceConfig(...)``), which a person should never have to read.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import diagnosis, diagnostics, support_bundle
from gateway.cli.main import EXIT_OK, EXIT_USAGE, devices_table, main, render_status
from gateway.config.settings import load
from gateway.fhir import codes
from gateway.seal import wire
from provider.service import record_lines
from provider.verifier import VerifiedRecord
from provisioning import install_check as ic
from tests.factories import VALID_CONFIG, make_bp_measurement, make_measurement, write_config
from tests.test_diagnosis import healthy

# What Python prints and people should not read.
REPR = re.compile(
    r"\b(True|False|None)\b|\[['\"]|\{['\"]|\b[A-Z][A-Za-z]*(Config|Id|Path)\(|Decimal\("
)


def assert_no_repr(text: str) -> None:
    found = REPR.search(text)
    assert found is None, f"a Python repr {found.group(0)!r} in:\n{text}"


def test_the_repr_check_can_fail() -> None:
    for bad in ("registered True", "pdp addresses ['10.64.12.7']", "BleDeviceConfig(address=",
                "valid True", "x None"):
        with pytest.raises(AssertionError):
            assert_no_repr(bad)


def test_status_shows_lists_and_flags_in_words() -> None:
    text = render_status(healthy())
    assert_no_repr(text)
    assert "registered yes" in text
    assert "pdp addresses 10.64.12.7" in text
    assert "route via vpn yes" in text


def test_devices_table_has_no_repr() -> None:
    assert_no_repr(devices_table(healthy()["devices"]))


BLE_AND_SERIAL = (
    '\n[[ble_devices]]\naddress = "A4:C1:38:00:00:01"\nprofile = "thermometer"\npasskey = 123456\n'
    '\n[[serial_devices]]\nkind = "astm"\nname = "crp"\npath = "/dev/ttyUSB0"\n'
)


def test_config_check_counts_every_kind_of_device_in_words(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(files, VALID_CONFIG + BLE_AND_SERIAL)
    assert main(["config-check", "--config", str(config)]) == EXIT_OK
    out = capsys.readouterr().out
    assert_no_repr(out)
    assert f"{config}: valid" in out
    assert "1 BLE, 1 serial (astm), 1 simulated" in out
    assert main(["config-check", "--config", str(config), "--json"]) == EXIT_OK
    facts = json.loads(capsys.readouterr().out)
    assert (facts["valid"], facts["ble_devices"], facts["serial_devices"]) == (True, 1, 1)


def test_support_bundle_config_is_json_without_reprs_or_passkeys(files: Path) -> None:
    cfg = load(write_config(files, VALID_CONFIG + BLE_AND_SERIAL))
    text = json.dumps(support_bundle._config_summary(cfg))
    assert re.search(r"\b[A-Z][A-Za-z]*\(", text) is None, text  # no BleDeviceConfig(...)
    assert json.loads(text)["ble_devices"][0]["profile"] == "thermometer"
    assert "A4:C1:38:00:00:01" in text
    assert "123456" not in text  # the passkey is kept out of reprs, so out of the bundle too


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_config_is_accepted_before_or_after_the_command_or_from_the_environment(
    where: str, files: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = str(write_config(files, VALID_CONFIG))
    argv = {
        "before": ["--config", config, "config-check"],
        "after": ["config-check", "--config", config],
        "env": ["config-check"],
    }[where]
    monkeypatch.setenv("HOMECARE_GATEWAY_CONFIG", config if where == "env" else "/nonexistent")
    assert main(argv) == EXIT_OK
    assert f"{config}: valid" in capsys.readouterr().out


def test_a_missing_file_says_file_not_found_not_fix_the_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "nope.toml: file not found" in err
    assert "fix the named key" not in err
    assert "--config" in err


def test_help_names_the_demo_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--config .demo/gateway.toml" in capsys.readouterr().out


def test_logs_points_to_the_log_file_of_a_daemon_started_by_hand(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the demo: no journal has its lines and no daemon answers, but .demo/gatewayd.log
    (beside .demo/gateway.toml) has them; logs says where."""
    config = write_config(
        files, VALID_CONFIG + f'\n[control]\nsocket = "{files / "gone.sock"}"\n'
    )
    log = files / "gatewayd.log"
    log.write_text("")
    main(["logs", "--config", str(config)])
    out, err = capsys.readouterr()
    assert str(log) in out + err
    log.unlink()
    main(["logs", "--config", str(config)])
    out, err = capsys.readouterr()
    assert "gatewayd.log" not in out + err


def test_python_m_provider_est_runs_the_desk_service() -> None:
    done = subprocess.run([sys.executable, "-m", "provider.est", "--help"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0
    assert "serve-est" in done.stdout
    assert "--desk" in done.stdout


# --- the demo's receiver lines ----------------------------------------------------------------


def _record(*measurements: Any, seq: int = 7) -> VerifiedRecord:
    hdr = wire.RecordHeader(wire.RecordKind.OBSERVATIONS, 0, 0, 0, 0, 0, 1, seq, 0, bytes(32),
                            "gw-demo-0001")
    return VerifiedRecord(header=hdr, duplicate=False, body={}, measurements=measurements)


def test_demo_readings_have_units_for_people_and_values_as_transmitted() -> None:
    lines = record_lines(_record(make_measurement(value=Decimal("37.40")), make_bp_measurement()))
    text = "\n".join(lines)
    assert_no_repr(text)
    assert lines[0].startswith("verified  gw-demo-0001 #7  2 readings")
    assert "Body temperature: 37.40 °C" in text  # the device's precision, kept
    assert "120/80/93 mmHg" in text
    assert "Cel" not in text
    assert "mm[Hg]" not in text
    oral = "\n".join(record_lines(_record(make_measurement(mdc_code=188424))))
    assert "Oral temperature" in oral
    assert "MDC" not in oral


def test_device_text_is_quoted_and_escaped_not_a_python_repr() -> None:
    m = make_measurement(value=None, text="FEV1 ok\x1b[2J", unit="1")
    (_, line) = record_lines(_record(m))
    assert line.endswith('"FEV1 ok\\u001b[2J"')
    assert "\x1b" not in line


def test_a_health_record_names_its_alarms_in_words() -> None:
    hdr = wire.RecordHeader(wire.RecordKind.HEALTH, 0, 0, 0, 0, 0, 1, 3, 0, bytes(32), "gw-1")
    body = {"outbox": {"depth": 0}, "uplink": {"state": "connected"},
            "devices": [{"silent": True}], "alarms": ["device-silent:C0:FF"]}
    (line,) = record_lines(VerifiedRecord(header=hdr, duplicate=False, body=body))
    assert_no_repr(line)
    assert line.endswith("1 devices (1 silent), alarms device-silent:C0:FF")


def test_a_stream_chunk_is_a_few_lines_not_one_per_reading() -> None:
    base = datetime(2026, 1, 1, tzinfo=UTC)
    chunk = [
        make_measurement(mdc_code=codes.MDC_PULS_OXIM_PULS_RATE, value=Decimal(60 + i % 10),
                         unit="/min", device_time=base + timedelta(seconds=i))
        for i in range(47)
    ]
    temperature = make_measurement(value=Decimal("36.9"))
    lines = record_lines(_record(*chunk, *chunk[:1], temperature))
    assert len(lines) <= 3, lines
    assert "48 readings, 60 to 69 /min" in lines[1]
    assert lines[2].endswith("Body temperature: 36.9 °C")  # alone: as a single reading
    same = record_lines(_record(*[make_measurement(value=Decimal("72"), unit="/min")] * 9))
    assert same[1].endswith(": 9 readings, all 72 /min")


# --- one verdict for the unsynchronised clock -------------------------------------------------


class FakeDaemon:
    def __init__(self, synchronised: bool, delivered: list[bool] | None = None) -> None:
        self.synchronised = synchronised
        self.delivered = list(delivered or [])
        self.pending_polls = 0

    def __call__(self, command: str, timeout_s: float = 5.0, **args: Any) -> Any:
        if command == "provisioning.devices":
            now = self.delivered.pop(0) if len(self.delivered) > 1 else self.delivered[0]
            return [{"profile": "thermometer", "address": "C0:FF:EE:00:00:01",
                     "durable_seq": 3, "delivered": now}]
        if command == "status":
            return {"uplink": {"state": "connected"}, "links": {},
                    "clock": {"source": "chrony", "synchronised": self.synchronised}}
        if command == "provisioning.event":
            return {"seq": 9}
        if command == "provisioning.pending":
            self.pending_polls += 1
            return {"pending": [9]}  # never acknowledged
        raise AssertionError(command)


class FakeEst:
    def provider_time(self) -> datetime:
        return datetime.now(UTC)


def _install_rows(files: Path, daemon: FakeDaemon, timeout_s: float) -> list[ic.Row]:
    cfg = load(write_config(files, VALID_CONFIG))
    est: Any = FakeEst()  # provider_time() is all install_check asks of the EST client
    return ic.install_check(cfg, daemon, est, device_timeout_s=timeout_s, poll_s=0.01)


def test_an_unsynchronised_clock_is_a_warning_in_status_selftest_and_install_check(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = healthy()
    status["clock"] = {"source": "chrony", "synchronised": False, "offset_ms": 3}
    clock = [f for f in diagnosis.diagnose(status) if f.subject == "clock"]
    assert [f.severity.value for f in clock] == ["warning"]

    monkeypatch.setattr(diagnostics, "clock_sync",
                        lambda: {"source": "chrony", "synchronised": False})
    cfg = load(write_config(files, VALID_CONFIG))
    (selftest_clock,) = [c for c in diagnostics.selftest(cfg) if c.name == "clock"]
    assert (selftest_clock.ok, selftest_clock.verdict) == (True, "WARN")

    rows = {r.name: r for r in _install_rows(files, FakeDaemon(False, [True]), 0.2)}
    assert rows["clock"].verdict == "WARN"
    rows = {r.name: r for r in _install_rows(files, FakeDaemon(True, [True]), 0.2)}
    assert rows["clock"].verdict == "PASS"


def test_install_check_record_wait_is_bounded_by_its_timeout(files: Path) -> None:
    started = datetime.now(UTC)
    rows = {r.name: r for r in _install_rows(files, FakeDaemon(True, [True]), 0.5)}
    assert (datetime.now(UTC) - started).total_seconds() < 10  # not the 60 s of before
    assert rows["record"].verdict == "FAIL"
    assert "within 0 s" in rows["record"].detail or "within 1 s" in rows["record"].detail


def test_install_check_table_agrees_with_its_progress(files: Path) -> None:
    """Delivered once (the progress said so), then a newer reading waits for its PUBACK: the
    table still says PASS for the device."""
    daemon = FakeDaemon(True, [True, False])
    rows = {r.name: r for r in _install_rows(files, daemon, 0.2)}
    assert rows["thermometer C0:FF:EE:00:00:01"].verdict == "PASS"
