"""borg's repository locks: who holds them (borg 1.x `lock.exclusive/<host>.<pid>-<thread>`,
borg 2 JSON files in `locks/`), whether the holder still runs, and taking borg 1.x's
exclusive lock the way borg does (for `hive rollback`).

Lock files belong to the repository's user: every pid is range-checked before os.kill,
the roster is read without following links or blocking, within a size bound.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import secrets
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from borgrepo import RepositoryBusy, RepositoryError, read_regular
from borgrepo.layout import BORG1, BORG2, RepoState, open_lock_folder, read_small

ROSTER_LIMIT = 1 << 20  # borg's lock.roster is a few hundred bytes

# borg 1.x names the holder file inside lock.exclusive/ "<host id>.<pid>-<thread>", where
# the host id is "<fqdn>@<uuid.getnode()>" (or $BORG_HOST_ID).
_BORG1_HOLDER = re.compile(r"^(?P<hostid>.+)\.(?P<pid>[0-9]{1,7})-(?P<thread>[0-9]{1,20})$",
                           re.ASCII)
# Linux never hands out a pid above PID_MAX_LIMIT (2**22); os.kill() of a bigger number
# raises OverflowError instead of saying "no such process".
MAX_PID = 2**22

def checked_pid(value: object) -> int | None:
    """A process id read from a lock file, or None when it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 7:
        return None
    pid = int(text)
    return pid if 0 < pid <= MAX_PID else None



@dataclass(frozen=True)
class Holder:
    hostid: str
    pid: int | None

    def __str__(self) -> str:
        return f"{self.hostid} pid {self.pid}" if self.pid is not None else self.hostid


def lock_holders(path: Path | str, state: RepoState) -> list[Holder]:
    """Who holds the repository's locks, as far as the lock files say."""
    path = str(path)
    holders: list[Holder] = []
    try:
        folder = open_lock_folder(path, "lock.exclusive" if state.layout == BORG1 else "locks")
    except OSError:
        return holders
    if folder is None:
        return holders
    try:
        _holders(folder, state, holders)
    finally:
        os.close(folder)
    return holders


def _holders(folder: int, state: RepoState, holders: list[Holder]) -> None:
    if state.layout == BORG1:
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            match = _BORG1_HOLDER.match(name)
            pid = checked_pid(match["pid"]) if match else None
            holders.append(Holder(match["hostid"], pid) if match and pid is not None
                           else Holder(name, None))
    elif state.layout == BORG2:
        for name in sorted(state.locks):
            text = read_small(name, dir_fd=folder)
            try:
                data = json.loads(text or "")
                pid = checked_pid(data["processid"])
                holders.append(Holder(str(data["hostid"])[:200], pid) if pid is not None
                               else Holder(name, None))
            except (ValueError, KeyError, TypeError, RecursionError):
                holders.append(Holder(name, None))


@functools.cache
def _this_host() -> tuple[str, ...]:
    """What borg on this machine writes as its host id, "<fqdn>@<uuid.getnode()>" (see
    _BORG1_HOLDER), as prefixes and suffixes to match. Both halves are tried: in a
    private network namespace (systemd's PrivateNetwork=) uuid.getnode() is random, while
    the name stays."""
    names = {socket.gethostname(), socket.gethostname().split(".")[0], socket.getfqdn()}
    return (*(f"{name}@" for name in names if name), f"@{uuid.getnode()}")


def _is_this_host(hostid: str) -> bool:
    if os.environ.get("BORG_HOST_ID") and hostid == os.environ["BORG_HOST_ID"]:
        return True
    return any(hostid.startswith(p) if p.endswith("@") else hostid.endswith(p)
               for p in _this_host())


def holders_alive(holders: list[Holder]) -> bool | None:
    """False when every holder is a process of this host that no longer exists.

    None when it cannot be told (no holder file yet, another host's id): then only the
    age of the lock decides. `borg serve` runs on this server, so its locks are checkable.
    """
    if not holders:
        return None
    verdicts = []
    for holder in holders:
        if not _is_this_host(holder.hostid) or holder.pid is None:
            return None
        try:
            os.kill(holder.pid, 0)
            verdicts.append(True)
        except ProcessLookupError:
            verdicts.append(False)
        except PermissionError:
            verdicts.append(True)
    return any(verdicts)


@functools.cache
def borg_host_id() -> str:
    """The host id borg 1.x writes into its lock names (`<fqdn>@<mac as int>`).

    Using borg's own id means a borg client recognises the lock as local: it keeps out while
    this process lives, and removes the lock as stale if this process died (kill -9)."""
    if os.environ.get("BORG_HOST_ID"):
        return os.environ["BORG_HOST_ID"]
    name = socket.gethostname()
    try:
        for info in socket.getaddrinfo(name, None, 0, socket.SOCK_DGRAM, 0,
                                       socket.AI_CANONNAME):
            if info[3]:
                name = info[3]
                break
    except OSError:
        pass
    return f"{name}@{uuid.getnode()}"


