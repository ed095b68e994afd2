"""What the equipment return leaves behind besides the state directory (issue 16, finding 4):
the log folder is emptied without following a planted link, the journal eraser is called."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from gateway.config.settings import load
from gateway.control import ControlError
from provisioning.equipment_return import EquipmentReturn, ReturnOptions
from provisioning.est import EstClient, EstServer
from provisioning.keystore import FileKeyStore
from tests.factories import VALID_CONFIG as VALID
from tests.factories import write_config as write


class FakeJournal:
    def __init__(self) -> None:
        self.calls = 0

    def erase(self) -> bool:
        self.calls += 1
        return True


def _daemon(command: str, timeout_s: float = 10.0, **_args: Any) -> Any:
    raise ControlError("gatewayd is not running", unreachable=True)


def test_erase_empties_the_log_folder_and_the_journal(files: Path, tmp_path: Path) -> None:
    cfg = load(write(files, VALID))
    state = tmp_path / "state"
    state.mkdir()
    cfg = dataclasses.replace(cfg, state_dir=state, outbox_path=state / "outbox.db")
    (state / "outbox.db").write_bytes(b"sealed")
    FileKeyStore(state / "keys").ensure()
    logs = tmp_path / "log" / "homecare-gateway"
    (logs / "exports").mkdir(parents=True)
    (logs / "homecare-gateway-support-gw-1.tar.gz").write_bytes(b"archive")
    (logs / "exports" / "diag.json").write_text("{}")
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    (logs / "link").symlink_to(victim)
    journal = FakeJournal()
    flow = EquipmentReturn(
        cfg,
        daemon=_daemon,
        keystore=FileKeyStore(state / "keys"),
        est=EstClient(EstServer("https://127.0.0.1:9", files / "ca.crt"), cfg.gateway_id),
        devices=(),
        options=ReturnOptions(logs_dir=logs),
        journal=journal,
    )
    facts = flow._erase()  # the step itself, without the drain before it
    assert list(logs.iterdir()) == []
    assert victim.read_text() == "keep me"
    assert journal.calls == 1
    assert facts["erased"]["journal"] is True
    assert sorted(facts["erased"]["logs"]) == [
        "exports",
        "homecare-gateway-support-gw-1.tar.gz",
        "link",
    ]
    assert list(state.iterdir()) == []
