"""The progress seam: what long operations report, how it shows, and that --json stays clean."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import support_bundle as bundle
from gateway.config.settings import load
from gateway.control import ControlError
from gateway.progress import FakeProgress, LineProgress
from provisioning.equipment_return import EquipmentReturn, ReturnOptions
from provisioning.est import EstClient, EstServer
from provisioning.install_check import _wait_devices
from provisioning.keystore import FileKeyStore
from tests.factories import VALID_CONFIG as VALID
from tests.factories import write_config as write

ANSI = re.compile(r"\x1b\[")
REPO = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_line_progress_prints_begin_end_and_at_most_one_line_per_interval() -> None:
    out, clock = io.StringIO(), Clock()
    progress = LineProgress(out, every_s=10.0, clock=clock)
    task = progress.begin("delivering to the provider", total=40, unit="records")
    for done in range(1, 40):
        clock.now += 0.5  # 19.5 s in all: one line at 10 s, not 39
        progress.update(task, done)
    progress.update(task, 40, label="delivered")
    progress.end(task, "all delivered")
    assert out.getvalue().splitlines() == [
        "delivering to the provider ...",
        "delivering to the provider: 20/40 records",
        "delivered ...",
        "delivered: all delivered (40/40 records)",
    ]
    assert "\r" not in out.getvalue()


def test_fake_progress_refuses_updates_after_the_end() -> None:
    progress = FakeProgress()
    task = progress.begin("x", total=1)
    progress.end(task)
    with pytest.raises(AssertionError, match="after it ended"):
        progress.update(task, 1)


def _scripted(answers: list[list[dict[str, Any]]]) -> Any:
    """A daemon link answering provisioning.devices from a script (the last answer repeats)."""
    calls: list[str] = []

    def daemon(command: str, timeout_s: float = 10.0, **_args: Any) -> Any:
        calls.append(command)
        return answers[min(len(calls) - 1, len(answers) - 1)]

    return daemon


def _device(address: str, seq: int | None, delivered: bool) -> dict[str, Any]:
    return {
        "profile": "thermometer",
        "address": address,
        "durable_seq": seq,
        "delivered": delivered,
    }


def test_install_check_shows_each_device_until_its_first_reading_is_acknowledged() -> None:
    a, b = "AA:BB:CC:00:00:01", "AA:BB:CC:00:00:02"
    daemon = _scripted(
        [
            [_device(a, None, False), _device(b, None, False)],
            [_device(a, 7, False), _device(b, None, False)],
            [_device(a, 7, True), _device(b, None, False)],
        ]
    )
    progress = FakeProgress()
    rows = _wait_devices(daemon, timeout_s=0.3, poll_s=0.01, progress=progress)
    assert [r.verdict for r in rows] == ["PASS", "FAIL"]
    first, second = progress.tasks[1], progress.tasks[2]
    assert first["outcome"] == "reading delivered"
    assert first["done"] == 1
    assert second["outcome"] == "nothing delivered within 0 s"
    assert progress.labels()[:3] == [
        f"thermometer {a}: waiting for a measurement",
        f"thermometer {b}: waiting for a measurement",
        f"thermometer {a}: stored, waiting for the provider's acknowledgement",
    ]
    assert [e for e in progress.events if e[0] == "end"] == [
        ("end", f"thermometer {a}: stored, waiting for the provider's acknowledgement",
         "reading delivered"),
        ("end", f"thermometer {b}: waiting for a measurement", "nothing delivered within 0 s"),
    ]  # fmt: skip


@pytest.fixture
def drain_flow(files: Path) -> tuple[list[int], FakeProgress, EquipmentReturn]:
    """The return flow with a daemon whose outbox depth follows ``depths`` (last repeats)."""
    depths: list[int] = []
    asked: list[int] = []

    def daemon(command: str, timeout_s: float = 10.0, **_args: Any) -> Any:
        if command != "status":
            raise ControlError("not in this test", unreachable=True)
        asked.append(1)
        return {"outbox": {"depth": depths[min(len(asked) - 1, len(depths) - 1)]}}

    cfg = load(write(files, VALID))
    progress = FakeProgress()
    flow = EquipmentReturn(
        cfg,
        daemon=daemon,
        keystore=FileKeyStore(files / "keys"),
        est=EstClient(EstServer("https://127.0.0.1:9", files / "ca.crt"), cfg.gateway_id),
        devices=(),
        options=ReturnOptions(drain_timeout_s=5.0, poll_s=0.0),
        progress=progress,
    )
    return depths, progress, flow


def test_return_drain_shows_records_left_until_the_outbox_is_empty(
    drain_flow: tuple[list[int], FakeProgress, EquipmentReturn],
) -> None:
    depths, progress, flow = drain_flow
    depths += [5, 3, 1, 0]
    assert flow._drain() == {"unsent_records": 0, "drained_records": 5}
    assert progress.labels() == [
        "delivering to the provider: 5 records left",
        "delivering to the provider: 3 records left",
        "delivering to the provider: 1 records left",
        "delivering to the provider: 0 records left",
    ]
    (task,) = progress.tasks.values()
    assert (task["done"], task["total"], task["outcome"]) == (5, 5, "all delivered")
    assert task["unit"] == "records acknowledged"


def test_return_drain_given_up_with_force_says_how_many_are_left(
    drain_flow: tuple[list[int], FakeProgress, EquipmentReturn],
) -> None:
    depths, progress, flow = drain_flow
    depths += [4]
    flow.opt = ReturnOptions(force=True, drain_timeout_s=0.0, poll_s=0.0)
    assert flow._drain() == {"unsent_records": 4, "forced": True}
    assert progress.tasks[1]["outcome"] == "4 records left undelivered (--force)"


def test_support_bundle_reports_each_part_then_the_archive(files: Path) -> None:
    cfg = load(write(files, VALID + f'\n[control]\nsocket = "{files / "none.sock"}"\n'))
    progress = FakeProgress()
    path = bundle.build(cfg, files, progress=progress)
    assert path.exists()
    assert progress.labels() == [
        "support bundle",
        "support bundle: software versions",
        "support bundle: configuration (paths and settings)",
        "support bundle: self-test",
        f"support bundle: last {bundle.LOG_LINES} log lines (redacted)",
        "support bundle: daemon status",
        "support bundle: writing the archive",
    ]
    assert progress.tasks[1] | {"label": "-"} == {
        "label": "-", "done": 6, "total": 6, "unit": "steps", "outcome": "done"
    }  # fmt: skip


def test_support_bundle_never_writes_through_a_planted_link(
    files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Root may write the bundle into the service's log folder: a link planted at the
    predictable name must be refused, its target left as it was (issue 16)."""
    cfg = load(write(files, VALID + f'\n[control]\nsocket = "{files / "none.sock"}"\n'))
    monkeypatch.setattr(time, "strftime", lambda *_: "20260101T000000Z")
    victim = files / "victim"
    victim.write_bytes(b"root's file\n")
    name = f"homecare-gateway-support-{cfg.gateway_id}-20260101T000000Z.tar.gz"
    (files / name).symlink_to(victim)
    path = bundle.build(cfg, files)
    assert path.name == name.replace(".tar.gz", "-2.tar.gz")  # another name, the link untouched
    assert victim.read_bytes() == b"root's file\n"
    assert (files / name).is_symlink()


