"""borg 2 betas' `archives/` folder: one empty file per archive, named by its id.

Seen with 2.0.0b20 (inotify): `borg create` writes `archives/<id>` (a `.tmp` renamed into
place) and then commits `config/manifest`; `borg delete` and `borg prune` rename
`archives/<id>` to `archives/<id>.del` (a soft delete `borg undelete` can revert) and
commit the manifest; `borg compact` removes the `.del` entries and commits nothing.

So what a borg 2 commit did is read from the entries alone, never from their content: an
entry written (mtime) between the previous commit and this one is a backup; otherwise an
entry soft-deleted (a `.del` renamed into place: its ctime) in that span is a delete; an
old entry renamed back (`borg undelete`: its ctime, not its mtime) is `other`; an entry
removed (the folder's mtime) is a delete; anything else is `other`. Only `archives/` is
listed, with lstat per entry, never through a symlink, and at most ENTRY_LIMIT entries.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass

DELETED = ".del"
ENTRY_LIMIT = 200_000  # archives kept in one repository: far beyond any real prune policy
_FUTURE_SLACK_NS = 86_400 * 10**9


@dataclass(frozen=True)
class Listing:
    """What `archives/` holds, as times in ns (None: no such entry)."""

    exists: bool = False
    live: int = 0                        # archives not deleted
    deleted: int = 0                     # `.del` entries (soft-deleted, until compact)
    folder_mtime: int | None = None      # changes with every entry added or removed
    newest_written: int | None = None    # newest entry's mtime, live or deleted
    written: tuple[int, ...] = ()        # every entry's mtime
    soft_deleted: tuple[int, ...] = ()   # every `.del` entry's ctime (when it was renamed)
    renamed: tuple[int, ...] = ()        # every live entry's ctime (undelete renames back)
    problem: str | None = None


def _sane(ns: int) -> bool:
    return 0 <= ns <= time.time_ns() + _FUTURE_SLACK_NS


def listing(repo: str) -> Listing:
    """The entries of `<repo>/archives`; an empty Listing when there is no such folder."""
    folder = os.path.join(repo, "archives")
    try:
        top = os.stat(folder, follow_symlinks=False)
    except OSError:
        return Listing()
    if not stat.S_ISDIR(top.st_mode):
        return Listing()
    live = deleted = 0
    written: list[int] = []
    soft: list[int] = []
    renamed: list[int] = []
    problem = None
    try:
        with os.scandir(folder) as it:
            for count, entry in enumerate(it):
                if count >= ENTRY_LIMIT:
                    problem = f"archives/ holds more than {ENTRY_LIMIT} entries"
                    break
                name = entry.name
                if name.endswith(".tmp"):
                    continue  # being written: only the rename into place counts
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone meanwhile
                if not stat.S_ISREG(st.st_mode):
                    continue
                if _sane(st.st_mtime_ns):
                    written.append(st.st_mtime_ns)
                if name.endswith(DELETED):
                    deleted += 1
                    if _sane(st.st_ctime_ns):
                        soft.append(st.st_ctime_ns)
                else:
                    live += 1
                    if _sane(st.st_ctime_ns):
                        renamed.append(st.st_ctime_ns)
    except OSError as exc:
        problem = f"archives/: {exc.strerror}"
    return Listing(exists=True, live=live, deleted=deleted,
                   folder_mtime=top.st_mtime_ns if _sane(top.st_mtime_ns) else None,
                   newest_written=max(written, default=None), written=tuple(written),
                   soft_deleted=tuple(soft), renamed=tuple(renamed), problem=problem)


def what(found: Listing, previous: int | None, transaction: int) -> str:
    """What the commit at manifest mtime `transaction` (ns) did, the previous commit being
    at `previous`: init, backup, delete or other.

    A repository seen for the first time (previous None) with archives is `other`: which
    of its entries that commit wrote is not known, and a guess would be wrong after a
    prune as often as right.
    """
    if previous is None:
        return "other" if found.exists else "init"  # init commits before archives/ exists

    def within(ns: int | None) -> bool:
        return ns is not None and previous < ns <= transaction

    if any(within(ns) for ns in found.written):
        return "backup"  # a create, also one that pruned in the same session
    if any(within(ns) for ns in found.soft_deleted):
        return "delete"
    if any(within(ns) for ns in found.renamed):
        return "other"  # `borg undelete`: an old entry renamed back from `.del`
    return "delete" if within(found.folder_mtime) else "other"
