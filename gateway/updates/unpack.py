"""Unpack a release tarball into a directory, member by member, trusting none of it.

``tarfile``'s extraction filters (PEP 706) are not in the Python of the router's Debian 12
(3.11.2), so the rules are applied here, one member at a time:

- names are relative, without ``..``, and no member is written through a symbolic link (every
  parent on the way must be a real directory);
- only directories, regular files, symbolic links and hard links: no devices, fifos or sockets;
- a symbolic link stays inside the tree, except the venv's interpreter links, which may name
  ``/usr/bin/python*`` (the distribution's Python, the only absolute path a venv holds);
- a hard link names a regular file already unpacked in the tree;
- everything belongs to root; modes keep the execute bits and lose setuid, setgid, sticky and
  every write bit but the owner's;
- at most MAX_MEMBERS members and MAX_UNPACKED_BYTES bytes.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
from pathlib import Path
from typing import Literal

from gateway.updates.errors import ReleaseInvalidError

MAX_MEMBERS = 100_000  # a venv has about 8 000 files
MAX_UNPACKED_BYTES = 1024 * 1024 * 1024
_INTERPRETER = re.compile(r"/usr/bin/python3(\.[0-9]{1,2})?")


def _clean_name(name: str) -> str:
    norm = posixpath.normpath(name)
    if norm in (".", "") and name.rstrip("/") in (".", ""):
        return "."
    if name.startswith("/") or norm.startswith("../") or norm == ".." or "\x00" in name:
        raise ReleaseInvalidError(f"release member escapes the tree: {name[:80]!r}")
    return norm


def _check_parents(dest: Path, rel: str) -> None:
    """Every directory on the way to ``rel`` is a real directory of the tree (never a link)."""
    path = dest
    for part in Path(rel).parts[:-1]:
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ReleaseInvalidError(f"release member goes through a link: {rel[:80]!r}")


def _symlink_ok(rel: str, target: str) -> bool:
    if target.startswith("/"):
        return _INTERPRETER.fullmatch(target) is not None
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    return not (resolved == ".." or resolved.startswith("../"))


def unpack(artifact: Path, compression: Literal["gz", "xz"], dest: Path) -> None:
    """Unpack ``artifact`` into the (empty) directory ``dest``; raise ReleaseInvalidError."""
    mode: Literal["r:gz", "r:xz"] = "r:gz" if compression == "gz" else "r:xz"
    total = count = 0
    try:
        with tarfile.open(artifact, mode) as tar:
            for m in tar:
                count += 1
                total += max(m.size, 0)
                if count > MAX_MEMBERS or total > MAX_UNPACKED_BYTES:
                    raise ReleaseInvalidError("release tree is larger than the router allows")
                _member(tar, m, dest)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ReleaseInvalidError(f"release artifact does not unpack: {exc}"[:200]) from None


def _member(tar: tarfile.TarFile, m: tarfile.TarInfo, dest: Path) -> None:
    rel = _clean_name(m.name)
    if rel == ".":
        return
    _check_parents(dest, rel)
    path = dest / rel
    perm = (m.mode & 0o755) | 0o600 if not m.isdir() else 0o755
    if m.isdir():
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            path.mkdir(mode=0o755)
            return
        if not stat.S_ISDIR(st.st_mode):
            raise ReleaseInvalidError(f"release member is two things: {rel[:80]!r}")
        return
    if os.path.lexists(path):
        raise ReleaseInvalidError(f"release member appears twice: {rel[:80]!r}")
    if m.isreg():
        src = tar.extractfile(m)
        if src is None:
            raise ReleaseInvalidError(f"release member unreadable: {rel[:80]!r}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, perm)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
            os.fchmod(out.fileno(), perm)  # the umask must not decide what is executable
    elif m.issym():
        if not _symlink_ok(rel, m.linkname):
            raise ReleaseInvalidError(f"release link points out of the tree: {rel[:80]!r}")
        os.symlink(m.linkname, path)
    elif m.islnk():
        target_rel = _clean_name(m.linkname)
        target = dest / target_rel
        if not stat.S_ISREG(os.lstat(target).st_mode):
            raise ReleaseInvalidError(f"release hard link to a non-file: {rel[:80]!r}")
        os.link(target, path, follow_symlinks=False)
    else:
        raise ReleaseInvalidError(f"release holds a special file: {rel[:80]!r}")