def _on_terminals(argv: list[str], env: dict[str, str], timeout_s: float = 60.0) -> tuple[
    int, str, str
]:
    """Run gatewayctl with stdout and stderr each on its own pseudo-terminal (what an ssh
    session gives a technician); returns (exit code, stdout, stderr)."""
    ends = [pty.openpty() for _ in range(2)]
    for _, child in ends:
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli.main", *argv],
        stdin=subprocess.DEVNULL,
        stdout=ends[0][1],
        stderr=ends[1][1],
        cwd=REPO,
        env={**os.environ, "TERM": "xterm-256color", **env},
    )
    for _, child in ends:
        os.close(child)
    got = {ends[0][0]: b"", ends[1][0]: b""}
    open_fds = set(got)
    deadline = time.monotonic() + timeout_s
    while open_fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its end
                chunk = b""
            if chunk:
                got[fd] += chunk
            else:
                open_fds.discard(fd)
    rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    for fd in got:
        os.close(fd)
    return rc, got[ends[0][0]].decode(), got[ends[1][0]].decode()


@pytest.mark.integration
def test_json_on_a_terminal_has_no_progress_and_no_escape_codes(files: Path) -> None:
    """--json is for scripts even when run from a terminal: stdout is one JSON document and
    stderr carries no progress display; without --json the same command draws one."""
    config = write(files, VALID + f'\n[control]\nsocket = "{files / "none.sock"}"\n')
    argv = ["support-bundle", "--config", str(config), "--output", str(files)]
    rc, out, err = _on_terminals([*argv, "--json"], {})
    assert rc == 0, out + err
    assert not ANSI.search(out + err), (out, err)
    assert Path(json.loads(out)["bundle"]).exists()
    assert err == ""
    rc, out, err = _on_terminals(argv, {})
    assert rc == 0, out + err
    assert "\x1b[?25l" in err  # the live display drew (and hid the cursor while it did)
    assert "support bundle" in err
    assert "support bundle written to" in out
    for command in (["lifecycle"], ["selftest"]):
        rc, out, err = _on_terminals([*command, "--config", str(config), "--json"], {})
        assert not ANSI.search(out + err), (command, out, err)
        json.loads(out)


@pytest.mark.integration
def test_terminal_tables_follow_no_color_and_term_dumb(files: Path) -> None:
    config = write(files, VALID + f'\n[control]\nsocket = "{files / "none.sock"}"\n')
    argv = ["selftest", "--config", str(config)]
    _, coloured, _ = _on_terminals(argv, {})
    _, no_color, _ = _on_terminals(argv, {"NO_COLOR": "1"})
    _, dumb, _ = _on_terminals(argv, {"TERM": "dumb"})
    assert "\x1b[1;31mFAIL" in coloured  # no daemon, so the daemon check fails
    assert "─" in no_color
    assert not re.search(r"\x1b\[[0-9;]*3\dm", no_color)
    assert not ANSI.search(dumb)
    assert re.search(r"^FAIL  daemon", dumb.replace("\r\n", "\n"), re.MULTILINE)


@pytest.mark.integration
def test_a_scripted_call_does_not_load_the_rich_renderers(files: Path) -> None:
    """gatewayctl loads its rich tables and progress display only when a person is looking.
    (structlog imports rich.console, rich.table and rich.traceback once rich is installed.)"""
    probe = (
        "import sys, io, contextlib\n"
        "from gateway.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['version'])\n"
        "    assert main(['lifecycle', '--config', sys.argv[1]]) == 0\n"
        "    assert main(['lifecycle', '--json', '--config', sys.argv[1]]) == 0\n"
        "print(sorted({'gateway.cli.output_rich', 'rich.progress'} & set(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(write(files, VALID))],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
