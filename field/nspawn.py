"""Boot a Debian root under systemd-nspawn with systemd as PID 1, and drive it from the host.

The host has no systemd-machined and no system bus, so the container is started with
``--register=no --keep-unit`` after a tmpfs is mounted on ``/run/systemd/nspawn`` (nspawn keeps
its lock files there). Commands run inside through ``nsenter -t <init pid> -a``, which enters
every namespace of the container's init (and with the mount namespace its root directory).
The container shares the host's network namespace, so it reaches services on host loopback.

Each boot works on a fresh view of the cached root: an overlay (the cached root as the read-only
lower layer) or, where overlayfs is unavailable, a copy. Nothing a run does reaches the cache or
another run. Teardown always happens: ``systemctl poweroff``, then SIGKILL, then unmount.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NSPAWN_LOCK_DIR = Path("/run/systemd/nspawn")
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BOOT_STATES_OK = ("running", "degraded")


class FieldError(Exception):
    """The field rig itself failed (not the product under test)."""


def missing_tools() -> list[str]:
    """Host tools a boot needs that are not installed."""
    return [t for t in ("systemd-nspawn", "nsenter", "mount", "umount") if not shutil.which(t)]


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2
) -> None:
    """Poll ``predicate()`` until it is true; raise FieldError naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            raise FieldError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _mountpoint(path: Path) -> bool:
    argv = ["mountpoint", "-q", str(path)]
    return subprocess.run(argv, check=False).returncode == 0  # noqa: S603


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    task_dir = Path(f"/proc/{pid}/task")
    with contextlib.suppress(OSError):
        for task in task_dir.iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(x) for x in (task / "children").read_text().split())
    return kids


