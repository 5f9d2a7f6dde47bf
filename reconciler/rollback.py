"""Roll an append-only borg 1.x repository back to an earlier transaction.

Why: an append-only key can still `borg delete` and `borg prune`; borg then only *marks*
archives deleted, keeps every segment file and appends one line per commit to the
repository's `transactions` log. The way back that borg documents (usage notes, "append-only
mode") is to remove the segments newer than the transaction to return to, and the
index/hints/integrity files that describe the newer state; the next borg access rebuilds the
index from the segments that are left. This module does exactly that, carefully:

* the plan is pure (`parse_transactions`, `plan_rollback`) and table-tested;
* nothing is deleted: files are *moved* into a folder beside the repository, with a note on
  how to put them back;
* the repository is locked the way borg locks it (`lock.exclusive/` created by renaming a
  temporary directory, plus `lock.roster`), so no client (`borg serve`) can open it while
  files move, and a held lock (a running backup) makes the rollback refuse;
* the `nonce` file is never touched: borg reserves encryption counters there, and rolling it
  back could make a client reuse a counter.

Only the standard library is used.
"""

from __future__ import annotations

import configparser
import contextlib
import errno
import functools
import json
import os
import pickle
import re
import secrets
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRANSACTIONS = "transactions"
STATE_PREFIXES = ("index", "hints", "integrity")
# Numbers are ASCII digits, at most 10 of them (borg keeps segment numbers as uint32;
# int() of 5,000 digits is an error of its own), checked against MAX_SEGMENT after parsing.
_LINE = re.compile(r"^transaction ([0-9]{1,10}), UTC time (\S+)$", re.ASCII)
_SEGMENT = re.compile(r"^data/([0-9]+)/([0-9]+)$", re.ASCII)
_STATE = re.compile(r"^(index|hints|integrity)\.([0-9]+)$", re.ASCII)
MAX_SEGMENT = 2**32 - 1
ROSTER_LIMIT = 1 << 20  # borg's lock.roster is a few hundred bytes


class RollbackError(Exception):
    """The repository cannot be read or rolled back; the message says why."""


class RepositoryBusy(RollbackError):
    """A borg client holds the repository's lock."""


# --------------------------------------------------------------------------- pure part


@dataclass(frozen=True)
class Transaction:
    """One line of borg's `transactions` log: a commit and its time (UTC)."""

    id: int
    time: datetime | None


def parse_transactions(text: str) -> list[Transaction]:
    """The commits listed in a `transactions` file, oldest first.

    borg 1.x appends `transaction N, UTC time 2024-01-31T12:00:00.123456` per commit made in
    append-only mode, and again with the same N when it rebuilds that transaction's index
    (after a rollback): the first time is the commit's. A torn last line (a crash
    mid-append, no newline) is ignored; any other line that does not parse, or ids that go
    down, make the log untrustworthy.
    """
    result: list[Transaction] = []
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        match = _LINE.match(line.strip())
        if match is None:
            if number == len(lines):  # last line without newline: torn write
                continue
            raise RollbackError(f"transactions line {number} is not borg's format: {line!r}")
        ident = int(match.group(1))
        if ident > MAX_SEGMENT:
            raise RollbackError(f"transactions line {number}: transaction {ident} is beyond "
                                f"what borg writes ({MAX_SEGMENT})")
        try:
            when: datetime | None = datetime.fromisoformat(match.group(2)).replace(tzinfo=UTC)
        except ValueError:
            when = None
        if result and ident == result[-1].id:
            continue  # borg rebuilt the index of this transaction (seen after a rollback)
        if result and ident < result[-1].id:
            raise RollbackError(f"transactions line {number}: transaction {ident} follows "
                                f"{result[-1].id}; was the repository rolled back by hand?")
        result.append(Transaction(ident, when))
    return result


def truncate_log(text: str, target: int) -> str:
    """The log's own lines up to and including transaction `target`, verbatim.

    After a rollback borg numbers new commits from the segments left, so lines of undone
    transactions would later be followed by smaller numbers again: they must go."""
    kept = []
    for line in text.splitlines(keepends=True):
        match = _LINE.match(line.strip())
        if match is not None and int(match.group(1)) > target:
            break
        if match is not None:
            kept.append(line if line.endswith("\n") else line + "\n")
    return "".join(kept)


