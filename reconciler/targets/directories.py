"""Repository directories: `<repos_root>/<user>/<repo>` with the right owners and modes.

repos_root and each user's folder are root-owned (a user cannot rename its own repository
folder away or plant a symlink beside it); only the repository folder belongs to the user.
Nothing here follows a symlink, and a folder is only ever removed with rmdir, which
refuses a folder that still holds anything: data cannot be lost through this module.
"""

from __future__ import annotations

import os
import stat
from itertools import islice
from typing import Any

from reconciler import treewalk
from reconciler.desired import paths_to_observe
from reconciler.inventory import Inventory
from reconciler.resources import UNKNOWN, Change, Facts
from reconciler.targets import Kind, Result, Style, apply_each, attribute_lines
from schemas.models import HiveConfig

_TYPES = {stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink", stat.S_IFREG: "file"}


_MODES: dict[int, str] = {}  # st_mode -> "0750": a handful of values, formatted once


def observe_path(path: str, content: bool = True) -> Any:
    """{type, uid, gid, mode, children} for one path; None if absent; UNKNOWN if unreadable.

    `children` (the first two names, enough to tell "empty or not") only with `content`:
    listing a folder costs four times its lstat, and the plan reads few (desired.py's
    paths_to_observe)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except PermissionError:
        return UNKNOWN
    st_mode = st.st_mode
    mode = _MODES.get(st_mode)
    if mode is None:
        mode = _MODES[st_mode] = f"{stat.S_IMODE(st_mode):04o}"
    kind = _TYPES.get(stat.S_IFMT(st_mode), "special file")
    if not content:
        return {"type": kind, "uid": st.st_uid, "gid": st.st_gid, "mode": mode}
    children: tuple[str, ...] = ()
    if kind == "directory":
        try:
            with os.scandir(path) as entries:
                children = tuple(e.name for e in islice(entries, 2))
        except PermissionError:
            return UNKNOWN
    return {"type": kind, "uid": st.st_uid, "gid": st.st_gid, "mode": mode,
            "children": children}


def _set_owner_mode(path: str, uid: int, gid: int, mode: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


class Directories:
    kind = "directory"

    def __init__(self, config: HiveConfig) -> None:
        self.config = config

    def observe(self, facts: Facts, inventory: Inventory) -> None:
        unreadable = []
        paths, contents = paths_to_observe(self.config, inventory)
        for path in paths:
            state = observe_path(path, path in contents)
            if state is not None:
                facts.directories[path] = state
            if state is UNKNOWN:
                unreadable.append(path)
        if unreadable:
            facts.warnings.append(f"cannot read {len(unreadable)} repository folders as this "
                                  f"user (e.g. {min(unreadable)}): they are not compared "
                                  "(run as root)")

    def apply(self, changes: list[Change]) -> list[Result]:
        # Without a umask mkdir gives a new folder its exact mode, so a create is mkdir and
        # lchown (two system calls, not five: 100,000 folders on a first apply).
        self._umask = os.umask(0)
        self._setgid: dict[str, bool] = {}  # folder -> new folders in it inherit S_ISGID
        try:
            return apply_each(changes, self._apply_one, OSError)
        finally:
            os.umask(self._umask)

    def _inherits_setgid(self, parent: str) -> bool:
        known = self._setgid.get(parent)
        if known is None:
            known = self._setgid[parent] = bool(os.lstat(parent).st_mode & stat.S_ISGID)
        return known

    def _create(self, path: str, uid: int, gid: int, mode: int) -> None:
        """mkdir with the final mode, owned by root until the lchown: never more open than
        that mode, and a repository folder (0700) is closed until it has its owner. Under
        a set-group-ID parent the folder inherits S_ISGID, which the final mode clears."""
        try:
            os.mkdir(path, mode)
        except FileNotFoundError:  # parents come first in a plan; this is for the rest
            os.umask(self._umask)  # missing parents as before: 0777 minus the umask
            try:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            finally:
                os.umask(0)
            os.mkdir(path, mode)
        if self._inherits_setgid(os.path.dirname(path)):
            _set_owner_mode(path, uid, gid, mode)
            self._setgid[path] = False
            return
        os.chown(path, uid, gid, follow_symlinks=False)
        self._setgid[path] = bool(mode & stat.S_ISGID)

    def _apply_one(self, change: Change) -> None:
        path = change.name
        if change.action == "delete":
            os.rmdir(path)  # refuses a folder that is not empty, by design
            return
        after = change.after or {}
        if change.action == "create":
            self._create(path, after["uid"], after["gid"], int(after["mode"], 8))
            return
        st = os.lstat(path)
        uid = after.get("uid", st.st_uid)
        gid = after.get("gid", st.st_gid)
        mode = int(after.get("mode", f"{stat.S_IMODE(st.st_mode):o}"), 8)
        old_uid = (change.before or {}).get("uid")
        if change.meta.get("role") == "repository" and old_uid is not None and old_uid != uid:
            # Contents first, the folder itself last: until the folder has its new owner the
            # plan still shows this change, so an apply killed half-way finishes it next time.
            treewalk.chown_tree(path, old_uid, uid, gid)
        _set_owner_mode(path, uid, gid, mode)


def render(change: Change, style: Style) -> list[str]:
    """A new folder in one line (owner and mode); a changed one attribute by attribute."""
    if change.action == "create":
        after = change.after or {}
        return [f"      owner: {after['uid']}:{after['gid']}  mode: {after['mode']}"]
    return attribute_lines(change)


def refuse(name: str, seen: Any) -> str | None:
    """Something else where a folder belongs: never replaced, never followed."""
    if seen.get("type") != "directory":
        return (f"{name} exists but is a {seen.get('type')}, not a directory; Hive will not "
                "replace or follow it. Move it away")
    return None


def forget(inventory: Inventory, name: str) -> None:
    inventory.directories.discard(name)


KIND = Kind("directory", Directories, render=render, nested=True, refuse=refuse,
            forget=forget)
