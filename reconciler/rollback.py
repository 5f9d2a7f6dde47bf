"""Roll an append-only borg 1.x repository back to an earlier transaction.

Why: an append-only key can still `borg delete` and `borg prune`; borg then only *marks*
archives deleted, keeps every segment file and appends one line per commit to the
repository's `transactions` log. The way back that borg documents (usage notes, "append-only
mode") is to remove the segments newer than the transaction to return to, and the
index/hints/integrity files that describe the newer state; the next borg access rebuilds the
index from the segments that are left. This module does exactly that, carefully:

* the plan is pure (`plan_rollback` over borgrepo/transactions.py) and table-tested;
* nothing is deleted: files are *moved* into a folder beside the repository, with a note on
  how to put them back;
* the repository is locked the way borg locks it (borgrepo/locks.py), so no client
  (`borg serve`) can open it while files move, and a held lock (a running backup) makes
  the rollback refuse;
* the `nonce` file is never touched: borg reserves encryption counters there, and rolling it
  back could make a client reuse a counter.

Only the standard library is used.
"""

from __future__ import annotations

import os
import pickle
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from borgrepo import RepositoryBusy, RepositoryError, read_regular
from borgrepo.config import read_config
from borgrepo.locks import borg_host_id, repository_lock
from borgrepo.segments import ends_with_commit
from borgrepo.transactions import (
    _STATE,
    TRANSACTIONS,
    Layout,
    Transaction,
    parse_transactions,
    segment_ranges,
    truncate_log,
)

__all__ = ["Layout", "RepositoryBusy", "RollbackError", "Transaction", "parse_transactions",
           "read_config", "repository_lock", "segment_ranges", "truncate_log"]

# The same errors as borg's format raises: a repository that refuses to be read or locked.
RollbackError = RepositoryError


# --------------------------------------------------------------------------- pure part


@dataclass
class RollbackPlan:
    """What a rollback to `target` moves aside, and why it may not go ahead.

    `refusals` stop it; `warnings` stop it unless forced (the caller decides)."""

    target: int
    current: int | None
    undone: list[Transaction] = field(default_factory=list)
    kept: list[Transaction] = field(default_factory=list)
    move: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def nothing_to_do(self) -> bool:
        return not self.refusals and not self.move and not self.undone


def plan_rollback(transactions: list[Transaction], layout: Layout, target: int,
                  append_only: bool) -> RollbackPlan:
    """Which files a rollback to transaction `target` moves aside (pure).

    Moves: every segment newer than `target`, and every index/hints/integrity file newer than
    it (they describe the newer state; borg rebuilds the index from the segments left).
    Refuses: no log, a target not in the log, and missing segments between the log's first
    transaction and the target (a compaction removed them: that state no longer exists).
    Warns (needs force): a repository that is not append-only, where a full-access client may
    have compacted; and a newest transaction that is not in the log, i.e. written by a
    full-access session, whose work would be undone too.
    """
    plan = RollbackPlan(target=target, current=layout.current)
    if not transactions:
        plan.refusals.append("no transactions log: borg keeps one only for commits made in "
                             "append-only mode")
        return plan
    ids = [t.id for t in transactions]
    if target not in ids:
        plan.refusals.append(f"transaction {target} is not in the log; choose one of "
                             + ", ".join(map(str, ids)))
        return plan
    if not append_only:
        plan.warnings.append("the repository is not append-only (no append-only keys in "
                             "hive.yaml, append_only = 0 in its config): a full-access "
                             "client may have compacted segments that older transactions "
                             "need")
    plan.kept = [t for t in transactions if t.id <= target]
    plan.undone = [t for t in transactions if t.id > target]
    missing = [n for n in range(ids[0], target + 1) if n not in layout.segments]
    if missing:
        plan.refusals.append(f"segments {_ranges(missing)} are missing: a compaction removed "
                             f"them, so the state of transaction {target} no longer exists")
    if plan.current is not None and plan.current > ids[-1]:
        plan.warnings.append(f"the newest transaction on disk ({plan.current}) is not in the "
                             f"log (last: {ids[-1]}): a full-access session wrote after it; "
                             "rolling back undoes that too")
    newer_segments = sorted((n for n in layout.segments if n > target), reverse=True)
    state = sorted((p for p, n in layout.state_files.items() if n > target),
                   key=lambda p: (layout.state_files[p], p))
    # Index files first: if interrupted, borg rebuilds from whatever segments are left and
    # a second run finishes the job; then segments newest first.
    plan.move = [*state, *(layout.segments[n] for n in newer_segments)]
    return plan


def unlogged_commits(path: Path, layout: Layout, transactions: list[Transaction],
                     target: int) -> list[int]:
    """Segments newer than `target` that end with a commit the log does not list.

    borg logs only append-only commits, so a full-access key's commit between two logged
    transactions is invisible in `transactions`; its segment still ends with a COMMIT
    entry. Rolling back past it undoes that work too, which needs the operator's consent.
    Reads 9 bytes per segment (borgrepo/segments.py), never following links nor blocking.
    """
    logged = {t.id for t in transactions}
    return [n for n, relative in sorted(layout.segments.items())
            if n > target and n not in logged and ends_with_commit(str(path / relative))]


def warn_unlogged(plan: RollbackPlan, commits: list[int]) -> None:
    """Add the warning for commits the log does not list (needs --force to go ahead)."""
    commits = [n for n in commits if n != plan.current]  # already warned about
    if commits:
        plan.warnings.append(f"segments {_ranges(commits)} end with commits that are not in "
                             "the transactions log (a full-access key wrote them): rolling "
                             "back undoes them too")


