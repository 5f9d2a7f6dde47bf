"""A repository folder's layout: borg 1.x (`config` a file, `index.N`, `lock.exclusive/`)
or borg 2 (`config/`, `locks/`, `archives/`), read into a RepoState.

This is the cheap look the watcher takes on start, after a queue overflow and when a
folder appears, and that `hive status` takes for every repository: a handful of
`scandir` and `lstat` calls, never into `data/`, never through a symlink.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from dataclasses import dataclass, replace
from pathlib import Path

from borgrepo import shown
from schemas.models import NAME_PATTERN

BORG1, BORG2 = "borg1", "borg2"
# borg 1.x `init` writes the empty manifest and commits it as transaction 1.
BORG1_INIT_TRANSACTION = 1
# borg 1.x keeps segment numbers (= transaction ids) as unsigned 32-bit integers in its
# index and hints files: no borg writes `index.4294967296`.
MAX_TRANSACTION = 2**32 - 1
_INDEX = re.compile(r"index\.([0-9]+)", re.ASCII)


class Nonsense(ValueError):
    """A repository file says something borg never writes (the message says what)."""


def index_number(name: str) -> int | None:
    """N of a borg 1.x `index.N`; None for any other name. Raises Nonsense for an N no borg
    writes (checked on the digits' count first: int() of 5,000 digits is an error)."""
    match = _INDEX.fullmatch(name)
    if match is None:
        return None
    digits = match.group(1)
    if len(digits) > 10 or int(digits) > MAX_TRANSACTION:
        raise Nonsense(f"{name[:40]}: no borg writes a transaction number above "
                       f"{MAX_TRANSACTION}")
    return int(digits)


@dataclass(frozen=True)
class RepoState:
    """What is known of one repository folder: the watcher's memory, or a scan's result."""

    layout: str | None = None          # BORG1, BORG2, or None: not (yet) a borg repository
    layout_version: int | None = None  # `version` in borg 1.x config, config/version in borg 2
    transaction: int | None = None     # borg 1.x: N of index.N; borg 2: manifest mtime_ns
    commit_time: float | None = None   # when that transaction was committed (unix time)
    archives: bool = False             # borg 2: the archives/ folder exists
    locks: frozenset[str] = frozenset()  # lock names held: {"lock.exclusive"} or locks/ files
    lock_since: float | None = None
    stale_reported: bool = False       # lock_stale was recorded for the current lock
    dropped: int | None = None         # borg 1.x: that index went, none newer came (rollback)
    problem: str | None = None         # the files make no sense (see Nonsense); else None

    @property
    def locked(self) -> bool:
        return bool(self.locks)

    @property
    def backed_up(self) -> bool:
        """True once a commit other than the one `borg init` makes has happened."""
        if self.transaction is None:
            return False
        if self.layout == BORG2:
            return self.archives
        return self.transaction > BORG1_INIT_TRANSACTION


# Repository names as hive.yaml allows them; `.cache` and `.config` that `borg serve`
# may create in a user's home (the user folder) are not repositories, nor are the
# `<repo>.rollback-<time>-to-<N>` folders `hive rollback` moves files aside into.
REPO_NAME = re.compile(NAME_PATTERN)

# borg 1.x writes `version = 1` or `2` into config, borg 2 `2` into config/version.
MAX_LAYOUT_VERSION = 99
# A commit or lock dated this far ahead of the clock was not made by borg on this host.
_FUTURE_SLACK = 86_400.0


def _checked_time(seconds: float, what: str, problems: list[str]) -> float | None:
    """An mtime as a commit or lock time; None (and a problem) when no clock made it."""
    if 0 <= seconds <= time.time() + _FUTURE_SLACK:
        return seconds
    problems.append(f"{what} is dated {seconds:.0f} (unix time), which no commit is")
    return None


def read_small(path: str, limit: int = 4096, dir_fd: int | None = None,
               owner: int | None = None) -> str | None:
    """A small regular file's text (of `owner`'s, when given); None for anything else (a
    FIFO, a device or a socket in a repository must never block a scan: opened
    non-blocking, and never read). A link is not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or owner not in (None, info.st_uid):
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


def entries(path: str) -> dict[str, os.DirEntry[str]]:
    with os.scandir(path) as it:
        return {entry.name: entry for entry in it}


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def open_lock_folder(path: str, name: str) -> int | None:
    """A descriptor of the lock folder `name` in the repository at `path` (borg 1.x
    `lock.exclusive`, borg 2 `locks`); None when it is absent or not a folder. The user
    may have made it a symlink to a folder only root can read: never followed, so neither
    its names (lock names in events) nor its files (holders) are root's to hand over.
    Other errors (no permission) are raised, as scandir raised them."""
    try:
        return os.open(os.path.join(path, name), _OPEN_DIR)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _listing(folder: int | None) -> list[os.DirEntry[str]]:
    if folder is None:
        return []
    with os.scandir(folder) as it:
        return list(it)  # (entries of a descriptor: stat them before it is closed)


def scan_repository(path: Path | str) -> RepoState | None:
    """The state of the repository at `path`; None when there is no folder there.

    Raises PermissionError when the folder cannot be read (status as a non-root user).
    """
    path = str(path)
    try:
        top = entries(path)
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
    version = _layout_version(read_small(os.path.join(path, "config")), "config", problems)
    return _with_problems(RepoState(layout=BORG1, layout_version=version,
                                    transaction=transaction, commit_time=commit_time,
                                    locks=locks, lock_since=lock_since), problems)


def _scan_borg2(path: str, top: dict[str, os.DirEntry[str]]) -> RepoState:
    problems: list[str] = []
    version = _layout_version(read_small(os.path.join(path, "config", "version"), 32),
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
    folder = open_lock_folder(path, "locks")
    try:
        for entry in _listing(folder):
            if entry.name.endswith(".tmp"):
                continue
            locks.add(entry.name)
            try:
                mtime = _checked_time(entry.stat(follow_symlinks=False).st_mtime,
                                      f"locks/{shown(entry.name[:40])}", problems)
            except OSError:
                continue
            if mtime is not None:
                lock_since = mtime if lock_since is None else min(lock_since, mtime)
    finally:
        if folder is not None:
            os.close(folder)
    return _with_problems(RepoState(layout=BORG2, layout_version=version,
                                    transaction=transaction, commit_time=commit_time,
                                    archives=archives, locks=frozenset(locks),
                                    lock_since=lock_since), problems)


