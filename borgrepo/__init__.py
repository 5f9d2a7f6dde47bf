"""borg's on-disk format, as far as the server reads it: repository layouts (1.x and 2,
`layout.py`), a borg 1.x `config` (its id, append-only flag and repokey, `config.py`),
locks and their holders (`locks.py`), the transactions log and the index, hints and
segment files of a rollback (`transactions.py`), segment entry headers (`segments.py`)
and borg 2's `archives/` entries (`archives.py`). Used by the watcher, `hive stats`,
`hive status` and `hive rollback`.

Everything here reads files a repository's user controls, possibly as root: bounded
reads, no symlinks followed, no blocking on FIFOs, every number range-checked where it is
parsed.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class RepositoryError(Exception):
    """The repository's files cannot be read or used as borg's; the message says why."""


class RepositoryBusy(RepositoryError):
    """A borg client holds the repository's lock."""


def shown(name: str) -> str:
    """A name the repository's user chose, as safe text for a terminal, a log line or a
    DuckDB row: every character Python does not call printable (escape sequences, newlines
    that would forge a line, bytes that are not UTF-8) is written as its escape, \\x1b."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


LOG_LIMIT = 64 << 20  # ~1.4 million commits of transactions log


def read_regular(path: Path, limit: int = LOG_LIMIT) -> str | None:
    """A small file's text, or None: never through a symlink, never blocking on a FIFO.
    (The repository's user controls these files; the caller may be root.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RepositoryError(f"{path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise RepositoryError(f"{path} is not a regular file")
        if st.st_size > limit:
            raise RepositoryError(f"{path} is {st.st_size} bytes, more than borg writes there "
                                f"(at most {limit} read)")
        return os.read(fd, limit).decode("utf-8", errors="replace")
    finally:
        os.close(fd)
