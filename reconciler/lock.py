"""One apply at a time: an flock on `<state_dir>/apply.lock`, which names its holder.

flock is released by the kernel when the holder dies (kill -9 included), so a stale lock
can never block the next apply; the holder's text is only there to tell a person who it is.
"""

from __future__ import annotations

import fcntl
import getpass
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

FILE_NAME = "apply.lock"


class LockBusy(Exception):
    pass


def flock_within(fd: int, timeout: float, poll: float = 0.05) -> bool:
    """Take an exclusive flock on `fd`, trying until `timeout` seconds have passed; False if
    it never came free. Polling (not a blocking flock) keeps the wait bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)


@contextmanager
def apply_lock(state_dir: Path, timeout: float) -> Iterator[None]:
    path = state_dir / FILE_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        # Root's alone: flock needs no write permission, so a lock file others may open
        # is one any local user can hold for ever, and no apply (no key revocation)
        # would run. A lock left 0644 by an older Hive is closed here.
        os.fchmod(fd, 0o600)
        if not flock_within(fd, timeout, poll=0.1):
            holder = Path(path).read_text(encoding="utf-8", errors="replace").strip()
            raise LockBusy(f"another hive apply is running ({holder or 'holder unknown'}"
                           f"); waited {timeout:g}s for {path}. Try again when it has "
                           "finished")
        os.ftruncate(fd, 0)
        since = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()}, {getpass.getuser()}@{socket.gethostname()}, "
                      f"since {since}\n".encode(), 0)
        yield
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
