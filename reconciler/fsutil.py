"""Small filesystem helpers shared by the targets: sshd must never see half a file."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import re
import stat
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

# atomic_write's temporary files: `.<name>.<8 characters of tempfile's alphabet>.tmp`.
# Cleaning matches exactly this, so it can never take a file that is not Hive's own.
_TEMP_PREFIX, _TEMP_SUFFIX = ".{}.", ".tmp"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")
_TEMP_LETTERS = "abcdefghijklmnopqrstuvwxyz0123456789_"  # tempfile's alphabet
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def others_may_change(info: os.stat_result) -> bool:
    """True unless only root may change the file or folder `info` describes (root's,
    not group- or world-writable): what root reads to decide what it may touch."""
    return info.st_uid != 0 or bool(info.st_mode & 0o022)


def untrusted(where: Path | str, info: os.stat_result) -> str | None:
    """Why root must not trust `where` (others_may_change), as the start of an error
    message; None when only root may change it."""
    if not others_may_change(info):
        return None
    return (f"{where} may be changed by users other than root (owner uid {info.st_uid}, "
            f"mode {stat.S_IMODE(info.st_mode):04o}): chown root and chmod go-w it")


def untrusted_state_dir(state_dir: Path) -> str | None:
    """As root, why the state_dir must not be used (None when not root, when it does not
    exist yet, or when only root may change it). Everything in it is opened by root: a
    link another user planted there would make root truncate, append to or create any
    file (apply's lock and journal, the watcher's and stats' lock, the key copies)."""
    if os.geteuid() != 0:
        return None
    try:
        info = os.stat(state_dir)
    except FileNotFoundError:
        return None
    return untrusted(state_dir, info)


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


def replace_files(directory: Path, contents: Sequence[tuple[str, str | None]],
                  mode: int = 0o644) -> tuple[int, OSError | None]:
    """Replace many files of one folder, each atomically, with one sync for them all.

    `contents` lists (file name, new content), or (file name, None) to remove the file; they
    are done in that order. Every new content goes to a temporary file first (named as
    atomic_write names them, root-owned, `mode`), then one syncfs(2) puts all of them on
    disk, then each is renamed over its file (or the file is removed), then one fsync of
    the folder makes the renames durable. A crash at any point leaves each file with its
    old content or its new one, never a mix or nothing; once this returns, every done
    change survives a crash. One sync instead of two fsyncs per file is what makes 50,000
    key files take seconds rather than minutes.

    Returns how many of `contents` were done (a prefix) and the error that stopped the
    rest (None when all were done); temporaries of the ones not done are removed.
    """
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    temporaries: list[str | None] = []
    error: OSError | None = None
    done = 0
    try:
        for name, content in contents:
            if content is None:
                temporaries.append(None)
                continue
            try:
                temporaries.append(_write_temporary(dir_fd, name, content, mode))
            except OSError as exc:
                error = exc
                break
        ready = len(temporaries)
        try:
            if any(t is not None for t in temporaries):
                syncfs(dir_fd)  # every new content on disk before any rename shows it
        except OSError as exc:
            error, ready = exc, 0
        for (name, _), temporary in zip(contents[:ready], temporaries[:ready], strict=True):
            try:
                if temporary is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=dir_fd)
                else:
                    os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError as exc:
                error = exc
                break
            done += 1
        if done:
            try:
                os.fsync(dir_fd)
            except OSError as exc:  # the renames may not survive a crash: none counts
                error, done = exc, 0
    finally:
        for temporary in temporaries[done:]:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary, dir_fd=dir_fd)
        os.close(dir_fd)
    return done, error


def _write_temporary(dir_fd: int, name: str, content: str, mode: int) -> str:
    """A new `.<name>.XXXXXXXX.tmp` in the folder holding `content`; its name."""
    data = content.encode()
    for _ in range(100):
        temporary = f".{name}.{''.join(random.choices(_TEMP_LETTERS, k=8))}.tmp"
        try:
            fd = os.open(temporary, _CREATE, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    else:
        raise FileExistsError(f"no free temporary name for {name}")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
    except BaseException:
        os.close(fd)
        os.unlink(temporary, dir_fd=dir_fd)
        raise
    os.close(fd)
    return temporary


_libc: ctypes.CDLL | None = None


def syncfs(fd: int) -> None:
    """syncfs(2): write out and flush everything dirty on the filesystem holding `fd`
    (os.sync, every filesystem, where libc has no syncfs)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(_libc, "syncfs", None)
    if function is None:
        os.sync()
        return
    if function(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


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