@dataclass(frozen=True)
class Layout:
    """What a borg 1.x repository folder holds, by relative path."""

    segments: dict[int, str]
    state_files: dict[str, int]

    @classmethod
    def from_paths(cls, paths: Iterable[str]) -> Layout:
        """Sort relative paths (`data/0/13`, `index.13`, ...) into segments and the
        index/hints/integrity files; anything else (config, nonce, README, locks) is not
        part of a rollback."""
        segments: dict[int, str] = {}
        state: dict[str, int] = {}
        for path in paths:
            m = _SEGMENT.match(path) or _STATE.match(path)
            if m is None:
                continue
            digits = m.group(2)
            number = int(digits) if len(digits) <= 10 else MAX_SEGMENT + 1
            if number > MAX_SEGMENT:
                raise RollbackError(f"{path[:60]}: no borg writes a number above {MAX_SEGMENT}; "
                                    "the repository's files make no sense (see borg check)")
            if m.re is _SEGMENT:
                segments[number] = path
            else:
                state[path] = number
        return cls(segments, state)

    @property
    def current(self) -> int | None:
        """The newest transaction on disk: the index's number, else the newest segment."""
        if self.state_files:
            return max(self.state_files.values())
        return max(self.segments) if self.segments else None


def segment_ranges(transactions: list[Transaction]) -> dict[int, tuple[int, int]]:
    """Transaction id -> the segment numbers it wrote (a commit ends in segment `id`)."""
    ranges: dict[int, tuple[int, int]] = {}
    previous = -1
    for t in transactions:
        ranges[t.id] = (previous + 1, t.id)
        previous = t.id
    return ranges


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


COMMIT_TAG = 2  # borg 1.x segment entry: crc32 (4), size (4), tag (1); a COMMIT is 9 bytes


def unlogged_commits(path: Path, layout: Layout, transactions: list[Transaction],
                     target: int) -> list[int]:
    """Segments newer than `target` that end with a commit the log does not list.

    borg logs only append-only commits, so a full-access key's commit between two logged
    transactions is invisible in `transactions`; its segment still ends with a COMMIT
    entry. Rolling back past it undoes that work too, which needs the operator's consent.
    Reads 9 bytes per segment, never following links nor blocking on odd files.
    """
    logged = {t.id for t in transactions}
    found = []
    for n, relative in sorted(layout.segments.items()):
        if n <= target or n in logged:
            continue
        try:
            fd = os.open(path / relative, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            tail = os.pread(fd, 9, st.st_size - 9) if stat.S_ISREG(st.st_mode) \
                and st.st_size >= 17 else b""
        finally:
            os.close(fd)
        if len(tail) == 9 and int.from_bytes(tail[4:8], "little") == 9 \
                and tail[8] == COMMIT_TAG:
            found.append(n)
    return found


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


def read_config(text: str) -> tuple[bool, str | None]:
    """(`append_only = 1`?, the repository id) from a borg 1.x config file."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
        append_only = parser.getboolean("repository", "append_only", fallback=False)
        return append_only, parser.get("repository", "id", fallback=None)
    except (configparser.Error, ValueError):
        return False, None


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
        log = _read_regular(path / TRANSACTIONS) or ""
        append_only, ident = read_config(_read_regular(config) or "")
        return cls(path, parse_transactions(log), Layout.from_paths(_relative_files(path)),
                   append_only, ident)


LOG_LIMIT = 64 << 20  # ~1.4 million commits of transactions log


def _read_regular(path: Path, limit: int = LOG_LIMIT) -> str | None:
    """A small file's text, or None: never through a symlink, never blocking on a FIFO.
    (The repository's user controls these files; the caller may be root.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RollbackError(f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RollbackError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise RollbackError(f"{path} is {st.st_size} bytes, more than borg writes there "
                                f"(at most {limit} read)")
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)


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


# --------------------------------------------------------------------------- borg's lock


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
                raise RollbackError(f"cannot lock {path}: {exc}") from exc
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
    text = _read_regular(roster, ROSTER_LIMIT)
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
    text = _read_regular(log, LOG_LIMIT)
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
