"""`hive watch`: the inotify loop over repos_root, buffering events for the database.

Watches, all with IN_DONT_FOLLOW (a symlink is never followed out of the tree):
    repos_root                       user folders appearing and going
    repos_root/<user>                repository folders appearing and going
    repos_root/<user>/<repo>         borg 1.x lock, index and config; borg 2 subfolders
    .../<repo>/{config,locks,archives}   borg 2 only
`data/` is never watched: segment writes are what most file events are, and a
repository's state does not need them. A new folder is watched first and scanned second,
so nothing that happens in between is missed (the scan and the queued events agree, see
events.py).

Everything that can make the in-memory picture wrong (start, queue overflow, a periodic
rescan) ends in the same reconciliation: scan, compare with what is remembered, record the
difference as events. What is remembered is saved with the events, in the same
transaction, so a restart compares with exactly what was recorded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from inotify_simple import INotify, flags

from borgrepo import layout as borg_layout
from borgrepo import locks as borg_locks
from watcher import commits, journal_rows, repokeys, store
from watcher import events as ev

log = logging.getLogger("hive.watch")

DIR_MASK = (flags.CREATE | flags.MOVED_TO | flags.DELETE | flags.MOVED_FROM
            | flags.DELETE_SELF | flags.MOVE_SELF | flags.ONLYDIR | flags.DONT_FOLLOW)
BORG2_SUBDIRS = ("config", "locks", "archives")
_REPO_NAME = borg_layout.REPO_NAME  # what is a repository folder (see borgrepo/layout.py)
# A key problem a client can repeat at will (a key Hive cannot read, no room for more
# copies) is logged and recorded at most this often per repository (seconds).
KEY_WARN_EVERY = 3600.0
MAX_BUFFER = 200_000  # events held while the database cannot be written (~100 MB)
STATE_COLUMNS = ("host", "path", "repository", "unix_user", "layout", "layout_version",
                 "transaction", "commit_time", "archives", "locks", "lock_since",
                 "stale_reported", "updated_at", "problem")


class WatchError(Exception):
    """The watcher cannot do its job; the message says what to change."""


WATCH_LOCK = "watch.lock"


def hold_watch_lock(state_dir: Path) -> int:
    """Take `<state_dir>/watch.lock` (exclusive flock, held until the process ends, with
    its pid in the file) or fail at once: a second watcher would record every event twice.
    """
    path = state_dir / WATCH_LOCK
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise WatchError(f"cannot open {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f"pid {holder}" if holder.isdigit() else "another process"
        raise WatchError(f"another hive watch is already running ({who} holds {path}); "
                         "one watcher per state_dir, or every event is recorded twice"
                         ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _limit_message(what: str, count: int) -> str:
    sysctl = {"watches": "fs.inotify.max_user_watches",
              "instances": "fs.inotify.max_user_instances"}[what]
    try:
        current = Path(f"/proc/sys/{sysctl.replace('.', '/')}").read_text().strip()
    except OSError:
        current = "?"
    return (f"the inotify {what} limit is reached ({count} in use by hive watch, {sysctl} = "
            f"{current}): raise {sysctl}, e.g. 'sysctl -w {sysctl}=524288' and the same "
            f"line in /etc/sysctl.d/90-hive.conf")


@dataclass(frozen=True)
class Watch:
    role: str            # "root", "user", "repo", "sub"
    path: str
    key: str = ""        # "user/repo" for repo and sub watches, "user" for user watches
    sub: str = ""        # borg 2 subfolder name


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def _from_ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class Watcher:
    def __init__(self, repos_root: Path, state_dir: Path, host: str, *,
                 flush_interval: float = 0.5, flush_max: int = 10_000,
                 rescan_interval: float = 300.0, lock_check_interval: float = 10.0,
                 lock_stale_after: float = 86_400.0) -> None:
        self.root = str(repos_root)
        self.state_dir = state_dir
        self.host = host
        self.flush_interval = flush_interval
        self.flush_max = flush_max
        self.rescan_interval = rescan_interval
        self.lock_check_interval = lock_check_interval
        self.lock_stale_after = lock_stale_after
        self.inotify: INotify | None = None
        self.wds: dict[int, Watch] = {}
        self.repo_wds: dict[str, set[int]] = {}
        self.user_wds: dict[str, int] = {}
        self.states: dict[str, ev.RepoState] = {}
        self.growth: dict[str, Any] = {}  # key -> bytes_added of its last backups
        self._key_warned: dict[str, float] = {}  # key -> when its key problem was last told
        self.dirty: set[str] = set()
        self.buffer: list[tuple[Any, ...]] = []
        self.log_rows: list[tuple[Any, ...]] = []
        self.journal_seen: tuple[int, int] | None = None
        self.stopping = False
        self.overflowed = False
        self.root_watched = False
        self.watch_limit_hit = False
        self.last_error: str | None = None
        self.counts = {"file_events": 0, "events": 0, "flushes": 0, "overflows": 0}

    # ----------------------------------------------------------------- watches

    def _add_watch(self, path: str, watch: Watch, fatal: bool) -> int | None:
        assert self.inotify is not None
        try:
            wd = self.inotify.add_watch(path, DIR_MASK)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                message = _limit_message("watches", len(self.wds))
                if fatal:
                    raise WatchError(message) from None
                if not self.watch_limit_hit:
                    log.error("%s; %s is only looked at by periodic rescans", message, path)
                    self._log_row("watch_limit", {"path": path, "watches": len(self.wds)})
                self.watch_limit_hit = True
                return None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return None  # gone (or turned into a file) before we got to it
            raise
        self.wds[wd] = watch
        return wd

    def _rm_watches(self, wds: set[int]) -> None:
        assert self.inotify is not None
        for wd in wds:
            self.wds.pop(wd, None)
            with contextlib.suppress(OSError):  # the kernel may have dropped it already
                self.inotify.rm_watch(wd)

    def _watch_repo(self, key: str, fatal: bool = False) -> None:
        path = os.path.join(self.root, key)
        wds = self.repo_wds.setdefault(key, set())
        wd = self._add_watch(path, Watch("repo", path, key), fatal)
        if wd is not None:
            wds.add(wd)
        try:
            entries = os.scandir(path)
        except OSError:
            return
        with entries:
            subdirs = [e.name for e in entries
                       if e.name in BORG2_SUBDIRS and e.is_dir(follow_symlinks=False)]
        for sub in subdirs:
            self._watch_sub(key, sub, fatal)

    def _watch_sub(self, key: str, sub: str, fatal: bool = False) -> None:
        path = os.path.join(self.root, key, sub)
        if any(self.wds.get(w, Watch("", "")).sub == sub for w in self.repo_wds.get(key, ())):
            return
        wd = self._add_watch(path, Watch("sub", path, key, sub), fatal)
        if wd is not None:
            self.repo_wds.setdefault(key, set()).add(wd)

    def _user_repos(self, user: str) -> list[str]:
        try:
            entries = os.scandir(os.path.join(self.root, user))
        except OSError:
            return []
        with entries:
            return [f"{user}/{e.name}" for e in entries
                    if _REPO_NAME.match(e.name) and e.is_dir(follow_symlinks=False)]

    def _users(self) -> list[str]:
        with os.scandir(self.root) as entries:
            return [e.name for e in entries
                    if not e.name.startswith(".") and e.is_dir(follow_symlinks=False)]

    def _watch_tree(self, fatal: bool) -> list[str]:
        """Watch everything not yet watched; return every repository key on disk."""
        if not self.root_watched:
            if self._add_watch(self.root, Watch("root", self.root), fatal) is None:
                return []
            self.root_watched = True
        keys = []
        for user in self._users():
            if user not in self.user_wds:
                wd = self._add_watch(os.path.join(self.root, user),
                                     Watch("user", os.path.join(self.root, user), user), fatal)
                if wd is not None:
                    self.user_wds[user] = wd
            for key in self._user_repos(user):
                if key not in self.repo_wds or not self.repo_wds[key]:
                    self._watch_repo(key, fatal)
                keys.append(key)
        return keys

    # ----------------------------------------------------------------- events

    def _record(self, key: str, found: list[ev.RepoEvent], layout: str | None = None) -> None:
        user, _, repo = key.partition("/")
        path = os.path.join(self.root, key)
        if any(e.kind == "updated" for e in found):
            history = self.growth.get(key)
            if history is None:
                history = self.growth[key] = commits.new_history()
            found = commits.classify(path, layout, found, history)
        for e in found:
            self.buffer.append((_ts(e.time), self.host, repo, user, path, e.kind, e.source,
                                json.dumps(e.details)))
            if e.kind == "corrupt":
                log.warning("%s makes no sense as a borg repository: %s", key,
                            e.details.get("problem"))
            else:
                log.debug("%s %s %s", key, e.kind, e.details)
        self.counts["events"] += len(found)

    def _set(self, key: str, state: ev.RepoState | None) -> None:
        if state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = state
        self.dirty.add(key)

    def _log_row(self, kind: str, details: dict[str, Any]) -> None:
        self.log_rows.append((datetime.now(UTC), self.host, os.getpid(), kind,
                              json.dumps(details)))

    def reconcile_repo(self, key: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        try:
            found = borg_layout.scan_repository(os.path.join(self.root, key))
        except OSError as exc:
            log.warning("cannot read %s: %s", key, exc.strerror)
            return
        old = self.states.get(key)
        new, events = ev.reconcile(old, found, now)
        self._record(key, events, new.layout if new is not None else None)
        if new != old:
            self._set(key, new)

    def _keep_key(self, key: str, path: str) -> None:
        """borg wrote the repository's `config` (init, a key change, a check): keep its key
        at once (watcher/repokeys.py), not only at the next `hive stats`, so that a key
        replaced by an append-only client soon after `borg init` is not the only one."""
        try:
            kept = repokeys.keep_key_of(self.state_dir, key.partition("/")[2], path)
        except OSError as exc:
            if self._key_problem_due(key):
                log.warning("cannot keep a copy of the key of %s: %s", key, exc)
            return
        if kept is not None and kept.digest is None and not self._key_problem_due(key):
            return  # no key Hive can read, told within the hour (`hive stats`: each run)
        if kept is not None and kept.changed:
            log.warning("the key in the config of %s changed; every key it had is kept in "
                        "%s", key, kept.copy.parent)
            self._record(key, [ev.RepoEvent(time.time(), "repokey_changed",
                                            {"copy": str(kept.copy)})])

    def _key_problem_due(self, key: str) -> bool:
        """Whether a key problem of this repository is told now: a client can repeat it
        at will (write a key Hive cannot read, run into MAX_KEPT), so at most once every
        KEY_WARN_EVERY seconds."""
        now = time.monotonic()
        if self._key_warned.get(key, -KEY_WARN_EVERY) + KEY_WARN_EVERY > now:
            return False
        self._key_warned[key] = now
        return True

    def _repo_gone(self, key: str, how: str) -> None:
        self._rm_watches(self.repo_wds.pop(key, set()))
        if key in self.states:
            self._record(key, ev.gone(self.states[key], time.time(), how))
            self._set(key, None)

    def _user_gone(self, user: str, how: str) -> None:
        wd = self.user_wds.pop(user, None)
        if wd is not None:
            self._rm_watches({wd})
        for key in [k for k in set(self.states) | set(self.repo_wds)
                    if k.partition("/")[0] == user]:
            self._repo_gone(key, how)

    def handle(self, event: Any) -> None:
        """One raw inotify event."""
        self.counts["file_events"] += 1
        mask = event.mask
        if mask & flags.Q_OVERFLOW:
            self.overflowed = True
            return
        watch = self.wds.get(event.wd)
        if watch is None:
            return
        if mask & flags.IGNORED:
            self.wds.pop(event.wd, None)
            if watch.role == "root":
                self.root_watched = False
            return
        is_dir = bool(mask & flags.ISDIR)
        added = bool(mask & (flags.CREATE | flags.MOVED_TO))
        removed = bool(mask & (flags.DELETE | flags.MOVED_FROM))
        how = "moved" if mask & flags.MOVED_FROM else "removed"
        if watch.role == "root":
            if mask & (flags.DELETE_SELF | flags.MOVE_SELF | flags.UNMOUNT):
                log.error("%s itself was removed or moved; waiting for it to return", self.root)
                self._log_row("root_gone", {"path": self.root})
                for user in list(self.user_wds):
                    self._user_gone(user, "removed")
                for key in list(self.states):
                    self._repo_gone(key, "removed")
                self._rm_watches({event.wd})
                self.root_watched = False
            elif is_dir and not event.name.startswith("."):
                if added:
                    self._rescan_user(event.name)
                elif removed:
                    self._user_gone(event.name, how)
            return
        if watch.role == "user":
            if is_dir and _REPO_NAME.match(event.name):
                key = f"{watch.key}/{event.name}"
                if added:
                    self._watch_repo(key)
                    self.reconcile_repo(key)
                elif removed:
                    self._repo_gone(key, how)
            return
        if mask & (flags.DELETE_SELF | flags.MOVE_SELF):
            return  # the parent's DELETE or MOVED_FROM says where it went
        key = watch.key
        name = event.name if watch.role == "repo" else f"{watch.sub}/{event.name}"
        state = self.states.get(key, ev.RepoState())
        mtime_ns = None
        if name == "config/manifest" and added:
            with contextlib.suppress(OSError):
                mtime_ns = os.stat(os.path.join(watch.path, event.name),
                                   follow_symlinks=False).st_mtime_ns
        new, found = ev.apply(state, ev.FileEvent(time.time(), name, added, is_dir, mtime_ns))
        self._record(key, found, new.layout)
        if new != state:
            self._set(key, new)
        if name == "config" and added and not is_dir and new.layout == ev.BORG1:
            self._keep_key(key, watch.path)
        if (watch.role == "repo" and is_dir and added and event.name in BORG2_SUBDIRS
                and new.layout == ev.BORG2):
            # watch first, then look: what was written before the watch is not missed
            self._watch_sub(key, event.name)
            if event.name == "config":
                for sub in BORG2_SUBDIRS[1:]:
                    if os.path.isdir(os.path.join(watch.path, sub)):
                        self._watch_sub(key, sub)
            self.reconcile_repo(key)

    def _rescan_user(self, user: str) -> None:
        path = os.path.join(self.root, user)
        if user not in self.user_wds:
            wd = self._add_watch(path, Watch("user", path, user), fatal=False)
            if wd is not None:
                self.user_wds[user] = wd
        for key in self._user_repos(user):
            self._watch_repo(key)
            self.reconcile_repo(key)

    def drain(self, limit: int = 100_000) -> None:
        """Handle what is queued now, so a scan is not ahead of the events about it."""
        assert self.inotify is not None
        handled = 0
        while handled < limit:
            batch = self.inotify.read(timeout=0)
            if not batch:
                return
            for raw in batch:
                self.handle(raw)
            handled += len(batch)

    def rescan(self, reason: str) -> None:
        """Watch what is missing, then reconcile every repository with the disk."""
        started = time.monotonic()
        try:
            keys = self._watch_tree(fatal=False)
        except FileNotFoundError:
            keys = []
        now = time.time()
        for key in sorted(set(self.states) - set(keys)):
            self._repo_gone(key, "removed")
        before = self.counts["events"]
        for key in keys:
            self.reconcile_repo(key, now)
        found = self.counts["events"] - before
        if reason != "periodic" or found:
            self._log_row("rescan", {"reason": reason, "repositories": len(keys),
                                     "events": found,
                                     "seconds": round(time.monotonic() - started, 3)})
        log.info("rescan (%s): %d repositories, %d events", reason, len(keys), found)

    def check_locks(self) -> None:
        now = time.time()
        for key, state in list(self.states.items()):
            if not state.locked or state.stale_reported:
                continue
            path = os.path.join(self.root, key)
            holders = borg_locks.lock_holders(path, state)
            new, found = ev.check_lock(state, now, self.lock_stale_after,
                                       borg_locks.holders_alive(holders), [str(h) for h in holders])
            if found:
                self._record(key, found)
                self._set(key, new)

    # ----------------------------------------------------------------- database

    def _state_rows(self, now: datetime) -> list[tuple[Any, ...]]:
        rows = []
        for key in sorted(self.dirty):
            s = self.states.get(key)
            if s is None:
                continue
            user, _, repo = key.partition("/")
            rows.append((self.host, os.path.join(self.root, key), repo, user, s.layout,
                         s.layout_version, s.transaction, _ts(s.commit_time), s.archives,
                         sorted(s.locks), _ts(s.lock_since), s.stale_reported, now,
                         s.problem))
        return rows

    def _journal_changed(self) -> bool:
        try:
            st = os.stat(self.state_dir / journal_rows.FILE_NAME)
        except OSError:
            return False
        return (st.st_ino, st.st_size) != self.journal_seen

    def flush(self, timeout: float) -> bool:
        """Write buffered events and changed states in one transaction; keep them on failure."""
        if not (self.buffer or self.dirty or self.log_rows or self._journal_changed()):
            return True
        paths = [os.path.join(self.root, key) for key in sorted(self.dirty)]
        try:
            with store.write(self.state_dir, timeout) as con:
                store.insert(con, "events", store.EVENT_COLUMNS, self.buffer)
                if paths:
                    con.execute("DELETE FROM repository_state WHERE host = $1 AND path IN "
                                "(SELECT unnest($2))", [self.host, paths])
                    store.insert(con, "repository_state", STATE_COLUMNS,
                                 self._state_rows(datetime.now(UTC)))
                store.insert(con, "watcher_log", ("time", "host", "pid", "kind", "details"),
                             self.log_rows)
                journal_rows.import_new(con, self.state_dir)
        except store.StoreBusy:
            return False
        except (store.StoreError, OSError) as exc:
            if str(exc) != self.last_error:  # once per distinct problem, not every tick
                log.error("could not write to the database (events stay buffered): %s", exc)
                self.last_error = str(exc)
            self._bound_buffer()
            return False
        self.last_error = None
        try:
            st = os.stat(self.state_dir / journal_rows.FILE_NAME)
            self.journal_seen = (st.st_ino, st.st_size)
        except OSError:
            pass
        self.buffer.clear()
        self.dirty.clear()
        self.log_rows.clear()
        self.counts["flushes"] += 1
        return True

    def _bound_buffer(self) -> None:
        """A database that stays unwritable must not eat the server's memory: past
        MAX_BUFFER events the oldest go (the states, and so later reconciliations, stay
        right; only history is lost, and the log says how much)."""
        excess = len(self.buffer) - MAX_BUFFER
        if excess > 0:
            del self.buffer[:excess]
            self.counts["dropped"] = self.counts.get("dropped", 0) + excess
            log.error("dropped the %d oldest buffered events (%d in all so far)", excess,
                      self.counts["dropped"])

    def load_recorded(self) -> None:
        """The state recorded by the previous run: what a restart compares the disk with."""
        with store.write(self.state_dir, timeout=30.0) as con:
            rows = con.execute(
                "SELECT path, layout, layout_version, transaction, commit_time, archives, "
                "locks, lock_since, stale_reported, problem FROM repository_state "
                "WHERE host = $1",
                [self.host]).fetchall()
            added = con.execute(
                "SELECT path, list(bytes ORDER BY time) FROM (SELECT path, time, "
                "TRY_CAST(details->>'bytes_added' AS BIGINT) AS bytes, row_number() OVER "
                "(PARTITION BY path ORDER BY time DESC) AS n FROM events WHERE host = $1 AND "
                "kind = 'updated' AND details->>'what' = 'backup') WHERE n <= $2 "
                "GROUP BY path", [self.host, commits.GROWTH_HISTORY]).fetchall()
        prefix = self.root.rstrip("/") + "/"
        for path, values in added:
            if path.startswith(prefix):
                self.growth[path[len(prefix):]] = commits.new_history(values or [])
        for (path, layout, version, transaction, commit_time, archives, locks, lock_since,
             stale, problem) in rows:
            if not path.startswith(prefix):
                continue  # repos_root changed: those are not ours to compare
            self.states[path[len(prefix):]] = ev.RepoState(
                layout=layout, layout_version=version, transaction=transaction,
                commit_time=_from_ts(commit_time), archives=bool(archives),
                locks=frozenset(locks or ()), lock_since=_from_ts(lock_since),
                stale_reported=bool(stale), problem=problem)

    # ----------------------------------------------------------------- main loop

    def start(self) -> int:
        """Watch the tree, then reconcile it with what the database remembers."""
        if not os.path.isdir(self.root):
            raise WatchError(f"repos_root {self.root} does not exist; run 'hive apply' first")
        try:
            self.inotify = INotify()
        except OSError as exc:
            if exc.errno == errno.EMFILE:
                raise WatchError(_limit_message("instances", 0)) from None
            raise
        self.load_recorded()
        keys = self._watch_tree(fatal=True)
        now = time.time()
        for key in sorted(set(self.states) - set(keys)):
            self._repo_gone(key, "removed")
        for key in keys:
            self.reconcile_repo(key, now)
        self._log_row("start", {"repositories": len(keys), "watches": len(self.wds),
                                "events": self.counts["events"]})
        if not self.flush(timeout=30.0):
            raise WatchError(f"could not write {self.state_dir / store.DB_NAME}")
        return len(keys)

    def stop(self, *_args: Any) -> None:
        self.stopping = True

    def run(self) -> int:
        """Until SIGTERM or SIGINT; then flush what is buffered and return 0."""
        lock_fd = hold_watch_lock(self.state_dir)
        try:
            return self._run()
        finally:
            os.close(lock_fd)

    def _run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        repositories = self.start()
        assert self.inotify is not None
        log.info("watching %d repositories under %s with %d inotify watches",
                 repositories, self.root, len(self.wds))
        now = time.monotonic()
        next_flush = now + self.flush_interval
        next_locks = now + self.lock_check_interval
        next_rescan = now + self.rescan_interval
        while not self.stopping:
            now = time.monotonic()
            wake = min(next_flush, next_locks, next_rescan)
            timeout_ms = int(max(0.0, min(wake - now, 0.5)) * 1000)
            for raw in self.inotify.read(timeout=timeout_ms):
                self.handle(raw)
            if self.overflowed:
                self.overflowed = False
                self.counts["overflows"] += 1
                log.warning("inotify queue overflow: events were lost; rescanning")
                self._log_row("overflow", {})
                self.rescan("overflow")
            now = time.monotonic()
            if now >= next_locks:
                if not self.root_watched:
                    self.rescan("repos_root returned")
                self.check_locks()
                next_locks = now + self.lock_check_interval
            if now >= next_rescan:
                self.watch_limit_hit = False
                self.drain()  # compare the disk with every event already queued
                self.rescan("periodic")
                next_rescan = now + self.rescan_interval
            if now >= next_flush or len(self.buffer) >= self.flush_max:
                # busy (a reader or `hive stats` holds the lock): try again shortly
                wrote = self.flush(timeout=0.1)
                next_flush = time.monotonic() + (self.flush_interval if wrote else 0.05)
        self._log_row("stop", {"reason": "signal", **self.counts})
        flushed = self.flush(timeout=20.0)  # within systemd's usual stop timeout
        self.inotify.close()
        log.info("stopped after %d file events, %d repository events",
                 self.counts["file_events"], self.counts["events"])
        return 0 if flushed else 1

