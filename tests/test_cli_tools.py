"""gatewayctl logs (journal, or the daemon's memory) / scan, tables, help and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
import structlog.testing

from gateway import logs
from gateway.cli import journal
from gateway.cli import main as cli
from gateway.cli.ble_scan import advertisers, with_connected
from gateway.cli.journal import JournalQuery, parse_since
from gateway.cli.main import COMMANDS, EXIT_NO_DAEMON, EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, main
from gateway.cli.tables import table
from gateway.control import ControlError, ControlServer, ask
from gateway.errors import UsageError
from gateway.logs import RecentEvents
from tests.factories import VALID_CONFIG as VALID
from tests.factories import write_config as write

# What our daemon writes to the journal (JSON, one event a line), plus lines that are not ours.
JOURNAL = [
    '{"timestamp": "2026-11-23T10:00:00Z", "level": "info", "event": "gateway.ready", '
    '"drivers": 3}',
    '{"timestamp": "2026-11-23T10:00:01Z", "level": "warning", "event": "x", "value": "38.9"}',
    "Traceback (most recent call last): temperature 38.9",
]


def fake_journalctl(bin_dir: Path, *, stdout: list[str], rc: int = 0, stderr: str = "") -> Path:
    """A journalctl stand-in on PATH (the platform edge): records its argv, prints canned lines."""
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "out.txt").write_text("".join(line + "\n" for line in stdout))
    script = bin_dir / "journalctl"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{bin_dir}/argv.txt"\n'
        f'cat "{bin_dir}/out.txt"\n'
        f'printf "%s" "{stderr}" >&2\n'
        f"exit {rc}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return bin_dir


@pytest.fixture
def on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def test_logs_asks_journalctl_for_the_unit_and_redacts_every_line(
    on_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_journalctl(on_path, stdout=JOURNAL)
    assert main(["logs", "--since", "30 min ago", "--lines", "5", "--json"]) == EXIT_OK
    argv = (on_path / "argv.txt").read_text().splitlines()
    assert argv == [
        "-u", "gatewayd.service", "-n", "5", "-o", "cat", "--no-pager", "--since", "30 min ago"
    ]  # fmt: skip
    events = json.loads(capsys.readouterr().out)
    assert events == [
        {"timestamp": "2026-11-23T10:00:00Z", "level": "info", "event": "gateway.ready",
         "drivers": 3},
        {"timestamp": "2026-11-23T10:00:01Z", "level": "warning", "event": "x",
         "value": "[redacted]"},
        {"unparsed_line_chars": len(JOURNAL[2])},
    ]  # fmt: skip
    assert main(["logs"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "2026-11-23T10:00:00Z  info  gateway.ready  drivers=3" in text
    assert "38.9" not in text


def test_logs_without_a_journal_says_so_and_exits_1(
    on_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path.mkdir()
    monkeypatch.setenv("PATH", str(on_path))  # no journalctl at all
    assert main(["logs"]) == EXIT_PROBLEM
    err = capsys.readouterr().err
    assert "journalctl is not installed" in err
    assert "stderr" in err  # the hint: where the logs are instead
    # journalctl present but the system keeps no journal: it prints nothing and exits 0.
    monkeypatch.setenv("PATH", f"{on_path}{os.pathsep}/usr/bin:/bin")
    fake_journalctl(on_path, stdout=[])
    monkeypatch.setattr("gateway.cli.journal.JOURNAL_DIRS", (on_path / "no-journal",))
    assert main(["logs"]) == EXIT_PROBLEM
    assert "keeps no journal" in capsys.readouterr().err
    fake_journalctl(on_path, stdout=[], rc=1, stderr="Failed to add match")
    assert main(["logs"]) == EXIT_PROBLEM
    assert "journalctl failed: Failed to add match" in capsys.readouterr().err


def test_logs_lines_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["logs", "--lines", "0"])
    assert done.value.code == EXIT_USAGE
    assert "must be at least 1" in capsys.readouterr().err


def test_scan_lists_serial_ports_by_stable_path_and_flags_a_missing_configured_one(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    by_id = files / "by-id"
    by_id.mkdir()
    master, slave = pty.openpty()
    try:
        tty = os.ttyname(slave)
        crp, spare = by_id / "usb-Sim_CRP-if00-port0", by_id / "usb-FTDI_spare-if00-port0"
        crp.symlink_to(tty)
        spare.symlink_to(tty)
        missing = files / "dev" / "spo2"
        config = write(
            files,
            VALID
            + f'\n[[serial_devices]]\nkind = "astm"\nname = "crp"\npath = "{crp}"\n'
            f'\n[[serial_devices]]\nkind = "nonin"\nname = "spo2"\npath = "{missing}"\n'
            'serial = "501234567"\n',
        )
        args = ["scan", "--no-ble", "--serial-dir", str(by_id), "--config", str(config)]
        assert main([*args, "--json"]) == EXIT_PROBLEM  # a configured port is missing
        found = json.loads(capsys.readouterr().out)
        assert found["ble"] is None
        assert found["serial"] == [
            {"path": str(spare), "present": True, "target": tty, "configured_as": None},
            {"path": str(crp), "present": True, "target": tty, "configured_as": "crp"},
            {"path": str(missing), "present": False, "target": None, "configured_as": "spo2"},
        ]
        assert main(args) == EXIT_PROBLEM
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["SERIAL", "PORT", "DEVICE", "CONFIGURED", "AS"]
        assert lines[3].split() == [str(missing), "MISSING", "spo2"]
    finally:
        os.close(master)
        os.close(slave)


def test_scan_lists_a_bound_device_the_daemon_holds_as_connected_not_as_missing() -> None:
    """A connected BLE peripheral stops advertising: what the daemon reports fills the gap."""
    heard = advertisers(
        [("a4:00:00:00:00:09", "TH next door", -80, ()), ("A4:00:00:00:00:02", None, -50, ())],
        bound={"A4:00:00:00:00:01", "A4:00:00:00:00:02"},
    )
    found = with_connected(heard, {"a4:00:00:00:00:01": -61, "A4:00:00:00:00:02": -50})
    assert [(a.address, a.bound, a.connected, a.rssi_dbm) for a in found] == [
        ("A4:00:00:00:00:02", True, True, -50),  # heard anyway: only marked connected
        ("A4:00:00:00:00:01", True, True, -61),  # silent on the air, held by the daemon
        ("A4:00:00:00:00:09", False, False, -80),
    ]
    assert with_connected(heard, {}) == heard  # no daemon to ask: only what was heard


def test_tables_align_columns_and_show_missing_values_as_a_dash() -> None:
    assert table(["device", "battery"], [["serial:AS1", None], ["ble:A4", "87%"]]) == (
        "DEVICE      BATTERY\nserial:AS1  -\nble:A4      87%"
    )


def test_every_command_has_help_text_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    assert {"logs", "scan", "status", "devices", "outbox"} <= set(COMMANDS)
    for name, (_, help_text, _) in COMMANDS.items():
        with pytest.raises(SystemExit) as done:
            parser.parse_args([name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert f"usage: gatewayctl {name}" in out
        assert help_text.split()[0] in out
        assert "example: gatewayctl " + name.split()[0] in out
        assert "--json" in out
        assert "--config" in out


def test_each_documented_exit_code_is_reachable(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 fine, 1 a problem found, 2 bad configuration or usage, 3 daemon unreachable."""
    doc = cli.__doc__ or ""
    assert "0 fine, 1 a problem was found" in doc
    assert "3 the daemon could not be reached" in doc
    config = write(files, VALID)
    assert main(["version"]) == EXIT_OK
    assert main(["config-check", "--config", str(config)]) == EXIT_OK
    assert main(["outbox", "--config", str(config)]) == EXIT_PROBLEM  # no outbox yet
    bad = write(files, VALID.replace("port = 8883", "port = 0"))
    assert main(["status", "--config", str(bad)]) == EXIT_USAGE
    # A control socket nothing listens on (the default path may have a daemon on a dev box).
    config = write(files, VALID + f'\n[control]\nsocket = "{files / "none.sock"}"\n')
    assert main(["status", "--config", str(config)]) == EXIT_NO_DAEMON
    assert main(["devices", "--config", str(config)]) == EXIT_NO_DAEMON
    err = capsys.readouterr().err
    assert err.count("gatewayctl: ") >= 4


