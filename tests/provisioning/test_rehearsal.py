"""docs/operations.md section 7 (the rehearsal with the provider desk) runs as written.

The test reads the guide's ``toml`` and ``sh`` blocks of that section and runs every command in
a fresh folder, in order, with the real desk (EST service, mosquitto with mutual TLS and CRL,
receiver), gatewayctl and gatewayd as processes. If a command, an option or a file name in the
guide drifts from the software, this fails. Lines ending in ``&`` are started in the background
and waited for by what they print or write (as the guide tells a person to), with deadlines.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.rig import wait_for

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "operations.md"
SECTION = "## 7. Rehearse with the provider desk"
BUDGET_S = 60.0  # the whole walk; make test must stay bounded


def section() -> str:
    text = DOC.read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end > 0 else len(text)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), flags=re.S)


def commands() -> list[str]:
    lines = []
    for block in blocks("sh"):
        lines += [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    return lines


class Walk:
    """Runs the guide's lines one by one in ``cwd`` with the venv's commands on PATH."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("HOMECARE_GATEWAY_CONFIG", None)
        self.env.pop("HOMECARE_PROVIDER_DESK", None)
        self.background: list[tuple[str, subprocess.Popen[str]]] = []
        self.outputs: dict[str, subprocess.CompletedProcess[str]] = {}

    def run(self, line: str, deadline: float) -> None:
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            self.env[name] = value
            return
        assign = re.fullmatch(r"([A-Z_]+)=\$\((.*)\)", line)
        if assign:
            done = self._foreground(assign.group(2), deadline)
            self.env[assign.group(1)] = done.stdout.strip()
            return
        if line.endswith("&"):
            self._background(line.removesuffix("&").strip(), deadline)
            return
        self._foreground(line, deadline)

    def _foreground(self, line: str, deadline: float) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        self.outputs[shlex.split(line)[0] + " " + shlex.split(line)[1]] = done
        return done

    def _background(self, line: str, deadline: float) -> None:
        log = self.cwd / f"bg-{len(self.background)}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {line}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.background.append((line, proc))
        ready = self._ready(line, log)
        wait_for(
            lambda: ready() or proc.poll() is not None,
            max(1.0, deadline - time.monotonic()),
            f"{line} to be ready",
        )
        assert proc.poll() is None, f"{line} exited: {log.read_text()}"

    def _ready(self, line: str, log: Path) -> Callable[[], bool]:
        words = shlex.split(line)
        if "serve-est" in words:
            return lambda: "desk: files in" in log.read_text()
        if "receive" in words:
            return lambda: "receive: verifying" in log.read_text()
        if words[0] == "gatewayd":
            gw_log = self.cwd / words[words.index(">") + 1] if ">" in words else log
            return lambda: gw_log.exists() and "gateway.ready" in gw_log.read_text()
        raise AssertionError(f"the test does not know when {line!r} is ready")

    def stop(self) -> None:
        for _, proc in reversed(self.background):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    w = Walk(tmp_path)
    try:
        yield w
    finally:
        w.stop()


def test_the_guide_names_a_config_a_desk_and_every_step() -> None:
    lines = commands()
    assert len(blocks("toml")) == 1
    joined = "\n".join(lines)
    for step in ("serve-est", "issue-token", "sign-bundle", "receive", "routers",
                 "gatewayctl enrol", "gatewayctl install-check", "gatewayctl return"):
        assert step in joined, step


def test_the_rehearsal_in_the_guide_runs_as_written(walk: Walk) -> None:
    started = time.monotonic()
    deadline = started + BUDGET_S
    (walk.cwd / "rehearsal").mkdir()
    (walk.cwd / "rehearsal" / "gateway.toml").write_text(blocks("toml")[0])
    for line in commands():
        walk.run(line, deadline)

    enrol = walk.outputs["gatewayctl enrol"]
    assert "episode ep-rehearsal, 2 device(s) bound" in enrol.stdout
    assert walk.env["TOKEN"] not in enrol.stdout + enrol.stderr
    assert "[" not in enrol.stderr, "no log lines without --verbose"
    check = walk.outputs["gatewayctl install-check"]
    assert "installation check PASSED" in check.stdout
    returned = walk.outputs["gatewayctl return"]
    assert "the router is in the factory state" in returned.stdout
    assert "certificate revoked: yes" in returned.stdout
    routers = walk.outputs["homecare-provider routers"].stdout
    assert routers.startswith("gw-rehearsal-01  certificate revoked; last record ")
    assert "0 missing, 0 rejected" in routers
    # The desk kept what it saw (the receiver verified records signed with the enrolled key).
    seen = json.loads((walk.cwd / "rehearsal" / "desk" / "routers.json").read_text())
    assert seen["gw-rehearsal-01"]["records"] >= 3
    assert time.monotonic() - started < BUDGET_S


def test_the_desk_hands_out_an_enrolled_routers_signing_key(walk: Walk) -> None:
    """What a verifier elsewhere (a real HIL rig's) needs: the router's key, from the desk."""
    deadline = time.monotonic() + BUDGET_S
    (walk.cwd / "rehearsal").mkdir()
    (walk.cwd / "rehearsal" / "gateway.toml").write_text(blocks("toml")[0])
    lines = commands()
    for line in lines[: lines.index('gatewayctl enrol --token-file - <<< "$TOKEN"') + 1]:
        walk.run(line, deadline)
    walk.run("homecare-provider signing-key --desk rehearsal/desk --gateway gw-rehearsal-01 "
             "--out rehearsal/gw.pub", deadline)
    pub = (walk.cwd / "rehearsal" / "gw.pub").read_text()
    assert pub.startswith("-----BEGIN PUBLIC KEY-----")
    missing = subprocess.run(
        ["homecare-provider", "signing-key", "--desk", "rehearsal/desk", "--gateway", "gw-x"],
        cwd=walk.cwd, env=walk.env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert missing.returncode == 2
    assert "router gw-x has no certificate from the desk" in missing.stderr


def test_a_taken_est_port_is_named_and_the_broker_is_not_left_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "provider.desk", "serve-est", "--desk", str(tmp_path / "d"),
             "--port", str(port), "--seconds", "1"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr
    desk_conf = str(tmp_path / "d" / "broker" / "mosquitto.conf")
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            alive.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            continue  # the process ended while we looked
    assert not [c for c in alive if desk_conf in c], "the desk's mosquitto was left running"
