"""`hive stats`: measure every repository on disk and append one snapshot row each.

The walk is what `du -s` does, done the same way: `os.scandir` on an open directory fd,
`fstatat` relative to it (no path lookups from the root for every file), symlinks
neither followed nor counted as their targets, hard links counted once. Memory is
bounded by the depth of the tree and the number of hard-linked files, not by the number of
files: a repository with 100,000 segments costs a list of ~100 folder names. Neither
depth nor descriptors are limits: the walk (reconciler/treewalk.py) keeps its own stack
and a few descriptors, and a repository it could not read whole is reported as such.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from borgrepo import layout as borg_layout
from reconciler import treewalk
from schemas.models import HiveConfig
from watcher.events import BORG2

COLUMNS = ("time", "host", "repository", "unix_user", "path", "in_config", "present",
           "layout", "layout_version", "size_bytes", "files", "dirs", "last_access",
           "last_update", "transaction", "locked", "lock_since", "quota_bytes", "quota_used",
           "unreadable", "scan_seconds")


def usage(path: Path | str) -> treewalk.Usage:
    """Disk usage of the tree at `path`, never leaving it through a symlink, with bounded
    recursion and descriptors (reconciler/treewalk.py); `unreadable` says what it missed."""
    return treewalk.usage(path)


@dataclass
class RepositoryStats:
    repository: str
    unix_user: str
    path: str
    in_config: bool
    present: bool = False
    layout: str | None = None
    layout_version: int | None = None
    size_bytes: int | None = None
    files: int | None = None
    dirs: int | None = None
    last_access: datetime | None = None
    last_update: datetime | None = None
    transaction: int | None = None
    locked: bool | None = None
    lock_since: datetime | None = None
    quota_bytes: int | None = None
    quota_used: float | None = None
    unreadable: int = 0
    scan_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    # not in the snapshot rows: what keep_repokeys found (watcher/repokeys.py)
    repokey: str | None = None        # the digest of the key in config (borg 1.x repokey)
    repokey_copy: str | None = None   # where its copy is kept
    repokey_changed: bool = False     # a key other than the one kept before

    def row(self, now: datetime, host: str) -> tuple[Any, ...]:
        data = asdict(self)
        data.update(time=now, host=host)
        return tuple(data[c] for c in COLUMNS)


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _last_access(path: str, layout: str | None) -> float | None:
    """Every borg session takes a lock, which changes the folder the lock lives in."""
    folder = os.path.join(path, "locks") if layout == BORG2 else path
    try:
        return os.stat(folder, follow_symlinks=False).st_mtime
    except OSError:
        return None


def measure(repository: str, unix_user: str, path: str, in_config: bool,
            quota_bytes: int | None) -> RepositoryStats:
    """One repository's figures; a missing or unreadable one says so instead of failing."""
    started = time.monotonic()
    result = RepositoryStats(repository, unix_user, path, in_config, quota_bytes=quota_bytes)
    try:
        state = borg_layout.scan_repository(path)
    except OSError as exc:
        result.present = True
        result.errors.append(f"cannot read {path}: {exc.strerror}")
        result.unreadable += 1
        return result
    if state is None:
        return result
    result.present = True
    if state.problem is not None:
        result.errors.append(f"{path} makes no sense as a borg repository: {state.problem}")
    result.layout, result.layout_version = state.layout, state.layout_version
    result.transaction = state.transaction
    result.last_update = _ts(state.commit_time)
    result.locked, result.lock_since = state.locked, _ts(state.lock_since)
    result.last_access = _ts(_last_access(path, state.layout))
    found = usage(path)
    result.size_bytes, result.files, result.dirs = found.size_bytes, found.files, found.dirs
    result.unreadable += found.unreadable
    if found.unreadable:
        result.errors.append(f"{found.unreadable} entries below {path} could not be read, so "
                             f"its size is a lower bound (e.g. {found.problems[0]})")
    if quota_bytes:
        result.quota_used = found.size_bytes / quota_bytes
    result.scan_seconds = round(time.monotonic() - started, 4)
    return result


def targets(config: HiveConfig,
            only: Iterable[str] = ()) -> list[tuple[str, str, str, bool, int | None]]:
    """(repository, unix user, path, in hive.yaml, quota) for every repository in the file
    and every repository folder found on disk (removed from the file, data kept); not
    `hive rollback`'s aside folders nor dot folders, by the watcher's name rule."""
    wanted = set(only)
    root = config.server.repos_root
    found: dict[str, tuple[str, str, str, bool, int | None]] = {}
    for name, repo in config.repositories.items():
        path = str(config.repo_path(name))
        found[path] = (name, config.user_name(name), path, True, repo.quota_bytes)
    try:
        users = [e.name for e in os.scandir(root)
                 if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]
    except OSError:
        users = []
    for user in sorted(users):
        try:
            names = [e.name for e in os.scandir(root / user)  # what the watcher watches
                     if borg_layout.REPO_NAME.match(e.name) and e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            path = config.repo_folder(name, user)
            found.setdefault(path, (name, user, path, False, None))
    return [t for _, t in sorted(found.items()) if not wanted or t[0] in wanted]


def keep_repokeys(state_dir: Path, results: list[RepositoryStats]) -> None:
    """Copy the key of every borg 1.x repository in repokey mode out of its users' reach
    (watcher/repokeys.py), and note on each result its key and whether it changed. A copy
    that cannot be written is an error of that repository."""
    from watcher import repokeys

    for r in results:
        if not r.present or r.layout != borg_layout.BORG1:
            continue
        try:
            kept = repokeys.keep_key_of(state_dir, r.repository, r.path)
        except OSError as exc:
            r.errors.append(f"cannot keep a copy of the key of {r.path}: {exc}")
            continue
        if kept is None:  # keyfile or no encryption: the key does not live here
            continue
        r.repokey, r.repokey_copy = kept.digest, str(kept.copy)
        r.repokey_changed = kept.changed


def record(state_dir: Path, host: str, results: list[RepositoryStats],
           timeout: float = 30.0) -> None:
    """Append one snapshot row per repository, an event for each key that changed (and
    catch up on the apply journal)."""
    from watcher import journal_rows, store

    now = datetime.now(UTC)
    changed = [(now, host, r.repository, r.unix_user, r.path, "repokey_changed", "stats",
                json.dumps({"copy": r.repokey_copy}))
               for r in results if r.repokey_changed]
    with store.write(state_dir, timeout) as con:
        store.insert(con, "snapshots", COLUMNS, [r.row(now, host) for r in results])
        store.insert(con, "events", store.EVENT_COLUMNS, changed)
        journal_rows.import_new(con, state_dir)
