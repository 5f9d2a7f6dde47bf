"""Walk a whole tree that someone else controls: iteratively, with few descriptors.

A repository's user decides what its folder holds: a tree 3,000 levels deep makes
`os.walk` and `shutil.rmtree` (both recursive) end in RecursionError, and a walk that
keeps one descriptor per level open runs out of them (1,024 by default) and silently
skips what lies deeper. This walk keeps its own stack (no recursion), holds at most
`max_fds` directory descriptors (a level whose descriptor was closed is reopened from the
nearest open ancestor, name by name with O_NOFOLLOW, and must still be the same
directory), never follows a symlink, and counts what it could not read, so every caller
can say when it did not see everything.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from borgrepo import shown

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MAX_FDS = 32


@dataclass
class Level:
    """One folder on the walk's stack."""

    name: str                   # relative to the parent level ("" for the top)
    fd: int | None
    ident: tuple[int, int]      # (st_dev, st_ino): a reopened folder must be the same one
    pending: list[tuple[str, os.stat_result]] = field(default_factory=list)  # to visit
    stat: os.stat_result | None = None  # as seen from the parent (None for the top)


@dataclass
class Entry:
    """One name below the top, as `fstatat(dir_fd, name)` saw it (never followed)."""

    dir_fd: int
    name: str
    stat: os.stat_result
    depth: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.stat.st_mode)


class Walk:
    """Every entry below `top`, parents before children; `after_dir` runs once a folder's
    whole content has been visited (with the parent's fd: for removals and chowns).

    `unreadable` counts folders and entries that could not be read, `problems` keeps the
    first few reasons; both stay 0/empty when the walk saw everything.
    """

    def __init__(self, top: str | os.PathLike[str], max_fds: int = MAX_FDS) -> None:
        self.top = os.fspath(top)
        self.max_fds = max(2, max_fds)
        self.unreadable = 0
        self.problems: list[str] = []
        self.top_stat: os.stat_result | None = None
        self._open: deque[int] = deque()

    @property
    def complete(self) -> bool:
        return self.unreadable == 0

    def _problem(self, what: str) -> None:
        self.unreadable += 1
        if len(self.problems) < 5:
            self.problems.append(what)

    def entries(self, after_dir: Callable[[Entry], None] | None = None) -> Iterator[Entry]:
        try:
            fd = os.open(self.top, OPEN_DIR)
        except OSError as exc:
            self._problem(f"{self.top}: {exc.strerror}")
            return
        st = os.fstat(fd)
        self.top_stat = st
        stack = [Level("", fd, (st.st_dev, st.st_ino))]
        try:
            yield from self._read(stack, 0)
            while stack:
                level = stack[-1]
                if not level.pending:
                    stack.pop()
                    if level.fd is not None:
                        os.close(level.fd)
                        if self._open and self._open[-1] == len(stack):
                            self._open.pop()
                    if after_dir is not None and stack and level.stat is not None:
                        parent_fd = self._fd(stack, len(stack) - 1)
                        if parent_fd is not None:
                            after_dir(Entry(parent_fd, level.name, level.stat, len(stack)))
                    continue
                name, child_stat = level.pending.pop()
                parent_fd = self._fd(stack, len(stack) - 1)
                if parent_fd is None:
                    level.pending.clear()
                    continue
                try:
                    child = os.open(name, OPEN_DIR, dir_fd=parent_fd)
                except FileNotFoundError:  # removed since it was listed
                    continue
                except OSError as exc:
                    self._problem(f"{self._path(stack, name)}: {exc.strerror}")
                    continue
                cst = os.fstat(child)
                if (cst.st_dev, cst.st_ino) != (child_stat.st_dev, child_stat.st_ino):
                    os.close(child)  # removed and made again since the listing (borg's lock
                    continue         # folders): the new one is newer than the walk, as if gone
                stack.append(Level(name, child, (cst.st_dev, cst.st_ino), stat=child_stat))
                self._bound(stack, len(stack) - 1)
                yield from self._read(stack, len(stack) - 1)
        finally:
            for level in stack:
                if level.fd is not None:
                    os.close(level.fd)

    def _read(self, stack: list[Level], index: int) -> Iterator[Entry]:
        level = stack[index]
        fd = level.fd
        assert fd is not None
        subfolders: list[tuple[str, os.stat_result]] = []
        try:
            with os.scandir(fd) as found:
                for item in found:
                    try:
                        st = item.stat(follow_symlinks=False)  # fstatat(fd, name)
                    except FileNotFoundError:  # gone since the listing (borg's lock
                        continue               # folders come and go): nothing to see
                    except OSError:
                        self._problem(f"{self._path(stack, item.name)}: cannot stat")
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        subfolders.append((item.name, st))
                    yield Entry(fd, item.name, st, index + 1)
        except OSError as exc:
            self._problem(f"{self._path(stack, '')}: {exc.strerror}")
        level.pending = subfolders

    def _bound(self, stack: list[Level], opened: int) -> None:
        """stack[opened] just got a descriptor (it is the deepest open level): close the
        shallowest ones (never the top's) beyond max_fds. `self._open` lists the open
        levels below the top, shallowest first, so this costs O(1), not O(depth)."""
        self._open.append(opened)
        while len(self._open) >= self.max_fds:
            i = self._open.popleft()
            fd = stack[i].fd
            if fd is not None:
                os.close(fd)
                stack[i].fd = None

    def _fd(self, stack: list[Level], index: int) -> int | None:
        """The descriptor of stack[index], reopened from its nearest open ancestor. The
        levels on the way keep theirs (within max_fds), so walking back up a deep chain
        reopens each level about once per max_fds levels, not once per step."""
        if stack[index].fd is not None:
            return stack[index].fd
        base = index
        while stack[base].fd is None:
            base -= 1
        for i in range(base + 1, index + 1):
            parent = stack[i - 1].fd
            assert parent is not None
            fd: int | None = None
            try:
                opened = os.open(stack[i].name, OPEN_DIR, dir_fd=parent)
            except OSError as exc:
                reason = exc.strerror
            else:
                st = os.fstat(opened)
                reason = "changed during the walk"
                if (st.st_dev, st.st_ino) == stack[i].ident:
                    fd = opened
                else:
                    os.close(opened)
            if fd is None:
                self._problem(f"{self._path(stack[:i], stack[i].name)}: {reason}")
                for level in stack[i:index + 1]:
                    level.pending = []
                return None
            stack[i].fd = fd
            self._bound(stack, i)
        return stack[index].fd

    def _path(self, stack: list[Level], name: str) -> str:
        parts = [self.top, *(level.name for level in stack[1:]), name]
        path = shown(os.path.join(*[p for p in parts if p]))
        return path if len(path) <= 200 else f"{path[:90]}...{path[-90:]}"


