"""gatewayctl: help everywhere, counts not values, exit codes a script can use."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from buffer.outbox import ChainHead, NewRecord, Outbox
from gateway.cli.journal import redact_line as _redact_line
from gateway.cli.main import COMMANDS, build_parser, main
from tests.factories import VALID_CONFIG as VALID
from tests.factories import write_config as write


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([name, "--help"])
        assert done.value.code == 0
        assert "example: gatewayctl" in capsys.readouterr().out


def test_outbox_reports_counts_of_sealed_records(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(files, VALID)
    box = Outbox(files / "state" / "outbox.db")
    box.append(
        [NewRecord(1, 1, 1, 1, 1000, b"sealed-1"), NewRecord(2, 1, 1, 1, 2000, b"sealed-22")],
        ChainHead(1, 2, bytes(32)),
    )
    box.close()
    assert main(["outbox", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["undelivered_records"] == 2
    assert out["undelivered_bytes"] == 17
    assert out["last_sequence_number"] == 2


def test_outbox_missing_is_a_problem_with_a_hint(
    files: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["outbox", "--config", str(write(files, VALID))]) == 1
    err = capsys.readouterr().err
    assert "no outbox at" in err
    assert "state_dir" in err


def test_bad_config_exits_2(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(files, VALID.replace("port = 8883", "port = 0"))
    assert main(["config-check", "--config", str(config)]) == 2
    assert "uplink.port" in capsys.readouterr().err


def test_decode_ble_characteristic_prints_the_documented_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # 0x2A1C: flags 0 (Celsius, no time stamp), FLOAT 36.60 (mantissa 3660, exponent -2).
    assert main(["decode", "--uuid", "2a1c", "--hex", "00 4c0e00fe"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["uuid"] == "2a1c"
    assert out["measurements"] == [
        {
            "type": 150364,
            "value": "36.60",
            "unit": "Cel",
            "absent_reason": None,
            "device_time": None,
        }
    ]
    assert out["flags"]["fahrenheit"] is False


def test_decode_malformed_payload_exits_nonzero_with_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["decode", "--uuid", "2a35", "--hex", "0278"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "2a35" in captured.err


def test_decode_serial_capture_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    records = (
        "H|\\^&|||Afinion 2^1.10^AS0012345\rP|1\rO|1|S-1||^^^CRP|R\r"
        "R|1|^^^CRP|5.0|mg/L|0 to 10|N||F||||20240301101500\rL|1|N\r"
    )
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(records.encode())))
    assert main(["decode", "--protocol", "astm"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"] == "astm"
    assert out["errors"] == []
    (m,) = out["measurements"]
    assert (m["code"], m["value"], m["unit"]) == ("1988-5", "5.0", "mg/L")
    assert m["device_time"] == "2024-03-01T10:15:00+00:00"


def test_decode_needs_exactly_one_of_uuid_and_protocol(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["decode", "--hex", "00"]) == 2
    err = capsys.readouterr().err
    assert "either --uuid" in err
    # The hint is for the person typing, not "a bug in the gateway" (a driver-bug error's hint).
    assert "gatewayctl decode --help" in err
    assert "bug" not in err
    assert main(["decode", "--protocol", "hl7", "--hex", "00"]) == 2
    assert "use one of: astm" in capsys.readouterr().err


def test_journal_lines_are_redacted_field_by_field() -> None:
    assert _redact_line('{"event": "x", "value": "37.2", "key": "abc", "seq": 4}') == {
        "event": "x",
        "value": "[redacted]",
        "key": "[redacted]",
        "seq": 4,
    }
    assert _redact_line("free text 37.2 from somewhere") == {"unparsed_line_chars": 29}
