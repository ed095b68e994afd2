"""Small files replaced atomically and durably: after a power cut, the old content or the new.

Used for everything the gateway keeps outside SQLite (lifecycle state, RACP cursors, the BLE
seen-set, keys): write a temporary file, fsync it, rename it over the old one, fsync the
directory (the rename lives in the directory entry).
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so that a power cut leaves the old or the new content.

    When root writes into a directory the service user owns (gatewayctl as root, the daemon as
    the user of systemd's StateDirectory=), the file takes the directory's owner, so the daemon
    can still read it.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        own_like_directory(out.fileno(), path.parent)
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)
    fsync_dir(path.parent)


def own_like_directory(fd: int, directory: Path) -> None:
    """Give a file root creates the owner of its (service-owned) directory."""
    if os.geteuid() != 0:
        return
    st = directory.stat()
    if st.st_uid != 0:
        os.fchown(fd, st.st_uid, st.st_gid)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX: the entry lives in the dir)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
