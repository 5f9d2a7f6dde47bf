"""The audit trail: every apply appends what it did to `<state_dir>/journal.jsonl`.

One JSON object per line: a `start` record (time, host, who, the file and its git commit),
one `change` record per action with its result, and a `finish` record. Each batch of
records is appended and fsynced as it happens, so a killed apply still shows how far it
got. With the git history of hive.yaml this answers "who changed what, when".
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

FILE_NAME = "journal.jsonl"


def who() -> str:
    """The person behind the run: sudo's caller, a CI actor, else the unix user."""
    for var in ("SUDO_USER", "GITHUB_ACTOR", "GITLAB_USER_LOGIN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.geteuid())


def git_commit(config_file: Path, files: tuple[str, ...] = ()) -> str | None:
    """The commit of hive.yaml when it sits in a git checkout, '+dirty' if it or any file
    it includes (`files`) was edited since."""
    folder = config_file.resolve().parent
    paths = [str(Path(f).resolve()) for f in files] or [config_file.name]
    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--",
                                *paths], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + ("+dirty" if dirty.stdout.strip() else "")


class Journal:
    def __init__(self, state_dir: Path, host: str) -> None:
        self.path = state_dir / FILE_NAME
        self.host = host
        self.run = uuid.uuid4().hex[:12]

    @staticmethod
    def now() -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds")

    def record(self, record_type: str, time: str | None = None,
               **fields: Any) -> dict[str, Any]:
        return {"time": time or self.now(), "host": self.host, "run": self.run,
                "type": record_type, **fields}

    def write(self, *records: dict[str, Any]) -> None:
        """Append records with one fsync (a batch of changes costs one)."""
        self.write_all(records)

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records, a few thousand per write (a batch of 100,000 changes is not
        held as one string), then fsync once."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o644)
        try:
            for chunk in batched(records, 2048):
                data = memoryview("".join(json.dumps(r) + "\n" for r in chunk).encode())
                while data:
                    data = data[os.write(fd, data):]
            os.fsync(fd)
        finally:
            os.close(fd)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of `size` items (the last one shorter): itertools.batched before 3.12."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def read(state_dir: Path) -> Iterator[dict[str, Any]]:
    """All records, oldest first; a torn last line (crash mid-write) is skipped."""
    try:
        with open(state_dir / FILE_NAME, encoding="utf-8") as handle:
            for line in handle:
                try:
                    yield json.loads(line)
                except ValueError:
                    continue
    except FileNotFoundError:
        return
