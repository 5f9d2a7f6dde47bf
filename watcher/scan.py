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
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from watcher.events import BORG1, BORG2, Nonsense, RepoState, index_number

# Repository names as hive.yaml allows them; `.cache` and `.config` that `borg serve`
# may create in a user's home (the user folder) are not repositories, nor are the
# `<repo>.rollback-<time>-to-<N>` folders `hive rollback` moves files aside into.
REPO_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")

# borg 1.x names the holder file inside lock.exclusive/ "<host id>.<pid>-<thread>", where
# the host id is "<fqdn>@<uuid.getnode()>" (or $BORG_HOST_ID).
_BORG1_HOLDER = re.compile(r"^(?P<hostid>.+)\.(?P<pid>[0-9]{1,7})-(?P<thread>[0-9]{1,20})$",
                           re.ASCII)
# Linux never hands out a pid above PID_MAX_LIMIT (2**22); os.kill() of a bigger number
# raises OverflowError instead of saying "no such process".
MAX_PID = 2**22
# borg 1.x writes `version = 1` or `2` into config, borg 2 `2` into config/version.
MAX_LAYOUT_VERSION = 99
# A commit or lock dated this far ahead of the clock was not made by borg on this host.
_FUTURE_SLACK = 86_400.0


def checked_pid(value: object) -> int | None:
    """A process id read from a lock file, or None when it cannot be one."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value)
    if not text.isascii() or not text.isdigit() or len(text) > 7:
        return None
    pid = int(text)
    return pid if 0 < pid <= MAX_PID else None


def _checked_time(seconds: float, what: str, problems: list[str]) -> float | None:
    """An mtime as a commit or lock time; None (and a problem) when no clock made it."""
    if 0 <= seconds <= time.time() + _FUTURE_SLACK:
        return seconds
    problems.append(f"{what} is dated {seconds:.0f} (unix time), which no commit is")
    return None


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


def _layout_version(text: str | None, what: str, problems: list[str]) -> int | None:
    """The layout version in a config text (borg 1.x `version = N`, borg 2 just `N`)."""
    pattern = r"^version\s*=\s*([0-9]+)\s*$" if what == "config" else r"^\s*([0-9]+)\s*$"
    match = re.search(pattern, text or "", re.MULTILINE | re.ASCII)
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) > 2 or not 0 < int(digits) <= MAX_LAYOUT_VERSION:
        problems.append(f"{what} says version {digits[:20]}, which no borg writes")
        return None
    return int(digits)


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


def _with_problems(state: RepoState, problems: list[str]) -> RepoState:
    return replace(state, problem="; ".join(problems)) if problems else state


def _scan_borg1(path: str, top: dict[str, os.DirEntry[str]]) -> RepoState:
    problems: list[str] = []
    found: list[tuple[int, str]] = []
    for name in top:
        try:
            number = index_number(name)
        except Nonsense as exc:
            if len(problems) < 3:
                problems.append(str(exc))
            continue
        if number is not None:
            found.append((number, name))
    transaction = commit_time = None
    for number, name in sorted(found, reverse=True):
        # the newest index that still exists: a commit may delete one
        try:
            mtime = top[name].stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        transaction, commit_time = number, _checked_time(mtime, name, problems)
        break
    lock = top.get("lock.exclusive")
    locks: frozenset[str] = frozenset()
    lock_since = None
    if lock is not None and lock.is_dir(follow_symlinks=False):
        locks = frozenset({"lock.exclusive"})
        try:
            lock_since = _checked_time(lock.stat(follow_symlinks=False).st_mtime,
                                       "lock.exclusive", problems)
        except OSError:
            locks = frozenset()
    version = _layout_version(_read_small(os.path.join(path, "config")), "config", problems)
    return _with_problems(RepoState(layout=BORG1, layout_version=version,
                                    transaction=transaction, commit_time=commit_time,
                                    locks=locks, lock_since=lock_since), problems)


def _scan_borg2(path: str, top: dict[str, os.DirEntry[str]]) -> RepoState:
    problems: list[str] = []
    version = _layout_version(_read_small(os.path.join(path, "config", "version"), 32),
                              "config/version", problems)
    transaction = commit_time = None
    try:
        st = os.stat(os.path.join(path, "config", "manifest"), follow_symlinks=False)
        commit_time = _checked_time(st.st_mtime, "config/manifest", problems)
        if commit_time is not None:
            transaction = st.st_mtime_ns
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
                mtime = _checked_time(entry.stat(follow_symlinks=False).st_mtime,
                                      f"locks/{entry.name[:40]}", problems)
            except OSError:
                continue
            if mtime is not None:
                lock_since = mtime if lock_since is None else min(lock_since, mtime)
    except (FileNotFoundError, NotADirectoryError):
        pass
    return _with_problems(RepoState(layout=BORG2, layout_version=version,
                                    transaction=transaction, commit_time=commit_time,
                                    archives=archives, locks=frozenset(locks),
                                    lock_since=lock_since), problems)


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
            pid = checked_pid(match["pid"]) if match else None
            holders.append(Holder(match["hostid"], pid) if match and pid is not None
                           else Holder(name, None))
    elif state.layout == BORG2:
        for name in sorted(state.locks):
            text = _read_small(os.path.join(path, "locks", name))
            try:
                data = json.loads(text or "")
                pid = checked_pid(data["processid"])
                holders.append(Holder(str(data["hostid"])[:200], pid) if pid is not None
                               else Holder(name, None))
            except (ValueError, KeyError, TypeError, RecursionError):
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
