"""Read one repository's state from its top-level folder (and borg 2's small subfolders).

This is the cheap look the watcher takes on start, after a queue overflow and when a
folder appears, and that `hive status` takes for every repository: a handful of
`scandir` and `lstat` calls, never into `data/`, never through a symlink.
"""

from __future__ import annotations

import functools
import json
import os
import re
import socket
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path

from schemas.models import NAME_PATTERN
from watcher.events import BORG1, BORG2, RepoState

# Repository names as hive.yaml allows them; `.cache` and `.config` that `borg serve`
# may create in a user's home (the user folder) are not repositories, nor are the
# `<repo>.rollback-<time>-to-<N>` folders `hive rollback` moves files aside into.
REPO_NAME = re.compile(NAME_PATTERN)

# borg 1.x names the holder file inside lock.exclusive/ "<host id>.<pid>-<thread>", where
# the host id is "<fqdn>@<uuid.getnode()>" (or $BORG_HOST_ID).
_BORG1_HOLDER = re.compile(r"^(?P<hostid>.+)\.(?P<pid>\d+)-(?P<thread>\d+)$")


@dataclass(frozen=True)
class Holder:
    hostid: str
    pid: int | None

    def __str__(self) -> str:
        return f"{self.hostid} pid {self.pid}" if self.pid is not None else self.hostid


def _read_small(path: str, limit: int = 4096) -> str | None:
    """A small regular file's text; None for anything else (a FIFO, a device or a socket
    in a repository must never block a scan: opened non-blocking, and never read)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _borg1_version(path: str) -> int | None:
    text = _read_small(os.path.join(path, "config"))
    match = re.search(r"^version\s*=\s*(\d+)\s*$", text or "", re.MULTILINE)
    return int(match.group(1)) if match else None


def _entries(path: str) -> dict[str, os.DirEntry[str]]:
    with os.scandir(path) as it:
        return {entry.name: entry for entry in it}


def scan_repository(path: Path | str) -> RepoState | None:
    """The state of the repository at `path`; None when there is no folder there.

    Raises PermissionError when the folder cannot be read (status as a non-root user).
    """
    path = str(path)
    try:
        top = _entries(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    config = top.get("config")
    if config is None:
        return RepoState()
    if config.is_dir(follow_symlinks=False):
        return _scan_borg2(path, top)
    return _scan_borg1(path, top)


def _scan_borg1(path: str, top: dict[str, os.DirEntry[str]]) -> RepoState:
    numbers = sorted((int(name[6:]) for name in top if name.startswith("index.")
                      and name[6:].isdigit()), reverse=True)
    transaction = commit_time = None
    for number in numbers:  # the newest index that still exists: a commit may delete one
        try:
            commit_time = top[f"index.{number}"].stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        transaction = number
        break
    lock = top.get("lock.exclusive")
    locks: frozenset[str] = frozenset()
    lock_since = None
    if lock is not None and lock.is_dir(follow_symlinks=False):
        locks = frozenset({"lock.exclusive"})
        try:
            lock_since = lock.stat(follow_symlinks=False).st_mtime
        except OSError:
            locks = frozenset()
    return RepoState(layout=BORG1, layout_version=_borg1_version(path),
                     transaction=transaction, commit_time=commit_time, locks=locks,
                     lock_since=lock_since)


def _scan_borg2(path: str, top: dict[str, os.DirEntry[str]]) -> RepoState:
    version_text = _read_small(os.path.join(path, "config", "version"), 32) or ""
    version = int(version_text.strip()) if version_text.strip().isdigit() else None
    transaction = commit_time = None
    try:
        st = os.stat(os.path.join(path, "config", "manifest"), follow_symlinks=False)
        transaction, commit_time = st.st_mtime_ns, st.st_mtime
    except OSError:
        pass
    archives = "archives" in top and top["archives"].is_dir(follow_symlinks=False)
    locks: set[str] = set()
    lock_since = None
    try:
        for entry in _entries(os.path.join(path, "locks")).values():
            if entry.name.endswith(".tmp"):
                continue
            locks.add(entry.name)
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            lock_since = mtime if lock_since is None else min(lock_since, mtime)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return RepoState(layout=BORG2, layout_version=version, transaction=transaction,
                     commit_time=commit_time, archives=archives, locks=frozenset(locks),
                     lock_since=lock_since)


def lock_holders(path: Path | str, state: RepoState) -> list[Holder]:
    """Who holds the repository's locks, as far as the lock files say."""
    path = str(path)
    holders: list[Holder] = []
    if state.layout == BORG1:
        try:
            names = list(_entries(os.path.join(path, "lock.exclusive")))
        except OSError:
            return holders
        for name in names:
            match = _BORG1_HOLDER.match(name)
            holders.append(Holder(match["hostid"], int(match["pid"])) if match
                           else Holder(name, None))
    elif state.layout == BORG2:
        for name in sorted(state.locks):
            text = _read_small(os.path.join(path, "locks", name))
            try:
                data = json.loads(text or "")
                holders.append(Holder(str(data["hostid"]), int(data["processid"])))
            except (ValueError, KeyError, TypeError):
                holders.append(Holder(name, None))
    return holders


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
