"""gatewayctl: help everywhere, counts not values, exit codes a script can use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from buffer.outbox import ChainHead, NewRecord, Outbox
from gateway.cli import COMMANDS, build_parser, main
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