@dataclass
class Usage:
    size_bytes: int = 0   # allocated blocks, as du counts them
    apparent_bytes: int = 0
    files: int = 0
    dirs: int = 0
    unreadable: int = 0   # folders or entries that could not be read
    problems: list[str] = field(default_factory=list)


def usage(path: str | os.PathLike[str], max_fds: int = MAX_FDS) -> Usage:
    """What `du -s` counts below `path` (the top included), hard links once."""
    result = Usage()
    walk = Walk(path, max_fds)
    seen: set[tuple[int, int]] = set()
    blocks = apparent = files = dirs = 0
    for entry in walk.entries():
        st = entry.stat
        if stat.S_ISDIR(st.st_mode):  # (btrfs folders have one link: test this first)
            dirs += 1
        elif st.st_nlink > 1:
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            files += 1
        else:
            files += 1
        blocks += st.st_blocks
        apparent += st.st_size
    if walk.top_stat is not None:
        blocks += walk.top_stat.st_blocks
        dirs += 1
    result.size_bytes, result.apparent_bytes = blocks * 512, apparent
    result.files, result.dirs = files, dirs
    result.unreadable, result.problems = walk.unreadable, walk.problems
    return result


def chown_tree(path: str | os.PathLike[str], old_uid: int, uid: int, gid: int) -> None:
    """Give the new owner everything the old uid owned below `path`, never following links.

    Raises OSError when part of the tree could not be reached: the caller must then leave
    the folder itself as it is, so the plan still shows the change."""
    walk = Walk(path)
    for entry in walk.entries():
        if entry.stat.st_uid == old_uid:
            os.chown(entry.name, uid, gid, dir_fd=entry.dir_fd, follow_symlinks=False)
    if not walk.complete:
        raise OSError(f"could not give all of {os.fspath(path)} its new owner: "
                      + "; ".join(walk.problems))


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete the tree at `path` (not following symlinks out of it), then `path` itself.

    Raises OSError, having removed what it could, when something could not be removed."""
    walk = Walk(path)
    failures: list[str] = []

    def remove_dir(entry: Entry) -> None:
        try:
            os.rmdir(entry.name, dir_fd=entry.dir_fd)
        except OSError as exc:
            failures.append(f"{shown(entry.name)}: {exc.strerror}")

    for entry in walk.entries(after_dir=remove_dir):
        if not entry.is_dir:
            try:
                os.unlink(entry.name, dir_fd=entry.dir_fd)
            except OSError as exc:
                failures.append(f"{shown(entry.name)}: {exc.strerror}")
    if walk.problems or failures:
        raise OSError(f"could not remove all of {os.fspath(path)}: "
                      + "; ".join((walk.problems + failures)[:5]))
    os.rmdir(path)
