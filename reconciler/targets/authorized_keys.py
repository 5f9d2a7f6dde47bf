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


def cache_dir(state_dir: Path) -> Path:
    return state_dir / CACHE_DIR


class AuthorizedKeys:
    kind = "authorized_keys"

    def __init__(self, config: HiveConfig) -> None:
        self.dir = cache_dir(config.server.state_dir)

    def observe(self, facts: Facts, inventory: Inventory) -> None:
        try:
            entries = list(os.scandir(self.dir))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            text = Path(entry.path).read_text(encoding="utf-8", errors="replace")
            facts.authorized_keys[entry.name] = {"keys": keylines.parse_file(text)}

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
