"""Open ssh sessions that outlive their key: found after a revocation, and ended.

sshd reads a user's key lines when a client logs in, and never again for that
connection. Removing a key line (or changing it: narrowing `from=`, making a key
append-only) stops new logins, but a connection opened before keeps the rights of the
line it logged in with, for as long as the client keeps it open; and one connection can
open new session channels, each running the forced command again with those rights. A
stolen key held open that way could still delete archives after `hive apply` revoked it.

So after the authorized_keys files are written, apply ends every connection of that
user whose key line the write removed or changed. The plan names the ones open when it
is made (engine.sessions_note), but only as a note: a login between the plan and the
write would be missed, so apply reads them again after the write.

- `connections(uids)` reads /proc: the processes of the repository user's uid, grouped
  by connection (the topmost process of that uid above them is sshd's unprivileged child
  for the connection, `sshd: bh-x@notty`), with the key each logged in with. A group
  whose top is not sshd did not come through a key (a cron job, an admin's `su`) and is
  none of this module's business. sshd names that key when `ExposeAuthInfo yes`
  (deploy/sshd/hive.conf): the session's command gets SSH_USER_AUTH, a file holding
  `publickey <type> <base64>`.
- `to_end(connections, revoked(before, after))` is pure: a connection stays only when
  every key it logged in with has its lines unchanged. A connection whose key cannot be
  told (no ExposeAuthInfo, an unreadable file) stays only when no line was removed or
  changed: when in doubt, no access.
- `end(connections)` signals through pidfds, after checking each is the same process
  that was read (pid and start time): a pid reused since cannot be hit. First SIGTERM
  to sshd's process of the connection: the connection closes, and `borg serve`, seeing
  its input end, closes the repository and removes its lock. After GRACE seconds,
  SIGTERM to what is left; after END_WAIT, SIGKILL.

Linux only (/proc, pidfd); a host without /proc has no connections to find.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from borgrepo.layout import read_small
from reconciler.keylines import key_of

PROC = "/proc"
AUTH_VARIABLE = b"SSH_USER_AUTH="
CONNECTION_VARIABLE = b"SSH_CONNECTION="
MAX_AUTH_FILE = 65536  # ExposeAuthInfo writes a line per method: a few hundred bytes
END_WAIT = 5.0  # seconds from the first SIGTERM to SIGKILL
GRACE = 2.0  # seconds a session has to end on its own once its connection is closed
SSHD = b"sshd"  # the name of sshd's process for a connection, once it runs as the user


@dataclass(frozen=True)
class Process:
    pid: int
    ppid: int
    uid: int
    start: int  # clock ticks after boot (/proc/PID/stat field 22): pid + start is unique
    name: bytes = b""  # the program's name (/proc/PID/comm), e.g. b"sshd"


@dataclass
class Connection:
    """One ssh connection of a repository user: its processes, top first."""

    user: str
    processes: list[Process]
    keys: frozenset[tuple[str, str]] | None = None  # (type, base64); None: not known
    client: str | None = None  # "address port", from SSH_CONNECTION
    key_names: list[str] = field(default_factory=list)  # its keys' names in hive.yaml
    repository: str | None = None  # the repository the user is for, when known
    ended: list[int] = field(default_factory=list)  # pids signalled
    killed: list[int] = field(default_factory=list)  # pids that needed SIGKILL

    @property
    def pid(self) -> int:
        return self.processes[0].pid


# -- the pure part ---------------------------------------------------------------------


def auth_keys(text: str) -> frozenset[tuple[str, str]] | None:
    """The public keys an ExposeAuthInfo file names (sshd ends each line with "\n"; a
    line cut short is not read); None when it names none."""
    keys = set()
    for line in text.split("\n")[:-1]:
        words = line.split(" ")
        if len(words) >= 3 and words[0] == "publickey":
            keys.add((words[1], words[2]))
    return frozenset(keys) or None


def revoked(before: Collection[str], after: Collection[str]) -> list[str]:
    """The lines of `before` that `after` does not hold as they are."""
    kept = set(after)
    return [line for line in before if line not in kept]


def to_end(found: Iterable[Connection], gone: Collection[str]) -> list[Connection]:
    """The connections that logged in with a line now `gone` (revoked): a key's
    connection stays only while every line with that key is unchanged; one whose key is
    not known, or any connection when a line Hive did not write is gone, only while no
    line is."""
    if not gone:
        return []
    changed = {key_of(line) for line in gone}
    return [connection for connection in found
            if connection.keys is None or None in changed
            or any(key in changed for key in connection.keys)]


def key_names(lines: dict[str, str], keys: Collection[tuple[str, str]] | None) -> list[str]:
    """The names (key name -> line, as the plan holds a key file) of the lines of `keys`."""
    return sorted(name for name, line in lines.items() if keys and key_of(line) in keys)


# -- reading /proc -----------------------------------------------------------------------


def _process(pid: int) -> Process | None:
    """pid, parent, real uid and start time; None for a process that has exited."""
    try:
        with open(f"{PROC}/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
        with open(f"{PROC}/{pid}/status", "rb") as handle:
            status = handle.read()
    except OSError:
        return None
    # the name (field 2) is in parentheses and may hold anything: read after the last ")"
    fields = stat_line[stat_line.rfind(b")") + 2:].split()
    uid = next((line.split()[1] for line in status.split(b"\n")
                if line.startswith(b"Uid:")), None)
    if uid is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None  # (a zombie has exited: nothing to end, its pid is not yet free)
    name = stat_line[stat_line.find(b"(") + 1:stat_line.rfind(b")")]
    return Process(pid, int(fields[1]), int(uid), int(fields[19]), name)


def processes() -> dict[int, Process]:
    """Every process this host shows now."""
    found: dict[int, Process] = {}
    try:
        names = os.listdir(PROC)
    except OSError:
        return found
    for name in names:
        if name.isdigit():
            process = _process(int(name))
            if process is not None:
                found[process.pid] = process
    return found


def _environ(pid: int) -> list[bytes]:
    try:
        with open(f"{PROC}/{pid}/environ", "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return []


def _auth_file(pid: int, path: bytes, uid: int) -> str | None:
    """The ExposeAuthInfo file, read in the process's own view of the file system
    (/proc/PID/root: a private /tmp too); only a regular file of the session's user,
    not followed through a link."""
    if not path.startswith(b"/"):
        return None
    return read_small(f"{PROC}/{pid}/root{os.fsdecode(path)}", MAX_AUTH_FILE, owner=uid)


def connections(user: str, uids: Collection[int],
                table: dict[int, Process] | None = None) -> list[Connection]:
    """The open ssh connections of `user` (processes of one of `uids` below an sshd of
    that uid), each with its key."""
    table = processes() if table is None else table
    mine = {pid: p for pid, p in table.items() if p.uid in uids}
    groups: dict[int, list[Process]] = {}
    for process in mine.values():
        top, seen = process, {process.pid}
        while top.ppid in mine and top.ppid not in seen:
            top = mine[top.ppid]
            seen.add(top.pid)
        groups.setdefault(top.pid, []).append(process)
    found = []
    for top_pid, members in groups.items():
        if mine[top_pid].name != SSHD:
            continue
        members.sort(key=lambda p: (p.pid != top_pid, p.pid))
        connection = Connection(user, members)
        for process in members:
            for variable in _environ(process.pid):
                if variable.startswith(AUTH_VARIABLE) and connection.keys is None:
                    text = _auth_file(process.pid, variable[len(AUTH_VARIABLE):],
                                      process.uid)
                    connection.keys = auth_keys(text) if text is not None else None
                elif variable.startswith(CONNECTION_VARIABLE) and connection.client is None:
                    words = variable[len(CONNECTION_VARIABLE):].decode(errors="replace")
                    connection.client = " ".join(words.split(" ")[:2])
        found.append(connection)
    return found


# -- ending them ---------------------------------------------------------------------------


def end(ended: list[Connection], wait: float = END_WAIT, grace: float = GRACE) -> None:
    """End these connections in three steps:

    1. SIGTERM to each connection's top process (sshd's, for that connection): the
       connection closes, and the forced command sees its input end, which `borg serve`
       takes as the end of a session: it closes the repository and removes its lock.
       (A borg serve hit by SIGTERM itself exits without doing so.)
    2. After `grace` seconds (at most half of `wait`), SIGTERM to every process still
       there.
    3. After `wait` seconds in all, SIGKILL to every process still there.
    """
    handles: dict[int, tuple[int, Connection]] = {}
    try:
        for connection in ended:
            for process in connection.processes:
                fd = _open_same(process)
                if fd is not None:
                    handles[fd] = (process.pid, connection)
        poller = select.poll()
        for fd in handles:
            poller.register(fd, select.POLLIN)
        alive = set(handles)
        start = time.monotonic()
        for fd, (pid, connection) in handles.items():
            if pid == connection.pid and _signal(fd, signal.SIGTERM):
                connection.ended.append(pid)
        _wait_for_exits(poller, alive, start + min(grace, wait / 2))
        for fd in sorted(alive):
            pid, connection = handles[fd]
            if pid != connection.pid and _signal(fd, signal.SIGTERM):
                connection.ended.append(pid)
        _wait_for_exits(poller, alive, start + wait)
        for fd in alive:
            pid, connection = handles[fd]
            if _signal(fd, signal.SIGKILL):
                connection.killed.append(pid)
    finally:
        for fd in handles:
            os.close(fd)


def _wait_for_exits(poller: select.poll, alive: set[int], until: float) -> None:
    """Wait until every pidfd in `alive` reports its process gone (taking it out of
    `alive`), or until the monotonic time `until`."""
    while alive and (left := until - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            alive.discard(fd)
            poller.unregister(fd)


def _open_same(process: Process) -> int | None:
    """A pidfd of `process`, or None when that pid is now another process (or none)."""
    try:
        fd = os.pidfd_open(process.pid)
    except OSError:
        return None
    now = _process(process.pid)  # read after the pidfd is held: the pid cannot move on
    if now is None or (now.uid, now.start) != (process.uid, process.start):
        os.close(fd)
        return None
    return fd


def _signal(fd: int, signum: int) -> bool:
    try:
        signal.pidfd_send_signal(fd, signum)
    except ProcessLookupError:
        return False
    return True