def _alive(host: str, pid: int, thread: int, own_host: str) -> bool:
    """borg's rule: a lock of another host, or of a thread, counts as alive."""
    if host != own_host or thread != 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def repository_lock(path: Path, wait: float = 0.0) -> Iterator[str]:
    """Hold borg's exclusive lock on the repository at `path`; yields the lock's name.

    As borg 1.x: a temporary directory holding one empty file `<hostid>.<pid>-0` is renamed
    to `lock.exclusive` (atomic; fails while another holder's directory is there), then
    `lock.roster` must show no live shared lockers (readers such as `borg list`), and gets
    this process as the exclusive one. Everything is owned by the repository's owner, so
    that its `borg serve` can clear the lock should this process die. Retries for `wait`
    seconds, then raises RepositoryBusy naming the holder.
    """
    info = path.stat()
    host = borg_host_id()
    name = f"{host}.{os.getpid()}-0"
    exclusive, roster = path / "lock.exclusive", path / "lock.roster"
    deadline = time.monotonic() + wait
    while True:
        temp = Path(tempfile.mkdtemp(".tmp", "lock.exclusive.", path))
        try:
            (temp / name).touch()
            for item in (temp / name, temp):
                os.chown(item, info.st_uid, info.st_gid)
            temp.chmod(0o755)
            os.rename(temp, exclusive)
        except OSError as exc:
            with contextlib.suppress(OSError):
                (temp / name).unlink()
            with contextlib.suppress(OSError):
                temp.rmdir()
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise RepositoryError(f"cannot lock {path}: {exc}") from exc
            holders = _lock_holders(exclusive)
            if time.monotonic() >= deadline:
                raise RepositoryBusy(f"{path} is locked by a borg client "
                                     f"({', '.join(holders) or 'holder unknown'}); try again "
                                     "when it has finished, or `borg break-lock` if it is "
                                     "stale") from None
            time.sleep(0.1)
            continue
        # From here on the lock is ours: whatever happens (a roster that is a FIFO, a
        # symlink, garbage), it is released before the error goes up.
        try:
            readers = _live_readers(roster, host)
        except BaseException:
            _release(exclusive, name)
            raise
        if readers:
            _release(exclusive, name)
            if time.monotonic() >= deadline:
                raise RepositoryBusy(f"{path} is being read by a borg client "
                                     f"({', '.join(readers)}); try again when it has "
                                     "finished")
            time.sleep(0.1)
            continue
        break
    try:
        _write_roster(roster, {"exclusive": [[host, os.getpid(), 0]], "shared": []}, info)
        yield name
    finally:
        with contextlib.suppress(FileNotFoundError):
            roster.unlink()
        _release(exclusive, name)


def _lock_holders(exclusive: Path) -> list[str]:
    try:
        return sorted(os.listdir(exclusive))
    except OSError:
        return []


def _live_readers(roster: Path, host: str) -> list[str]:
    """The shared lockers `lock.roster` lists that still run. The repository's user
    controls the file: it is read without following a symlink, without blocking on a FIFO
    and up to ROSTER_LIMIT bytes; anything but a regular file raises RollbackError."""
    text = read_regular(roster, ROSTER_LIMIT)
    try:
        data = json.loads(text or "{}")
    except (ValueError, RecursionError):
        return []
    readers = []
    for entry in data.get("shared", []) if isinstance(data, dict) else []:
        with contextlib.suppress(TypeError, ValueError):
            h, pid, thread = entry
            pid, thread = _small_int(pid), _small_int(thread)
            if pid is None or thread is None or _alive(str(h), pid, thread, host):
                readers.append(f"{str(h)[:100]}.{pid}-{thread}")
    return readers


def _small_int(value: object) -> int | None:
    """A pid or thread id from the roster; None when it cannot be one (os.kill of a huge
    number raises OverflowError, not ProcessLookupError)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31:
        return None
    return value


def _write_roster(roster: Path, data: dict[str, list[list[object]]], info: os.stat_result
                  ) -> None:
    """Written beside and renamed over: whatever was at `lock.roster` (a symlink, a FIFO)
    is replaced, never opened."""
    temp = roster.with_name(f"{roster.name}.hive-{secrets.token_hex(4)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fchown(fd, info.st_uid, info.st_gid)
    finally:
        os.close(fd)
    os.rename(temp, roster)


def _release(exclusive: Path, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        (exclusive / name).unlink()
    with contextlib.suppress(OSError):
        exclusive.rmdir()