def _pid_ns(pid: int | str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


@dataclass
class Container:
    """A booted container: its init's host pid and the host path of its root directory."""

    root: Path
    pid: int
    workdir: Path
    arch: str
    nspawn_pid: int = 0
    boot_s: float = 0.0
    boot_state: str = ""
    log: list[str] = field(default_factory=list)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """The host command line that runs ``argv`` inside, with a clean environment."""
        return [
            "nsenter", "-t", str(self.pid), "-a", "--",
            "env", "-i", f"PATH={CONTAINER_PATH}", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
            *argv,
        ]  # fmt: skip

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout_s: float = 120,
        check: bool = True,
        input_text: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside; stdout and stderr are captured as text."""
        started = time.monotonic()
        try:
            proc = subprocess.run(  # noqa: S603 - our own fixed tools
                self.argv(argv),
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
                input=input_text,
                stdin=None if input_text is not None else subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise FieldError(f"{' '.join(argv)!r} did not finish within {timeout_s} s") from exc
        self.log.append(
            f"[{time.monotonic() - started:6.2f} s rc={proc.returncode}] {' '.join(argv)}"
        )
        if check and proc.returncode != 0:
            raise FieldError(
                f"{' '.join(argv)!r} exited {proc.returncode}\n"
                f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}"
            )
        return proc

    def sh(self, script: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], **kwargs)  # type: ignore[arg-type]

    def write_file(self, path: str, data: bytes | str, mode: int = 0o644, owner: str = "root:root"
                   ) -> None:
        """Write a file inside through the container's own view (its /tmp and /run are mounts)."""
        text = data.decode() if isinstance(data, bytes) else data
        self.run(
            ["sh", "-c", 'umask 077; mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"; '
             'chown "$3" "$1"', "sh", path, f"{mode:o}", owner],
            input_text=text,
        )

    def copy_in(self, src: Path, dest: str) -> None:
        """Copy a host file into the container (binary safe, through the root's host path)."""
        if dest.startswith(("/tmp/", "/run/", "/proc/", "/sys/", "/dev/")):  # noqa: S108
            raise FieldError(f"{dest}: a mount inside the container; copy elsewhere")
        target = self.root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)

    def systemctl(self, *args: str, check: bool = True, timeout_s: float = 120
                  ) -> subprocess.CompletedProcess[str]:
        return self.run(["systemctl", "--no-pager", *args], check=check, timeout_s=timeout_s)

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def journal(self, unit: str | None = None, *, output: str = "cat", lines: int = 400) -> str:
        argv = ["journalctl", "--no-pager", "-o", output, "-n", str(lines)]
        if unit:
            argv += ["-u", unit]
        return self.run(argv, check=False).stdout

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL systemd-nspawn and every process of the container at once,
        no shutdown of any unit. (Data the kernel already has survives, as it would a process
        crash; what was never written by the processes is lost.)"""
        for pid in (self.nspawn_pid, self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if pid == self.nspawn_pid:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
        self.log.append("power cut (SIGKILL)")

    def system_state(self) -> str:
        proc = self.run(["systemctl", "is-system-running"], check=False, timeout_s=30)
        return proc.stdout.strip()


def _fresh_root(template: Path, workdir: Path, *, resume: bool = False) -> tuple[Path, bool]:
    """An overlay of ``template`` (True) or, failing that, a copy (False), under ``workdir``.
    ``resume``: the same root as the last boot in ``workdir`` (after a power cut)."""
    upper, work, merged = workdir / "upper", workdir / "work", workdir / "root"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=resume)
    opts = f"lowerdir={template},upperdir={upper},workdir={work}"
    proc = subprocess.run(  # noqa: S603
        ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],  # noqa: S607
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return merged, True
    if resume and any(merged.iterdir()):
        return merged, False
    subprocess.run(  # noqa: S603
        ["cp", "-a", "--reflink=auto", f"{template}/.", str(merged)],  # noqa: S607
        check=True,
    )
    return merged, False


@contextlib.contextmanager
def booted(
    template: Path,
    workdir: Path,
    *,
    arch: str,
    boot_timeout_s: float = 180,
    keep: bool = False,
    resume: bool = False,
    machine: str | None = None,
) -> Iterator[Container]:
    """Boot a fresh copy of ``template`` and yield it; always powers off and cleans up.
    ``resume``: boot the root a previous ``booted(..., keep=True)`` left in ``workdir``.
    ``machine``: the container's name (default ``field-<arch>``), unique per concurrent boot."""
    missing = missing_tools()
    if missing:
        raise FieldError(f"missing host tools: {', '.join(missing)}")
    workdir.mkdir(parents=True, exist_ok=True)
    mounted_lock_dir = False
    if not _mountpoint(NSPAWN_LOCK_DIR):
        NSPAWN_LOCK_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(  # noqa: S603
            ["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(NSPAWN_LOCK_DIR)],  # noqa: S607
            check=True,
        )
        mounted_lock_dir = True
    root, overlay = _fresh_root(template, workdir, resume=resume)
    console = (workdir / "console.log").open("ab")
    started = time.monotonic()
    nspawn = subprocess.Popen(  # noqa: S603
        [  # noqa: S607 - the host's systemd-nspawn, found on PATH
            "systemd-nspawn", "--quiet", "-D", str(root), "--boot", "--register=no",
            "--keep-unit", "--console=pipe", f"--machine={machine or f'field-{arch}'}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=console,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    container: Container | None = None
    try:
        own_ns = _pid_ns("self")
        init_pid: list[int] = []

        def init_found() -> bool:
            if nspawn.poll() is not None:
                raise FieldError(
                    f"systemd-nspawn exited {nspawn.returncode} before boot:\n"
                    + (workdir / "console.log").read_text(errors="replace")[-3000:]
                )
            for kid in _children(nspawn.pid):
                ns = _pid_ns(kid)
                if ns is not None and ns != own_ns:
                    init_pid.append(kid)
                    return True
            return False

        wait_until(init_found, 30, "the container's init process")
        container = Container(
            root=root, pid=init_pid[0], workdir=workdir, arch=arch, nspawn_pid=nspawn.pid
        )

        def booted_up() -> bool:
            if nspawn.poll() is not None:
                raise FieldError(f"systemd-nspawn exited {nspawn.returncode} during boot")
            state = container.system_state() if container else ""
            if state in BOOT_STATES_OK:
                assert container is not None
                container.boot_state = state
                return True
            return False

        wait_until(booted_up, boot_timeout_s, "systemctl is-system-running: running", 0.5)
        container.boot_s = time.monotonic() - started
        container.log.append(
            f"booted {arch} ({'overlay' if overlay else 'copy'}) in {container.boot_s:.1f} s: "
            f"{container.boot_state}"
        )
        yield container
    finally:
        _teardown(nspawn, container, console)
        _unmount(root if overlay else None)
        if mounted_lock_dir:
            subprocess.run(["umount", str(NSPAWN_LOCK_DIR)], check=False)  # noqa: S603, S607
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _teardown(
    nspawn: subprocess.Popen[bytes], container: Container | None, console: object
) -> None:
    if nspawn.poll() is None and container is not None:
        with contextlib.suppress(FieldError, OSError):
            container.run(["systemctl", "poweroff", "--no-block"], check=False, timeout_s=20)
    if nspawn.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            nspawn.wait(60)
    if nspawn.poll() is None:
        # Whatever is left of the container: nspawn and every process in its session.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(nspawn.pid, signal.SIGKILL)
        if container is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(container.pid, signal.SIGKILL)
        nspawn.wait(30)
    close = getattr(console, "close", None)
    if callable(close):
        close()


def _unmount(root: Path | None) -> None:
    if root is None:
        return
    proc = subprocess.run(["umount", str(root)], check=False)  # noqa: S603, S607
    if proc.returncode != 0:
        subprocess.run(["umount", "-l", str(root)], check=False)  # noqa: S603, S607
