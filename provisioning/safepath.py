"""Root never follows the service account's files: every root-side operation on its tree.

``gatewayctl enrol`` and ``gatewayctl return`` run as root and work inside directories the service
account owns (``/var/lib/homecare-gateway``, systemd's StateDirectory=). Whatever that account can
write, a compromised daemon can replace: ``keys`` by a symlink to ``/etc``, ``.lifecycle.lock`` by a
link to a root-owned file, a key file by a hardlink or a FIFO that blocks root forever. Path-based
calls (chmod, chown, open, mkdir, stat) follow such links, and root then changes, hands over or
overwrites a file of its own - the service account becomes root.

So every root-side operation here walks from the tree's top with ``openat``-style calls
(``dir_fd``): each component opened with ``O_NOFOLLOW | O_DIRECTORY``, files with
``O_NOFOLLOW | O_NONBLOCK`` (a FIFO cannot block us), then ``fstat`` on the opened descriptor
decides: a directory, or a regular file with one link, owned by root or by the tree's owner.
``fchmod``/``fchown`` act on that descriptor, never on a name. Anything else is refused with
:class:`UnsafePathError`.

The top of the tree (the state directory) is opened relative to its parent, which is root's
(``/var/lib``): that parent path is trusted, the rest is not. The same code runs unprivileged in the
daemon, where it costs nothing and refuses the same things.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePath

from provisioning.errors import UnsafePathError

__all__ = ["SafeTree", "UnsafePathError"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A tree deeper than this is not ours (the state directory is three levels deep at most).
MAX_DEPTH = 16
# Entries removed per directory at most (keys, identity, episode: a handful each).
MAX_ENTRIES = 10_000


class SafeTree:
    """A directory tree owned by the service account, operated on without following links."""

    def __init__(self, top: Path) -> None:
        self.top = top

    # -- walking --------------------------------------------------------------------------------

    def _parts(self, path: PurePath | str) -> tuple[str, ...]:
        p = PurePath(path)
        rel = p.relative_to(self.top) if p.is_absolute() else p
        parts = rel.parts
        if any(x in ("", ".", "..") or "/" in x for x in parts) or len(parts) > MAX_DEPTH:
            raise UnsafePathError(f"{path} is not a plain path inside {self.top}")
        return parts

    def _allowed_owners(self, top_uid: int) -> set[int]:
        return {0, top_uid, os.geteuid()}

    @contextlib.contextmanager
    def _open_top(self, *, create: bool) -> Iterator[int]:
        if create:
            self.top.parent.mkdir(parents=True, exist_ok=True)  # root's side: trusted
        parent = os.open(self.top.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = _open_dir_at(parent, self.top.name, create=create, mode=0o700)
        finally:
            os.close(parent)
        try:
            _check(fd, self.top, kind="dir", owners=None)
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def directory(
        self, path: PurePath | str = ".", *, create: bool = False, mode: int = 0o700
    ) -> Iterator[int]:
        """An fd of ``path`` (relative or under ``top``), each component checked on the way."""
        parts = () if str(path) in (".", str(self.top)) else self._parts(path)
        with self._open_top(create=create) as top:
            top_uid = os.fstat(top).st_uid
            owners = self._allowed_owners(top_uid)
            fd = os.dup(top)
            try:
                here = self.top
                for name in parts:
                    here = here / name
                    created = create and not _exists_at(fd, name)
                    nxt = _open_dir_at(fd, name, create=create, mode=mode)
                    os.close(fd)
                    fd = nxt
                    _check(fd, here, kind="dir", owners=owners)
                    if created:
                        self._own(fd, top)
                yield fd
            finally:
                os.close(fd)

    def _own(self, fd: int, top: int) -> None:
        """What root creates in the tree belongs to the tree's owner (the daemon must use it)."""
        if os.geteuid() != 0:
            return
        st = os.fstat(top)
        if st.st_uid != 0:
            os.fchown(fd, st.st_uid, st.st_gid)

    # -- operations -----------------------------------------------------------------------------

    def private_dir(self, path: PurePath | str) -> None:
        """mkdir -p, mode 0700, owned like the top of the tree (fchmod/fchown on the fd)."""
        with self._open_top(create=True) as top, self.directory(path, create=True) as fd:
            os.fchmod(fd, 0o700)
            self._own(fd, top)

    @contextlib.contextmanager
    def open_file(
        self, path: PurePath | str, flags: int, mode: int = 0o600
    ) -> Iterator[int]:
        """An fd of a regular file with one link, owned by root or the tree's owner."""
        parts = self._parts(path)
        creating = bool(flags & os.O_CREAT)  # the top of the tree too (a lock file in a new tree)
        with self._open_top(create=creating) as top, self.directory(PurePath(*parts[:-1])) as d:
            owners = self._allowed_owners(os.fstat(top).st_uid)
            try:
                fd = os.open(parts[-1], flags | _FILE_FLAGS, mode, dir_fd=d)
            except OSError as exc:
                raise _refusal(exc, self.top.joinpath(*parts)) from None
            try:
                _check(fd, self.top.joinpath(*parts), kind="file", owners=owners, single=True)
                if flags & os.O_CREAT:
                    self._own(fd, top)
                # Back to blocking: a regular file (checked) never blocks anyway.
                os.set_blocking(fd, True)
                yield fd
            finally:
                os.close(fd)

    def read_bytes(self, path: PurePath | str, limit: int = 1 << 20) -> bytes:
        """The content of a regular file (FileNotFoundError passes through); at most ``limit``."""
        with self.open_file(path, os.O_RDONLY) as fd:
            data = os.read(fd, limit + 1)
        if len(data) > limit:
            raise UnsafePathError(f"{self.top / PurePath(path)} is larger than expected")
        return data

    def exists(self, path: PurePath | str) -> bool:
        parts = self._parts(path)
        try:
            with self.directory(PurePath(*parts[:-1])) as d:
                return _exists_at(d, parts[-1])
        except FileNotFoundError:
            return False

    def atomic_write(self, path: PurePath | str, data: bytes, mode: int = 0o600) -> None:
        """Write a temporary file, fsync, rename over ``path``, fsync the directory."""
        parts = self._parts(path)
        name, tmp = parts[-1], f".{parts[-1]}.tmp"
        with self._open_top(create=True) as top, self.directory(PurePath(*parts[:-1])) as d:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=d)  # unlink never follows: it removes the link itself
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE_FLAGS
                fd = os.open(tmp, flags, mode, dir_fd=d)
            except OSError as exc:
                raise _refusal(exc, self.top.joinpath(*parts[:-1], tmp)) from None
            try:
                os.set_blocking(fd, True)
                self._own(fd, top)
                os.fchmod(fd, mode)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename(2) replaces the entry, whatever it is (a planted link included): nothing
            # outside the tree is touched.
            os.rename(tmp, name, src_dir_fd=d, dst_dir_fd=d)
            os.fsync(d)

    def destroy_file(self, path: PurePath | str) -> bool:
        """Overwrite with random bytes, fsync, unlink; False if it did not exist."""
        parts = self._parts(path)
        try:
            with self.open_file(path, os.O_RDWR) as fd:
                size = os.fstat(fd).st_size
                _write_all(fd, secrets.token_bytes(max(size, 1)))
                os.fsync(fd)
        except FileNotFoundError:
            return False
        with self.directory(PurePath(*parts[:-1])) as d:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(parts[-1], dir_fd=d)
            os.fsync(d)
        return True

    def listdir(self, path: PurePath | str = ".") -> list[str]:
        try:
            with self.directory(path) as d:
                return sorted(os.listdir(d))
        except FileNotFoundError:
            return []

    def remove(self, path: PurePath | str) -> bool:
        """Remove a file, a link (the link itself) or a whole directory; never follows links."""
        parts = self._parts(path)
        try:
            with self.directory(PurePath(*parts[:-1])) as d:
                _remove_at(d, parts[-1], depth=0)
                os.fsync(d)
        except FileNotFoundError:
            return False
        return True