def _ranges(numbers: list[int]) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


# --------------------------------------------------------------------------- reading


@dataclass
class Repository:
    """A borg 1.x repository folder as read from disk."""

    path: Path
    transactions: list[Transaction]
    layout: Layout
    append_only_config: bool
    id: str | None

    @classmethod
    def read(cls, path: Path) -> Repository:
        config = path / "config"
        if not config.is_file() or not (path / "data").is_dir():
            raise RollbackError(f"{path} is not a borg 1.x repository (no config or data/)")
        if (path / "data").is_symlink():
            raise RollbackError(f"{path}/data is a symlink; Hive will not follow it")
        log = read_regular(path / TRANSACTIONS) or ""
        append_only, ident = read_config(read_regular(config) or "")
        return cls(path, parse_transactions(log), Layout.from_paths(_relative_files(path)),
                   append_only, ident)


def _relative_files(root: Path) -> Iterator[str]:
    for name in os.listdir(root):
        if _STATE.match(name):
            yield name
    data = root / "data"
    for folder in os.listdir(data):
        if folder.isdigit() and stat.S_ISDIR(os.lstat(data / folder).st_mode):
            for name in os.listdir(data / folder):
                if name.isdigit():
                    yield f"data/{folder}/{name}"


# --------------------------------------------------------------------------- as the owner


def as_owner(path: Path, work: Callable[[], Any]) -> Any:
    """Run `work` in a child process with the uid and gid of the repository at `path`.

    Everything inside a repository belongs to its unix user, who can plant symlinks, fifos
    or a `lock.roster` pointing at /etc/shadow there. Done as that user, no such trick can
    reach a file the user could not already touch; done as root, it could. The result (or
    the exception) comes back through a pipe.
    """
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise RollbackError(f"{path} is not a directory")
    if os.geteuid() != 0 or st.st_uid == 0:
        return work()  # nothing to drop
    # Whatever needs imports or lookups happens now: the user may not be able to read the
    # interpreter's own files (a Python under /root).
    borg_host_id()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        status = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(st.st_gid, st.st_gid, st.st_gid)
            os.setresuid(st.st_uid, st.st_uid, st.st_uid)
            payload = pickle.dumps((True, work()))
        except BaseException as exc:
            status = 1
            try:
                payload = pickle.dumps((False, exc))
            except Exception:
                payload = pickle.dumps((False, RollbackError(repr(exc))))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        raise RollbackError("the rollback process died")
    ok, value = pickle.loads(data)
    if ok:
        return value
    raise value


def make_aside_folder(repo_path: Path, target: int) -> Path:
    """Create the folder moved files go to, owned by the repository's user (who does the
    moving). Made by root in the root-owned user folder, where the user cannot race it."""
    aside = aside_folder(repo_path, target)
    st = os.lstat(repo_path)
    aside.mkdir(mode=0o700)
    os.chown(aside, st.st_uid, st.st_gid, follow_symlinks=False)
    return aside


# --------------------------------------------------------------------------- doing it


def aside_folder(repo_path: Path, target: int, now: datetime | None = None) -> Path:
    """Where moved files go: beside the repository, outside anything borg reads."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return repo_path.parent / f"{repo_path.name}.rollback-{stamp}-to-{target}"


_UNDO_NOTE = """\
Hive moved these files out of {repo} when it rolled the repository back from
transaction {current} to transaction {target} ({when}).

To undo, before any client has written to the repository again (new segments would take
the same numbers): lock out clients, move every file below back to the same relative path
in {repo}, and put transactions.before-rollback back as {repo}/transactions.

Moved: {count} files.
"""


def execute(plan: RollbackPlan, repo: Repository, aside: Path) -> list[str]:
    """Move the plan's files into `aside` (same relative paths) and cut the transactions log
    to the transactions kept; the original log is kept in `aside` too. Call with the
    repository locked. Returns the relative paths moved."""
    if plan.refusals:
        raise RollbackError("; ".join(plan.refusals))
    if not aside.exists():
        aside.mkdir(mode=0o700)
    elif aside.is_symlink() or not aside.is_dir() or any(aside.iterdir()):
        raise RollbackError(f"{aside} must be a new, empty folder (make_aside_folder)")
    moved: list[str] = []
    log = repo.path / TRANSACTIONS
    # Read once, safely (the user's file may have become a FIFO or a symlink since).
    text = read_regular(log)
    if text is None:
        raise RollbackError(f"{log} went away")
    (aside / "transactions.before-rollback").write_text(text, encoding="utf-8")
    (aside / "README.txt").write_text(_UNDO_NOTE.format(
        repo=repo.path, current=plan.current, target=plan.target, count=len(plan.move),
        when=datetime.now(UTC).isoformat(timespec="seconds")), encoding="utf-8")
    for relative in plan.move:
        destination = aside / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(repo.path / relative, destination)
        moved.append(relative)
    info = log.lstat()
    temp = repo.path / f"{TRANSACTIONS}.hive-{secrets.token_hex(4)}.tmp"
    temp.write_text(truncate_log(text, plan.target), encoding="utf-8")
    os.chown(temp, info.st_uid, info.st_gid)
    temp.chmod(info.st_mode & 0o7777)
    os.rename(temp, log)
    fd = os.open(repo.path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return moved
