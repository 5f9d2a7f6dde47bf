"""File activity -> repository events, as pure functions (no I/O, table-tested).

Borg tells the server nothing, so what a repository went through is read from what borg
does on disk (seen with inotify on borg 1.2.4, 1.4.5 and 2.0.0b20):

borg 1.x (`config` is a file)
    open    `lock.exclusive.XXXX.tmp/` renamed to `lock.exclusive/`
    commit  `index.N.tmp` renamed to `index.N` (N = the last segment number, the
            transaction); `borg init` commits transaction 1, so only N > 1 is a backup
    close   `lock.exclusive/` removed
borg 2 betas (borgstore: `config/` is a folder)
    open    a file appears in `locks/` (renamed into place from a `.tmp`)
    commit  `config/manifest` renamed into place; init writes one too, before `archives/`
            exists. The manifest's mtime in nanoseconds stands in for the transaction
            number; what the commit did is read from `archives/` (watcher/commits.py).
    close   the last file in `locks/` is removed

Every number read from a repository's files (an index name, a config version, a lock
holder's pid) is checked against what borg can write where it is parsed: the repository's
user controls these files. A repository whose files make no sense gets `problem` set and
one `corrupt` event, and is otherwise left out of the picture; the others are unaffected.

The watcher keeps one `RepoState` per repository and feeds it two kinds of input: single
file events (`apply`) while inotify delivers them, and whole scans (`reconcile`) when it
starts, after a queue overflow and on its periodic rescans. Both give the same events for
the same change, which is what makes restarts and overflows free of duplicates and gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from borgrepo.layout import (  # noqa: F401 (the watcher's names for them)
    BORG1,
    BORG1_INIT_TRANSACTION,
    BORG2,
    MAX_TRANSACTION,
    Nonsense,
    RepoState,
    index_number,
)

KINDS = ("created", "opened", "closed", "updated", "deleted", "lock_stale", "corrupt",
         "unusual_growth")
@dataclass(frozen=True)
class FileEvent:
    """One inotify event inside a repository, already decoded by the loop."""

    time: float
    name: str                # relative to the repository: "index.5", "locks/ab12", "config"
    added: bool              # CREATE or MOVED_TO; False: DELETE or MOVED_FROM
    is_dir: bool = False
    mtime_ns: int | None = None  # the loop stats config/manifest (borg 2) and fills this


@dataclass(frozen=True)
class RepoEvent:
    time: float
    kind: str
    details: dict[str, Any] = field(default_factory=dict)
    source: str = "inotify"  # "inotify": seen happening; "scan": found by comparing states


def _corrupt(state: RepoState, problem: str, time: float,
             source: str) -> tuple[RepoState, list[RepoEvent]]:
    """Record a problem once (until a scan finds the files sane again)."""
    if state.problem == problem:
        return state, []
    return replace(state, problem=problem), [RepoEvent(time, "corrupt", {"problem": problem},
                                                       source)]


def _updated(old: RepoState, new: RepoState, time: float, source: str) -> RepoEvent:
    details: dict[str, Any] = {"transaction": new.transaction, "previous": old.transaction,
                               "backup": new.backed_up}
    if (old.transaction is not None and new.transaction is not None
            and new.transaction < old.transaction):
        details["rollback"] = True
    return RepoEvent(time, "updated", details, source)


def _opened(state: RepoState, time: float, source: str) -> RepoEvent:
    return RepoEvent(time, "opened", {"locks": sorted(state.locks)}, source)


def _lock_change(old: RepoState, locks: frozenset[str], time: float,
                 source: str) -> tuple[RepoState, list[RepoEvent]]:
    if locks == old.locks:
        return old, []
    if not old.locks:
        new = replace(old, locks=locks, lock_since=time, stale_reported=False)
        return new, [_opened(new, time, source)]
    if not locks:
        new = replace(old, locks=locks, lock_since=None, stale_reported=False)
        return new, [RepoEvent(time, "closed", {}, source)]
    return replace(old, locks=locks), []  # another locker came or went; still open


def apply(state: RepoState, event: FileEvent) -> tuple[RepoState, list[RepoEvent]]:
    """The new state and the repository events one file event means."""
    top, _, rest = event.name.partition("/")
    leaf = rest or top
    if leaf.endswith(".tmp") or top.endswith(".tmp"):
        return state, []  # work in progress: only the rename into place counts
    t = event.time
    if not rest:
        if top == "config" and event.added and state.layout is None:
            new = replace(state, layout=BORG2 if event.is_dir else BORG1)
            return new, [RepoEvent(t, "created", {"layout": new.layout})]
        if state.layout == BORG2:
            if top == "archives" and event.is_dir:
                return replace(state, archives=event.added), []
            return state, []
        try:
            number = index_number(top)
        except Nonsense as exc:
            if event.added and state.layout == BORG1:
                return _corrupt(state, str(exc), t, "inotify")
            return state, []
        if number is not None and state.layout == BORG1 and not event.is_dir:
            if not event.added:
                if number != state.transaction:
                    return state, []  # the old index a commit replaced
                # The current index went without a newer one: rolled back (hive rollback
                # moves it aside) or being deleted. The next index counts, even if lower.
                return replace(state, dropped=number), []
            if state.dropped is not None:
                if number == state.transaction:
                    return replace(state, dropped=None), []  # the same index is back
            elif state.transaction is not None and number <= state.transaction:
                return state, []  # an older index, or one a scan already counted
            new = replace(state, transaction=number, commit_time=t, dropped=None)
            return new, [_updated(state, new, t, "inotify")]
        if top == "lock.exclusive" and event.is_dir:
            locks = frozenset({"lock.exclusive"}) if event.added else frozenset()
            return _lock_change(state, locks, t, "inotify")
        return state, []
    if state.layout != BORG2:
        return state, []
    if top == "locks":
        locks = state.locks | {rest} if event.added else state.locks - {rest}
        return _lock_change(state, frozenset(locks), t, "inotify")
    if top == "config" and rest == "manifest" and event.added:
        transaction = event.mtime_ns if event.mtime_ns is not None else int(t * 1e9)
        if transaction == state.transaction:
            return state, []
        new = replace(state, transaction=transaction, commit_time=t)
        return new, [_updated(state, new, t, "inotify")]
    return state, []


def reconcile(old: RepoState | None, new: RepoState | None,
              now: float) -> tuple[RepoState | None, list[RepoEvent]]:
    """Events that explain the difference between a remembered state and a fresh scan.

    Used on start (against the state recorded in the database), after a queue overflow
    and on periodic rescans. A commit found this way is dated by its file's mtime, so
    history shows when the backup happened, not when the watcher noticed it.
    """
    events: list[RepoEvent] = []
    if new is None or new.layout is None:
        if old is not None and old.layout is not None:
            how = "removed" if new is None else "emptied"
            events.append(RepoEvent(now, "deleted", {"layout": old.layout, "how": how},
                                    "scan"))
        return new, events
    base = old if old is not None and old.layout is not None else RepoState()
    if new.transaction is None and base.transaction is not None and new.layout == base.layout:
        # No index readable: a commit replacing it this instant (nothing was undone), or a
        # rollback (no index until borg rebuilds a lower one). Keep the transaction and, as
        # apply does when the index goes, let the next index count whatever its number.
        new = replace(new, transaction=base.transaction, commit_time=base.commit_time,
                      dropped=base.transaction if new.layout == BORG1 else None)
    if base.layout is None:
        events.append(RepoEvent(now, "created", {"layout": new.layout}, "scan"))
    if new.transaction is not None and new.transaction != base.transaction:
        when = new.commit_time if new.commit_time is not None else now
        events.append(_updated(base, new, when, "scan"))
    if base.locks and new.locks and not (base.locks & new.locks):
        events.append(RepoEvent(now, "closed", {}, "scan"))  # closed and reopened unseen
        events.append(_opened(new, new.lock_since or now, "scan"))
    elif new.locks and not base.locks:
        events.append(_opened(new, new.lock_since or now, "scan"))
    elif base.locks and not new.locks:
        events.append(RepoEvent(now, "closed", {}, "scan"))
    if new.problem is not None and new.problem != base.problem:
        events.append(RepoEvent(now, "corrupt", {"problem": new.problem}, "scan"))
    same_lock = bool(base.locks & new.locks)
    merged = replace(new, stale_reported=base.stale_reported if same_lock else False,
                     lock_since=(base.lock_since or new.lock_since) if same_lock
                     else new.lock_since)
    return merged, events


def gone(state: RepoState | None, now: float, how: str) -> list[RepoEvent]:
    """A repository folder was removed or moved away while watched."""
    if state is None or state.layout is None:
        return []
    return [RepoEvent(now, "deleted", {"layout": state.layout, "how": how})]


def check_lock(state: RepoState, now: float, stale_after: float,
               holder_alive: bool | None,
               holders: list[str] | None = None) -> tuple[RepoState, list[RepoEvent]]:
    """lock_stale, once per lock: its holder is gone, or it is older than stale_after.

    holder_alive is None when the holder cannot be checked (another host, an unreadable
    lock); then only the age counts.
    """
    if not state.locked or state.stale_reported or state.lock_since is None:
        return state, []
    age = now - state.lock_since
    if holder_alive is False:
        reason = "holder gone"
    elif age >= stale_after:
        reason = "older than threshold"
    else:
        return state, []
    details = {"reason": reason, "age_seconds": round(age, 1), "holders": holders or []}
    return replace(state, stale_reported=True), [RepoEvent(now, "lock_stale", details)]


def is_stale_lock(state: RepoState, now: float, stale_after: float,
                  holder_alive: bool | None) -> bool:
    """The same verdict as check_lock, without the once-only bookkeeping (for status)."""
    if not state.locked or state.lock_since is None:
        return False
    return holder_alive is False or now - state.lock_since >= stale_after