# -- helpers on descriptors ---------------------------------------------------------------------


def _open_dir_at(parent: int, name: str, *, create: bool, mode: int) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, mode, dir_fd=parent)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        raise _refusal(exc, Path(name)) from None


def _exists_at(d: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=d, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _refusal(exc: OSError, path: Path) -> OSError | UnsafePathError:
    # ELOOP: O_NOFOLLOW met a symlink; ENOTDIR: O_DIRECTORY met a non-directory (or a link to
    # one); ENXIO: a FIFO without a reader opened for writing.
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
        return UnsafePathError(
            f"{path} is a link or not what it should be: refused", path=str(path)
        )
    return exc


def _check(
    fd: int, path: Path, *, kind: str, owners: set[int] | None, single: bool = False
) -> None:
    st = os.fstat(fd)
    if kind == "dir" and not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is not a directory: refused", path=str(path))
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        what = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise UnsafePathError(f"{path} is {what}: refused", path=str(path))
    if single and st.st_nlink > 1:
        raise UnsafePathError(
            f"{path} has {st.st_nlink} hard links (one may be another file's): refused",
            path=str(path),
        )
    if owners is not None and st.st_uid not in owners:
        raise UnsafePathError(
            f"{path} belongs to user {st.st_uid}, not to the gateway: refused", path=str(path)
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_at(d: int, name: str, *, depth: int) -> None:
    st = os.stat(name, dir_fd=d, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=d)  # a file, a link (the link itself), a FIFO: never opened
        return
    if depth >= MAX_DEPTH:
        raise UnsafePathError(f"{name} is nested deeper than {MAX_DEPTH} directories: refused")
    sub = os.open(name, _DIR_FLAGS, dir_fd=d)
    try:
        entries = os.listdir(sub)
        if len(entries) > MAX_ENTRIES:
            raise UnsafePathError(f"{name} holds more than {MAX_ENTRIES} entries: refused")
        for entry in entries:
            _remove_at(sub, entry, depth=depth + 1)
    finally:
        os.close(sub)
    os.rmdir(name, dir_fd=d)


def in_parent(path: Path) -> tuple[SafeTree, str]:
    """The tree of ``path``'s parent and its name: for a state file or directory one level down."""
    return SafeTree(path.parent), path.name
