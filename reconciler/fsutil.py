"""Small filesystem helpers shared by the targets: sshd must never see half a file."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

# atomic_write's temporary files: `.<name>.<8 characters of tempfile's alphabet>.tmp`.
# Cleaning matches exactly this, so it can never take a file that is not Hive's own.
_TEMP_PREFIX, _TEMP_SUFFIX = ".{}.", ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


def atomic_write(path: Path, content: str, mode: int = 0o644, uid: int = 0,
                 gid: int = 0) -> None:
    """Write a file so readers see the old content or the new, never a mix.

    A temporary file in the same directory is written, fsynced, given its owner and mode,
    then renamed over the target; the directory is fsynced so the rename survives a crash.
    """
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX.format(path.name), suffix=_TEMP_SUFFIX,
                               dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            if os.geteuid() == 0:
                os.fchown(handle.fileno(), uid, gid)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path, names: Iterable[str] | None = None) -> None:
    """Remove the temporary files an interrupted atomic_write left in `directory`.

    Only `.<name>.XXXXXXXX.tmp` regular files, and with `names` only those of these target
    files: a shared folder such as /var/lib/extrausers may hold other tools' files. Call it
    under the apply lock, where no atomic_write of the same files can be running.
    """
    wanted = None if names is None else set(names)
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and (wanted is None or match["name"] in wanted) \
                and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
