"""Root never follows the service account's files (issue 16, finding 1).

Each test plays a compromised service account: it plants a symlink, a hardlink, a FIFO or a
foreign-owned entry at a path root (gatewayctl enrol / return) touches in the state directory,
then runs root's code and checks that root refused it and that the victim outside is untouched.
The tests run as root (CI does); the state directory is owned by an unprivileged uid as under
systemd's StateDirectory=.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from provisioning.keystore import SIGNING_KEY, TLS_KEY, FileKeyStore
from provisioning.safepath import SafeTree, UnsafePathError
from provisioning.state import LifecycleStore, Phase, private_dir

SERVICE_UID = SERVICE_GID = 65534  # nobody: stands for homecare-gateway
STRANGER_UID = 54321

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays root against the service user")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "var-lib" / "homecare-gateway"
    d.mkdir(parents=True, mode=0o750)
    os.chown(d, SERVICE_UID, SERVICE_GID)
    return d


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-owned file outside the tree (think /etc/shadow)."""
    f = tmp_path / "etc" / "shadow"
    f.parent.mkdir()
    f.write_bytes(b"root:secret\n")
    f.chmod(0o640)
    return f


def _untouched(f: Path) -> None:
    st = f.lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640)
    assert f.read_bytes() == b"root:secret\n"


