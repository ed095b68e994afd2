"""Configuration: valid files load; each kind of mistake is named in one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config.settings import load
from gateway.errors import ConfigError
from tests.factories import VALID_CONFIG as VALID
from tests.factories import write_config as write


def test_valid_config_loads_with_defaults_and_relative_paths(files: Path) -> None:
    cfg = load(write(files, VALID))
    assert cfg.gateway_id == "gw-0001"
    assert cfg.state_dir == files / "state"
    assert cfg.outbox_path == files / "state" / "outbox.db"
    assert cfg.keepalive_s == 30
    assert cfg.records_topic == "homecare/v1/gw/gw-0001/records"
    assert cfg.sim_devices[0].interval_s == 2.0


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("port = 8883", 'port = "abc"'), "uplink.port: must be an integer 1..65535"),
        (("port = 8883", "port = 70000"), "uplink.port: must be an integer 1..65535, got 70000"),
        (('id = "gw-0001"', 'id = "gw 0001"'), "gateway.id:"),
        (
            ('signing_key = "identity.key"', 'signing_key = "nope.key"'),
            "identity.signing_key: file",
        ),
        (('host = "127.0.0.1"', 'hots = "127.0.0.1"'), "uplink.hots: unknown key"),
        (('kind = "thermometer"', 'kind = "toaster"'), "sim_devices[0].kind: must be one of"),
        (("[provider]", '[provider]\nsuite = "rot13"'), "provider.suite: must be one of"),
        (
            ("[provider]", '[provider]\nsuite = "mlkem768-x25519"'),
            "provider.mlkem_public_key: required",
        ),
    ],
)
def test_bad_values_are_named(files: Path, change: tuple[str, str], expected: str) -> None:
    path = write(files, VALID.replace(*change))
    with pytest.raises(ConfigError) as err:
        load(path)
    assert expected in str(err.value)
    assert str(path) in str(err.value)


def test_missing_required_key_is_named(files: Path) -> None:
    with pytest.raises(ConfigError, match=r"uplink\.host: missing"):
        load(write(files, VALID.replace('host = "127.0.0.1"\n', "")))


def test_broken_toml_and_missing_file(files: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(write(files, VALID + "\n[gateway\n"))
    with pytest.raises(ConfigError, match="not found"):
        load(files / "absent.toml")


def test_daemon_refuses_to_start_with_one_line_naming_the_problem(files: Path) -> None:
    path = write(files, VALID.replace("port = 8883", "port = -1"))
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.daemon.main", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "uplink.port" in lines[0]
    assert "Traceback" not in proc.stderr


def test_check_config_accepts_a_valid_file(files: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.daemon.main",
            "--config",
            str(write(files, VALID)),
            "--check-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ('kind = "nonin"\npath = "/dev/homecare/spo2"\n', "serial_devices[0].serial: required"),
        ('kind = "astm"\npath = "dev/crp"\n', "serial_devices[0].path: must be an absolute"),
        ('kind = "astm"\npath = "/dev/crp"\ndevice_tz = "Mars/Olympus"\n', "unknown time zone"),
        ('kind = "astm"\npath = "/dev/crp"\nline = "fast"\n', "serial_devices[0].line"),
        ('kind = "toaster"\npath = "/dev/x"\n', "serial_devices[0].kind: must be one of"),
        ('kind = "modem"\npath = "/dev/m"\nbaud = 9600\n', "serial_devices[0].baud: unknown key"),
    ],
)
def test_serial_device_mistakes_are_named(files: Path, block: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load(write(files, VALID + "\n[[serial_devices]]\n" + block))


def test_serial_devices_are_parsed(files: Path) -> None:
    cfg = load(
        write(
            files,
            VALID + '\n[[serial_devices]]\nkind = "astm"\nname = "crp"\npath = "/dev/homecare/crp"'
            '\nline = "9600 8N1"\ndevice_tz = "Europe/Berlin"\n',
        )
    )
    (crp,) = cfg.serial_devices
    assert (crp.kind, crp.name, crp.path, crp.device_tz) == (
        "astm",
        "crp",
        "/dev/homecare/crp",
        "Europe/Berlin",
    )


def check_enrolled(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.daemon.main", "--config", str(config), "--check-enrolled"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_enrolled_lets_a_router_without_provisioning_start(files: Path) -> None:
    """ExecCondition: a configuration that does not ask for provisioning always runs."""
    proc = check_enrolled(write(files, VALID))
    assert (proc.returncode, proc.stderr) == (0, "")


def test_check_enrolled_fails_the_unit_for_a_broken_configuration(files: Path) -> None:
    """Exit 255 is ExecCondition's "failed" (1-254 would skip quietly): a broken file is seen."""
    proc = check_enrolled(write(files, VALID.replace("[uplink]", "[uplink\n")))
    assert proc.returncode == 255
    assert proc.stderr.startswith("gatewayd: ")
    assert "Traceback" not in proc.stderr


def _daemon(path: Path, *extra: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from gateway.daemon.main import main  # noqa: PLC0415 - only these tests run it in-process

    code = main(["--config", str(path), *extra])
    return code, capsys.readouterr().err.strip()


def test_check_config_refuses_sim_devices_without_the_plug_in_as_the_start_does(
    files: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A router's package carries no simulated devices: --check-config must say so, in the
    start's words, instead of passing a file the service then refuses."""
    import gateway.daemon.wiring as wiring  # noqa: PLC0415

    monkeypatch.setattr(wiring, "entry_points", lambda **_kw: ())
    path = write(files, VALID)
    checked = _daemon(path, "--check-config", capsys=capsys)
    started = _daemon(path, capsys=capsys)
    assert checked[0] == started[0] == 2
    assert "device kind 'simulated' is not installed here" in checked[1]
    assert checked[1] == started[1]


def test_check_config_refuses_a_bad_sim_device_address_as_the_start_does(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(files, re.sub(r'address = "[^"]*"', 'address = "not-an-address"', VALID, count=1))
    checked = _daemon(path, "--check-config", capsys=capsys)
    started = _daemon(path, capsys=capsys)
    assert checked[0] == started[0] == 2
    assert "sim_devices[0].address: not a Bluetooth address: 'not-an-address'" in checked[1]
    assert checked[1] == started[1]
