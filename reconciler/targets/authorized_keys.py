"""The authorized-keys cache: `<state_dir>/authorized_keys/<user>`, what sshd reads per login.

sshd reads these with `AuthorizedKeysFile <state_dir>/authorized_keys/%u` and starts no
process, or through `hive authorized-keys %u`, which only cats the file. Files are root-owned
and world-readable (StrictModes), written atomically, and the whole folder is Hive's: a file
for a user with no access is removed.
"""

from __future__ import annotations

import os
from pathlib import Path

from reconciler import keylines
from reconciler.fsutil import remove_stale_temporaries, replace_files
from reconciler.inventory import Inventory
from reconciler.resources import Change, Facts
from reconciler.targets import Kind, Result, Style
from schemas.models import HiveConfig

CACHE_DIR = "authorized_keys"
#: What the plan shows for a symlink in the cache folder (no key can have this name).
SYMLINK = "(a symlink, which sshd follows)"


def cache_dir(state_dir: Path) -> Path:
    return state_dir / CACHE_DIR


class AuthorizedKeys:
    kind = "authorized_keys"

    def __init__(self, config: HiveConfig) -> None:
        self.dir = cache_dir(config.server.state_dir)

    def observe(self, facts: Facts, inventory: Inventory) -> None:
        try:
            dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        name = ""
        try:
            with os.scandir(dir_fd) as entries:
                names = {e.name: e.is_symlink() for e in entries
                         if not e.name.startswith(".")
                         and (e.is_file(follow_symlinks=False) or e.is_symlink())}
            found = facts.authorized_keys
            for name, link in names.items():
                if link:  # sshd follows it to whatever it names: never what Hive wants
                    found[name] = {"keys": {SYMLINK: ""}}
                    continue
                text = _read(dir_fd, name).decode("utf-8", errors="replace")
                found[name] = {"keys": keylines.parse_file(text)}
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.dir / name)) from None
        finally:
            os.close(dir_fd)

    def apply(self, changes: list[Change]) -> list[Result]:
        """All the changes with one sync (fsutil.replace_files), in the order given."""
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            remove_stale_temporaries(self.dir)
        except OSError as exc:
            return [(changes[0], f"preparing {self.dir}: {exc}")]
        contents = [(change.name, None if change.action == "delete"
                     else keylines.render_file((change.after or {})["keys"]))
                    for change in changes]
        done, error = replace_files(self.dir, contents, mode=0o644)
        results: list[Result] = [(change, None) for change in changes[:done]]
        if error is not None and done < len(changes):
            results.append((changes[done], str(error)))
        return results


def _read(dir_fd: int, name: str) -> bytes:
    """A whole file of the cache, in blocks small enough to cost no large allocation (a
    read into a megabyte buffer costs more than opening the file)."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        data = os.read(fd, 16384)
        if len(data) < 16384:
            return data
        blocks = [data]
        while data:
            data = os.read(fd, 65536)
            blocks.append(data)
        return b"".join(blocks)
    finally:
        os.close(fd)


def _key_summary(line: str) -> str:
    """The options part of a key line, which is what differs between keys."""
    options = line.split(" ssh-", 1)[0].split(" ecdsa-", 1)[0].split(" sk-", 1)[0]
    return options.removeprefix("restrict,")


def render(change: Change, style: Style) -> list[str]:
    """Key by key: which keys come, go or change their options."""
    if change.action == "delete":
        return ["      (every key removed: access revoked)"]
    lines = []
    old, new = (change.before or {}).get("keys", {}), (change.after or {}).get("keys", {})
    for name in sorted(set(old) | set(new)):
        if name not in old:
            lines.append(style(f"      + key {name}: ", "green") + _key_summary(new[name]))
        elif name not in new:
            lines.append(style(f"      - key {name}", "red"))
        elif old[name] != new[name]:
            lines.append(style(f"      ~ key {name}: ", "yellow")
                         + f"{_key_summary(old[name])} -> {_key_summary(new[name])}")
    return lines


KIND = Kind("authorized_keys", AuthorizedKeys, render=render, revokes=True)
