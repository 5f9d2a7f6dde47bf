"""`include:`: the desired state split over several files, one folder.

Big fleets are edited by several teams; one file per team gives each its own review rule
(CODEOWNERS) and no merge conflicts. The main file keeps `server:` (what Hive may touch on
this host); included files only add names to `owners`, `groups`, `keys` and `repositories`.

Patterns are globs relative to the main file's folder and must stay inside it (no absolute
paths, no `..`, no symlink out): the folder is what is reviewed and committed, and
`plan --server-from` of a proposal must not read files from elsewhere on the server.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

SECTIONS = ("owners", "groups", "keys", "repositories")
SINGULAR = {"owners": "owner", "groups": "group", "keys": "key",
            "repositories": "repository"}


@dataclass(frozen=True)
class Match:
    """A file an `include:` pattern found: its path and the name errors give it."""

    path: Path
    label: str   # as the user would write it: the main file's folder as given + relative


def pattern_problem(pattern: str) -> str | None:
    """Why `pattern` may not be used, or None."""
    if not pattern.strip():
        return "empty pattern; give a glob such as 'teams/*.yaml'"
    parts = PurePosixPath(pattern).parts
    if pattern.startswith(("/", "~")) or ".." in parts:
        return (f"{pattern!r} leaves the main file's folder; include paths are relative "
                "to it and stay inside it, such as 'teams/*.yaml'")
    return None


@dataclass
class Looks:
    """The names left to look at, for all the patterns of one file together; a folder
    listed once is not listed (nor charged) again for the next pattern."""

    left: int = field(default_factory=lambda: MAX_LOOKS)
    listed: dict[Path, list[os.DirEntry[str]]] = field(default_factory=dict)


def expand(pattern: str, main: Path, label_dir: str,
           looks: Looks | None = None) -> tuple[list[Match], str | None]:
    """The files `pattern` matches (sorted, the main file left out) or a problem."""
    why = pattern_problem(pattern)
    if why:
        return [], why
    folder = main.resolve().parent
    try:
        paths = _glob(folder, PurePosixPath(pattern).parts, looks or Looks())
    except _TooMany:
        return [], (f"{pattern!r} makes Hive look at more than {MAX_LOOKS:,} names in "
                    f"{folder}, with the patterns before it (a deep tree, several '**', "
                    "folders linked to their parents, many patterns); give narrower "
                    "patterns, such as 'teams/*.yaml'")
    except _TooDeep:
        return [], (f"{pattern!r} leads through folders nested more than {MAX_DEPTH} deep "
                    f"in {folder}; give a narrower pattern, such as 'teams/*.yaml'")
    found: list[Match] = []
    main_file = main.resolve()
    for path in paths:
        if not path.is_file():
            continue
        real = path.resolve()
        if real == main_file:
            continue
        if not real.is_relative_to(folder):
            return [], (f"{pattern!r} reaches {path.relative_to(folder)}, a link that leaves "
                        "the main file's folder; include only files inside it")
        relative = path.relative_to(folder).as_posix()
        if not relative.isprintable():  # its name is printed in problems: no forged lines
            return [], (f"{pattern!r} matches {relative!r}, a name with a control "
                        "character (a newline?); rename the file")
        found.append(Match(path, f"{label_dir}/{relative}" if label_dir else relative))
    if not found:
        return [], (f"{pattern!r} matches no file in {folder}; fix the pattern or remove "
                    "it (an include that finds nothing is an error, not an empty team)")
    return found, None


# A pattern is matched by looking at names one folder at a time; `**/**/**/x.yaml` over a
# chain of 200 nested folders (a pull request's tree), or `*/*/*/*` through folders linked
# to their parents, would look at billions. Teams' files are hundreds of names.
MAX_LOOKS = 200_000
# Included files, all patterns together: teams are hundreds; each file costs an open, a
# parse and a cache lookup.
MAX_FILES = 10_000
# Folders below the main file's a pattern may lead through: the walk recurses per folder,
# and a chain of 1,500 (well within PATH_MAX) ran Python's recursion out.
MAX_DEPTH = 256


class _TooMany(Exception):
    pass


class _TooDeep(Exception):
    pass


def _glob(folder: Path, parts: tuple[str, ...], looks: Looks) -> list[Path]:
    """What Path.glob(pattern) finds, sorted, but giving up (_TooMany) once `looks` is
    spent: pathlib's own glob has no bound. As pathlib: `*` matches names starting with
    '.', `**` is the folder and every folder below it (links to folders not followed),
    other parts follow links (where they lead is checked by the caller)."""
    found: set[Path] = set()

    def names(where: Path) -> list[os.DirEntry[str]]:
        entries = looks.listed.get(where)
        if entries is not None:
            return entries
        try:
            with os.scandir(where) as listing:
                entries = list(listing)
        except OSError:
            return []
        looks.left -= len(entries) + 1
        if looks.left < 0:
            raise _TooMany
        looks.listed[where] = entries
        return entries

    def walk(where: Path, i: int, depth: int = 0) -> None:
        if depth > MAX_DEPTH:
            raise _TooDeep
        if i == len(parts):
            found.add(where)
            return
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            walk(where, i + 1, depth)
            for entry in names(where):
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), i, depth + 1)
            return
        if not glob.has_magic(part):
            looks.left -= 1
            if looks.left < 0:
                raise _TooMany
            step = where / part
            if step.is_dir() or (last and step.exists()):
                walk(step, i + 1, depth + 1)
            return
        match = re.compile(fnmatch.translate(part)).match
        for entry in names(where):
            if match(entry.name) and (last or entry.is_dir()):
                walk(Path(entry.path), i + 1, depth + 1)

    walk(folder, 0)
    return sorted(found)


def section_problem(key: Any, value: Any) -> str | None:
    """Why an included file may not hold this top-level entry, or None."""
    if isinstance(key, str) and key.startswith("x-"):
        return None   # YAML anchors, as in the main file
    if key in SECTIONS:
        if value is not None and not isinstance(value, dict):
            return f"'{key}' must be a mapping of names, as in the main file"
        return None
    if key in ("server", "version", "include"):
        return (f"'{key}' may only be in the main file; an included file holds "
                f"{', '.join(SECTIONS)}")
    return f"unknown section {key!r}; an included file holds {', '.join(SECTIONS)}"
