"""Parsed YAML kept by the hash of its bytes, so an unchanged file is not parsed again.

Even the fast builder (schemas/fastyaml.py) needs ~1.3 s for a 23 MB hive.yaml (50,000
repositories, 100,000 keys) and PyYAML's own path 12 s; reading the entry back takes a
third of a second. What the parser makes of a file depends only on the file's bytes and
on the parser's own code, so the result is
stored under sha256(parser code + bytes): a changed file, a changed parser or another
PyYAML has another key, and a stale result cannot be served. Only the parse is cached;
validation (pydantic, whole-file checks) runs every time, so no rule can be skipped, and
when a problem needs a position it is found in the same text again.

Stored as JSON (nothing in the cache can run code), written atomically, in a folder only
this user can write (`HIVE_CACHE_DIR`, else `$XDG_CACHE_HOME/hive` or `~/.cache/hive`;
`HIVE_CACHE_DIR=` turns it off). Anything odd -- a folder others may write, a file that
does not decode, data JSON cannot hold exactly (int or bool keys, binary) -- means no
cache, never a wrong one. With several included files each file has its own entry, so
editing one team's file parses only that file. A large entry is written by a forked child
(BACKGROUND_BYTES) while the command goes on.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import secrets
import signal
import stat
from pathlib import Path
from typing import Any

import yaml

MISS = object()
KEEP = 400   # entries kept; the oldest beyond that are removed when one is written


def _code_key() -> bytes:
    digest = hashlib.sha256(f"yaml {yaml.__version__} {yaml.__with_libyaml__}".encode())
    here = Path(__file__).resolve().parent
    for name in ("yamlsource.py", "fastyaml.py", "yamllimits.py", "parsecache.py"):
        digest.update((here / name).read_bytes())
    return digest.digest()


_CODE: bytes | None = None


def _configured() -> Path | None:
    """The cache folder the environment names (made or not), None when turned off."""
    given = os.environ.get("HIVE_CACHE_DIR")
    if given == "":
        return None
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".cache")
    return Path(base) / "hive" / "yaml"


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40
_ENTRY = re.compile("[0-9a-f]{64}")   # what _key names an entry; nothing else is removed


def _trusted(info: os.stat_result, last: bool) -> bool:
    """A folder (or link) on the way that only root and this user can change; the cache
    folder itself this user's alone. Others may write a folder with the sticky bit (/tmp),
    but not rename or remove what root or this user made in it."""
    user = os.geteuid()
    if last:
        return info.st_uid == user and not stat.S_IMODE(info.st_mode) & 0o022
    return info.st_uid in (0, user) and (not stat.S_IMODE(info.st_mode) & 0o022
                                         or bool(info.st_mode & stat.S_ISVTX))


def _open() -> int | None:
    """A descriptor of the cache folder, made if needed; None when there is none this
    user alone can change. Every entry is then read and written through the descriptor:
    a path checked and then used again could lead elsewhere a moment later, when anyone
    but root and this user may change a folder or link on the way (`XDG_CACHE_HOME` in a
    CI workspace, a home reached through `sudo -E`) -- to a folder holding a parse they
    wrote, or to /usr/bin, whose oldest files trimming would remove. So the path is walked
    from / one folder at a time without following links, and a link is followed only when
    root or this user made it in such a folder."""
    where = _configured()
    if where is None:
        return None
    todo = [part for part in os.path.abspath(where).split("/") if part]
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    try:
        if not _trusted(os.fstat(fd), not todo):
            raise PermissionError
        while todo:
            name = todo.pop(0)
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                os.mkdir(name, 0o700, dir_fd=fd)
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISLNK(info.st_mode):
                links += 1
                if links > _MAX_LINKS or info.st_uid not in (0, os.geteuid()):
                    raise PermissionError
                target = os.readlink(name, dir_fd=fd)
                todo[:0] = [part for part in target.split("/") if part]
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                continue
            inner = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = inner
            if not _trusted(os.fstat(fd), not todo):
                raise PermissionError   # someone else could plant a parse or a link
    except OSError:
        os.close(fd)
        return None
    return fd


def _key(text: str) -> str:
    global _CODE
    if _CODE is None:
        _CODE = _code_key()
    return hashlib.sha256(_CODE + text.encode("utf-8", "surrogatepass")).hexdigest()


class _Unsupported(Exception):
    pass


_LEAVES = (str, int, float, bool, type(None))


def _dates(data: Any, path: list[Any], found: list[list[Any]]) -> None:
    """Record where dates are (JSON has none); refuse what JSON cannot hold exactly.
    Strings (nearly every value) are passed over without a call: this walks 700,000 values
    of a 50,000-repository file."""
    kind = type(data)
    if kind is dict:
        for key in data:
            if type(key) is not str:
                raise _Unsupported
        items: Any = data.items()
    elif kind is list:
        items = enumerate(data)
    else:
        _leaf(data, path, found)
        return
    for key, value in items:
        kind = type(value)
        if kind is str:
            continue
        if kind is dict or kind is list:
            _dates(value, [*path, key], found)
        else:
            _leaf(value, [*path, key], found)


def _leaf(value: Any, path: list[Any], found: list[list[Any]]) -> None:
    kind = type(value)
    if kind is dt.datetime:
        found.append([path, "datetime", value.isoformat()])
    elif kind is dt.date:
        found.append([path, "date", value.isoformat()])
    elif kind not in _LEAVES:
        raise _Unsupported


def get(text: str) -> Any:
    """The cached parse of `text`, or MISS."""
    where = _open()
    if where is None:
        return MISS
    try:
        handle = os.open(_key(text), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=where)
    except OSError:
        return MISS
    finally:
        os.close(where)
    try:
        with os.fdopen(handle, "rb") as source:
            info = os.fstat(source.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                return MISS
            entry = json.loads(source.read())
        data = entry["data"]
        for path, kind, value in entry["dates"]:
            holder = data
            for step in path[:-1]:
                holder = holder[step]
            parse = dt.datetime if kind == "datetime" else dt.date
            holder[path[-1]] = parse.fromisoformat(value)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return MISS
    return data


# A text this large is written by a forked child while this process goes on validating:
# at 50,000 repositories finding the dates and writing 23 MB of JSON takes half a second,
# which the other core can spend; the command waits for it before it exits. Smaller
# files (and every test but two) write in line.
BACKGROUND_BYTES = 4 * 2**20
_writers: list[int] = []   # children writing entries, reaped by the next put or at exit


def put(text: str, data: Any) -> None:
    """Store the parse of `text` when JSON can hold it exactly; never fails the caller."""
    if _configured() is None:
        return
    if len(text) >= BACKGROUND_BYTES:
        child = _fork()
        if child is True:
            try:
                _write(text, data)
            finally:
                os._exit(0)   # no atexit handlers, no flushing of the parent's buffers
        if child is False:
            return
    _write(text, data)


def _fork() -> bool | None:
    """Fork a child to write the entry: True in the child, False in the parent; None when
    there is no child (the fork failed, or another thread -- DuckDB's, say -- could hold
    a lock the child would need) and the caller writes it itself."""
    settle(wait=False)
    try:
        alone = len(os.listdir("/proc/self/task")) == 1
    except OSError:
        alone = False
    if not alone:
        return None
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        if not _writers:
            # The command ends when its writers have: no process outlives `hive` (a CI
            # job, a test's folder or a timer's cgroup would otherwise meet a half-written
            # entry). They run beside validation on the other core: the wait is rarely felt.
            atexit.register(settle)
        _writers.append(pid)
        return False
    _writers.clear()
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the command, not for this
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):   # nobody reading the command's output waits for this child
        os.dup2(null, fd)
    # nor for any other file the command holds: a lock (flock) lasts while a copy of its
    # descriptor is open, and this child must not keep one a moment longer
    os.closerange(3, _open_max())
    return True


def _open_max() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 1 << 20


def settle(wait: bool = True) -> None:
    """Reap the children writing entries (waiting for them to finish with `wait`)."""
    for pid in list(_writers):
        try:
            done, _ = os.waitpid(pid, 0 if wait else os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _writers.remove(pid)


def _write(text: str, data: Any) -> None:
    found: list[list[Any]] = []
    try:
        _dates(data, [], found)
        payload = json.dumps({"data": data, "dates": found}, ensure_ascii=False,
                             check_circular=False, separators=(",", ":"),
                             allow_nan=False, default=_refuse).encode("utf-8")
    except (_Unsupported, ValueError, RecursionError, TypeError):
        return
    where = _open()
    if where is None:
        return
    tmp = f".tmp-{secrets.token_hex(8)}"
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600, dir_fd=where)
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(payload)
            os.replace(tmp, _key(text), src_dir_fd=where, dst_dir_fd=where)
        except OSError:
            os.unlink(tmp, dir_fd=where)
            raise
        _trim(where)
    except OSError:
        return
    finally:
        os.close(where)


def _refuse(value: Any) -> Any:
    """JSON's fallback: dates as text (their places are in "dates"), nothing else."""
    if type(value) in (dt.date, dt.datetime):
        return value.isoformat()
    raise _Unsupported


def _trim(where: int) -> None:
    """Keep the newest KEEP entries; only files named as _key names them are counted or
    removed, whatever else the folder holds."""
    with os.scandir(where) as found:
        entries = [(entry.stat(follow_symlinks=False).st_mtime, entry.name)
                   for entry in found if _ENTRY.fullmatch(entry.name)
                   and entry.is_file(follow_symlinks=False)]
    if len(entries) <= KEEP:
        return
    entries.sort()
    for _, name in entries[:len(entries) - KEEP]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=where)