def test_log_lines_go_to_stderr_so_json_stdout_stays_one_document(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--verbose", "version", "--json"]) == EXIT_OK
    structlog.get_logger("test").info("provisioning.return_step", step="drained")
    out, err = capsys.readouterr()
    assert "provisioning.return_step" in err
    json.loads(out)  # nothing but the answer on stdout


@pytest.mark.parametrize("argv", [["version"], ["version", "--json"]])
def test_without_verbose_an_operator_sees_no_log_lines(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """est.refused and friends stay out of enrol / return output unless asked for (-v)."""
    assert main(argv) == EXIT_OK
    structlog.get_logger("test").warning("est.refused", status=401)
    assert "est.refused" not in capsys.readouterr().err
    assert main(["version", "-v"]) == EXIT_OK
    structlog.get_logger("test").warning("est.refused", status=401)
    assert "est.refused" in capsys.readouterr().err


def test_capture_logs_still_sees_a_quiet_commands_events() -> None:
    with structlog.testing.capture_logs() as logs:
        assert main(["version"]) == EXIT_OK
        structlog.get_logger("test").warning("est.refused", status=401)
    assert [e["event"] for e in logs] == ["est.refused"]


def test_the_daemon_keeps_its_last_events_redacted_in_memory() -> None:
    recent = RecentEvents(capacity=3)
    log = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=logs.processors(json=True, recent=recent)
    )
    for n in range(5):
        log.info("t.reading", n=n, value="38.9", key="c2VjcmV0")
    events = recent.last(10)
    assert [e["n"] for e in events] == [2, 3, 4]  # the newest, oldest first
    assert {(e["value"], e["key"], e["level"]) for e in events} == {
        ("[redacted]", "[redacted]", "info")
    }
    assert [e["n"] for e in recent.last(2)] == [3, 4]
    stamp = datetime.fromisoformat(events[1]["timestamp"])
    assert [e["n"] for e in recent.last(10, since=stamp)] == [3, 4]


async def test_the_control_socket_serves_them_and_refuses_bad_requests(tmp_path: Path) -> None:
    recent = RecentEvents()
    recent(None, "info", {"event": "a", "timestamp": "2026-11-23T10:00:00Z"})
    recent(None, "info", {"event": "b", "timestamp": "2026-11-23T10:05:00Z"})
    server = ControlServer(tmp_path / "c.sock", {"logs": recent.answer})
    await server.start()
    try:
        since = "2026-11-23T10:01:00+00:00"
        got = await asyncio.to_thread(ask, tmp_path / "c.sock", "logs", lines=5, since=since)
        assert [e["event"] for e in got] == ["b"]
        for bad in ({"lines": 0}, {"lines": "5"}, {"since": "later"}, {"since": "2026-11-23"}):
            with pytest.raises(ControlError, match=r"(lines|since) must"):
                await asyncio.to_thread(ask, tmp_path / "c.sock", "logs", **bad)
    finally:
        await server.close()


def test_since_takes_journalctl_forms_when_the_daemon_is_asked() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert parse_since("30 min ago", now) == now - timedelta(minutes=30)
    assert parse_since("2 h ago", now) == now - timedelta(hours=2)
    assert parse_since("1.5 days ago", now) == now - timedelta(hours=36)
    assert parse_since("2026-11-23T10:00:00Z", now) == datetime(2026, 11, 23, 10, tzinfo=UTC)
    midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
    assert parse_since("today", now) == midnight
    assert parse_since("yesterday", now) == midnight - timedelta(days=1)
    with pytest.raises(UsageError, match="30 min ago"):
        parse_since("last tuesday", now)


async def test_logs_without_a_journal_asks_the_running_daemon(
    on_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No journal files (journald never ran here): the daemon's memory, marked as such."""
    fake_journalctl(on_path, stdout=[])
    monkeypatch.setattr("gateway.cli.journal.JOURNAL_DIRS", (on_path / "no-journal",))
    recent = RecentEvents()
    recent(None, "info", {"event": "gateway.ready", "value": "37.1", "timestamp": "x"})
    sock = tmp_path / "c.sock"
    server = ControlServer(sock, {"logs": recent.answer})
    await server.start()
    try:
        query = JournalQuery(lines=10, since="1 h ago")
        found = await asyncio.to_thread(journal.read, query, lambda: sock, datetime.now(UTC))
    finally:
        await server.close()
    assert found.source == journal.DAEMON_MEMORY
    # Redacted again on this side, and an unstamped event is kept rather than hidden.
    assert found.events == [{"event": "gateway.ready", "value": "[redacted]", "timestamp": "x"}]
    with pytest.raises(journal.JournalUnavailableError, match="nor could gatewayd be asked"):
        journal.read(query, lambda: sock, datetime.now(UTC))  # the daemon is gone too
