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
from reconciler.desired import Facts
from reconciler.fsutil import atomic_write, remove_stale_temporaries
from reconciler.inventory import Inventory
from reconciler.resources import Change
from reconciler.targets import Result, apply_each
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
        try:
            self.dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            remove_stale_temporaries(self.dir)
        except OSError as exc:
            return [(changes[0], f"preparing {self.dir}: {exc}")]
        return apply_each(changes, self._apply_one, OSError)

    def _apply_one(self, change: Change) -> None:
        path = self.dir / change.name
        if change.action == "delete":
            path.unlink(missing_ok=True)
        else:
            atomic_write(path, keylines.render_file((change.after or {})["keys"]), mode=0o644)