def _finishes(fn: Callable[[], object], deadline_s: float = 20.0) -> BaseException | None:
    """Run ``fn`` in a thread; fail if it blocks (a FIFO opened for reading would)."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            fn()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test to assert on
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(deadline_s)
    assert not t.is_alive(), "root blocked on a file the service account planted"
    return outcome[0]


# -- private_dir: keys/, identity/, episode/ ----------------------------------------------------


@pytest.mark.parametrize("name", ["keys", "identity", "episode"])
def test_private_dir_refuses_a_symlinked_directory(state: Path, victim: Path, name: str) -> None:
    (state / name).symlink_to(victim.parent)
    before = victim.parent.stat()
    with pytest.raises(UnsafePathError) as err:
        private_dir(state / name)
    assert err.value.one_line().startswith("[P-UNSAFE-PATH]")
    after = victim.parent.stat()
    assert (after.st_uid, after.st_mode) == (before.st_uid, before.st_mode)  # no chown/chmod
    _untouched(victim)


def test_private_dir_refuses_a_directory_of_a_foreign_owner(state: Path) -> None:
    (state / "keys").mkdir()
    os.chown(state / "keys", STRANGER_UID, STRANGER_UID)
    with pytest.raises(UnsafePathError, match="belongs to user"):
        private_dir(state / "keys")


def test_private_dir_creates_0700_owned_by_the_service(state: Path) -> None:
    private_dir(state / "keys")
    st = (state / "keys").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (SERVICE_UID, SERVICE_GID, 0o700)


def test_a_symlinked_state_directory_is_refused(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "state-link"
    link.symlink_to(victim.parent)
    with pytest.raises(UnsafePathError):
        LifecycleStore(link).transition(Phase.ENROLLED)
    assert sorted(p.name for p in victim.parent.iterdir()) == ["shadow"]


# -- the lifecycle lock and file ----------------------------------------------------------------


def test_lock_symlink_is_not_followed_nor_fchowned(state: Path, victim: Path) -> None:
    (state / ".lifecycle.lock").symlink_to(victim)
    with pytest.raises(UnsafePathError):
        LifecycleStore(state).transition(Phase.ENROLLED)
    _untouched(victim)


def test_lock_dangling_symlink_does_not_create_a_root_file_for_the_service(
    state: Path, tmp_path: Path
) -> None:
    target = tmp_path / "etc" / "cron-job"
    target.parent.mkdir(exist_ok=True)
    (state / ".lifecycle.lock").symlink_to(target)
    with pytest.raises(UnsafePathError):
        LifecycleStore(state).transition(Phase.ENROLLED)
    assert not target.exists()


def test_lock_hardlink_to_a_root_file_is_refused(state: Path, victim: Path) -> None:
    os.link(victim, state / ".lifecycle.lock")  # possible where fs.protected_hardlinks=0
    with pytest.raises(UnsafePathError, match="hard links"):
        LifecycleStore(state).transition(Phase.ENROLLED)
    _untouched(victim)


def test_lock_fifo_is_refused_without_blocking(state: Path) -> None:
    os.mkfifo(state / ".lifecycle.lock")
    exc = _finishes(lambda: LifecycleStore(state).transition(Phase.ENROLLED))
    assert isinstance(exc, UnsafePathError)


def test_lifecycle_fifo_is_refused_without_blocking(state: Path) -> None:
    os.mkfifo(state / "lifecycle.json")
    exc = _finishes(lambda: LifecycleStore(state).load())
    assert isinstance(exc, UnsafePathError)


def test_lifecycle_symlink_is_not_read(state: Path, victim: Path) -> None:
    (state / "lifecycle.json").symlink_to(victim)
    with pytest.raises(UnsafePathError):
        LifecycleStore(state).load()


def test_lifecycle_files_root_writes_belong_to_the_service(state: Path) -> None:
    LifecycleStore(state).transition(Phase.ENROLLED)
    for name in ("lifecycle.json", ".lifecycle.lock"):
        st = (state / name).stat()
        assert (st.st_uid, st.st_nlink) == (SERVICE_UID, 1)


# -- key store ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [SIGNING_KEY, TLS_KEY, ".signing.key.tmp", "leftover"])
def test_destroy_does_not_overwrite_through_a_symlink(
    state: Path, victim: Path, name: str
) -> None:
    store = FileKeyStore(state / "keys")
    store.ensure()
    (state / "keys" / name).unlink(missing_ok=True)
    (state / "keys" / name).symlink_to(victim)
    store.destroy()
    _untouched(victim)
    assert os.listdir(state / "keys") == []  # the link itself is gone, the keys destroyed


@pytest.mark.parametrize("name", [SIGNING_KEY, "leftover"])
def test_destroy_does_not_overwrite_through_a_hardlink(
    state: Path, victim: Path, name: str
) -> None:
    store = FileKeyStore(state / "keys")
    store.ensure()
    (state / "keys" / name).unlink(missing_ok=True)
    os.link(victim, state / "keys" / name)
    store.destroy()
    _untouched(victim)
    assert os.listdir(state / "keys") == []


def test_destroy_does_not_block_on_a_fifo(state: Path) -> None:
    store = FileKeyStore(state / "keys")
    store.ensure()
    os.mkfifo(state / "keys" / "leftover")
    assert _finishes(store.destroy) is None
    assert os.listdir(state / "keys") == []


def test_keys_are_not_read_through_a_symlink(state: Path, victim: Path) -> None:
    store = FileKeyStore(state / "keys")
    store.ensure()
    (state / "keys" / TLS_KEY).unlink()
    (state / "keys" / TLS_KEY).symlink_to(victim)
    with pytest.raises(UnsafePathError):
        store.ensure()
    _untouched(victim)


def test_keys_root_creates_belong_to_the_service(state: Path) -> None:
    FileKeyStore(state / "keys").ensure()
    for name in (SIGNING_KEY, TLS_KEY):
        st = (state / "keys" / name).stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (SERVICE_UID, 0o600)


# -- episode and identity files, erase ----------------------------------------------------------


def test_atomic_write_replaces_a_planted_link_not_its_target(state: Path, victim: Path) -> None:
    private_dir(state / "identity")
    (state / "identity" / "client.crt").symlink_to(victim)
    SafeTree(state).atomic_write(state / "identity" / "client.crt", b"CERT", 0o644)
    _untouched(victim)
    assert (state / "identity" / "client.crt").read_bytes() == b"CERT"
    assert not (state / "identity" / "client.crt").is_symlink()


def test_a_planted_temporary_link_is_not_written_through(state: Path, victim: Path) -> None:
    private_dir(state / "episode")
    (state / "episode" / ".bundle.json.tmp").symlink_to(victim)
    SafeTree(state).atomic_write(state / "episode" / "bundle.json", b"{}")
    _untouched(victim)


def test_remove_deletes_links_themselves_never_their_targets(state: Path, victim: Path) -> None:
    (state / "episode").mkdir()
    (state / "episode" / "broker-ca.crt").symlink_to(victim)
    (state / "episode" / "inner").symlink_to(victim.parent, target_is_directory=True)
    (state / "identity").symlink_to(victim.parent, target_is_directory=True)
    os.mkfifo(state / "episode" / "fifo")
    tree = SafeTree(state)
    assert _finishes(lambda: [tree.remove(n) for n in tree.listdir()]) is None
    assert os.listdir(state) == []
    _untouched(victim)


def test_paths_leaving_the_tree_are_refused(state: Path) -> None:
    with pytest.raises(UnsafePathError):
        SafeTree(state).read_bytes("../etc/shadow")
