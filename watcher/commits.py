"""What each commit did: `updated` events of borg 1.x repositories get `what` (init,
backup, delete, compact, other) and the sizes from borgrepo/segments.py, borg 2 ones
`what` (init, backup, delete, other) from the `archives/` entries (borgrepo/archives.py),
and a borg 1.x backup that adds far more than usual gets an `unusual_growth` event.

`events.py` stays pure: it says *that* a repository committed (transaction N after M);
this module reads the segments between M and N and, when the watcher was down and
missed several commits, splits that one event into one per commit, each at its own
commit segment's mtime. Commits whose segments compaction removed are `other`.
"""

from __future__ import annotations

import logging
import statistics
from collections import deque
from dataclasses import replace
from typing import Any

from borgrepo import archives, segments
from watcher import events as ev

log = logging.getLogger("hive.watch")
GROWTH_FACTOR = 10.0          # x the median bytes_added of the previous backups
GROWTH_MIN_BYTES = 1 << 30    # and at least 1 GB
GROWTH_HISTORY = 10
GONE = "its segments are gone (compacted)"


def classify(path: str, layout: str | None, found: list[ev.RepoEvent],
             history: deque[int] | None = None) -> list[ev.RepoEvent]:
    """`found` with every `updated` event classified (borg 1.x ones split per commit)."""
    out: list[ev.RepoEvent] = []
    for event in found:
        if event.kind != "updated":
            out.append(event)
            continue
        details = dict(event.details)
        transaction, previous = details.get("transaction"), details.get("previous")
        if layout == ev.BORG2:
            out.append(replace(event, details=_borg2(path, details)))
            continue
        if layout != ev.BORG1 or not isinstance(transaction, int) or details.get("rollback"):
            details.update(what="other", backup=False)
            out.append(replace(event, details=details))
            continue
        try:
            # A repository seen for the first time: only its newest commit, not its history.
            commits = segments.commits(path, previous, transaction) if previous is not None \
                else segments.last_commit(path, transaction)
        except OSError as exc:  # the folder went away meanwhile
            commits = [segments.Commit(transaction, None, problem=str(exc))]
        gone = not commits or commits[-1].transaction != transaction
        if gone:
            commits.append(segments.Commit(transaction, None, problem=GONE))
        before = previous
        for commit in commits:
            if commit.problem:  # gone (compacted) is ordinary; anything else is worth a line
                (log.debug if commit.problem == GONE else log.warning)(
                    "%s: commit %d classified as other: %s", path, commit.transaction,
                    commit.problem)
            last = commit is commits[-1]
            data = {"transaction": commit.transaction, "previous": before,
                    "backup": commit.what == "backup", **commit.details()}
            when = commit.time if commit.time is not None and not (
                last and event.source == "inotify") else event.time
            out.append(ev.RepoEvent(when, "updated", data, event.source))
            before = commit.transaction
            if commit.what == "backup" and history is not None:
                out.extend(_growth(commit, when, history, event.source))
    return out


def _borg2(path: str, details: dict[str, Any]) -> dict[str, Any]:
    """A borg 2 commit classified by the `archives/` entries written or deleted since the
    previous one (borgrepo/archives.py); with the counts of archives it leaves."""
    transaction, previous = details.get("transaction"), details.get("previous")
    if not isinstance(transaction, int) or details.get("rollback"):
        return {**details, "what": "other", "backup": False}
    found = archives.listing(path)
    if found.problem:
        log.warning("%s: archives/ read only in part: %s", path, found.problem)
    what = archives.what(found, previous if isinstance(previous, int) else None, transaction)
    return {**details, "what": what, "backup": what == "backup", "archives": found.live,
            "archives_deleted": found.deleted}


def _growth(commit: segments.Commit, when: float, history: deque[int],
            source: str) -> list[ev.RepoEvent]:
    """unusual_growth when this backup added > GROWTH_FACTOR x the median of the previous
    backups (and at least GROWTH_MIN_BYTES): data that no longer deduplicates, as files
    encrypted by ransomware do."""
    found = []
    if history:
        median = statistics.median(history)
        if commit.bytes_added >= GROWTH_MIN_BYTES and \
                commit.bytes_added > GROWTH_FACTOR * max(median, 1):
            found.append(ev.RepoEvent(when, "unusual_growth", {
                "transaction": commit.transaction, "bytes_added": commit.bytes_added,
                "median_bytes_added": median, "backups_compared": len(history),
                "factor": GROWTH_FACTOR}, source))
    history.append(commit.bytes_added)
    return found


def new_history(values: list[Any] = ()) -> deque[int]:  # type: ignore[assignment]
    return deque((int(v) for v in values if isinstance(v, int)), maxlen=GROWTH_HISTORY)
