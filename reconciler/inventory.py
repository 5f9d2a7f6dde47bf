"""What Hive created, so that Hive only ever changes or removes its own things.

`<state_dir>/inventory.json` lists Hive's accounts (with the uid they were given and whether
their repository is protected) and the directories Hive made. It is written *before* an
apply creates anything (a claim) and trimmed only *after* something was deleted, so an
apply killed at any point leaves an inventory that still covers everything on disk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.fsutil import atomic_write, untrusted, untrusted_state_dir

FILE_NAME = "inventory.json"
VERSION = 1


class InventoryError(Exception):
    pass


@dataclass
class Inventory:
    # unix user -> {"repository": str, "uid": int, "protected": bool}
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    directories: set[str] = field(default_factory=set)

    def to_json(self) -> str:
        return json.dumps({"version": VERSION, "accounts": dict(sorted(self.accounts.items())),
                           "directories": sorted(self.directories)}, indent=1) + "\n"

    def made(self, user: str, repository: str) -> dict[str, Any] | None:
        """`user`'s entry if Hive made it for `repository` on this server: what is asked
        before Hive touches a repository's data (purge, rollback)."""
        entry = self.accounts.get(user)
        return entry if entry is not None and entry.get("repository") == repository else None

    def made_as(self, user: str, repository: str) -> tuple[str, dict[str, Any]] | None:
        """(user, entry) as `made`, else the one entry Hive made for `repository` under
        another user: one removed before server.users.prefix changed keeps the user it
        was made as (its data is that user's)."""
        entry = self.made(user, repository)
        if entry is not None:
            return user, entry
        others = [(u, e) for u, e in self.accounts.items() if e.get("repository") == repository]
        return others[0] if len(others) == 1 else None

    def copy(self) -> Inventory:
        return Inventory({k: dict(v) for k, v in self.accounts.items()}, set(self.directories))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Inventory) and self.accounts == other.accounts
                and self.directories == other.directories)


def _refuse(problem: str | None) -> None:
    if problem is not None:
        raise InventoryError(f"{problem}; the inventory decides what Hive may touch, so "
                             "check its content too")


def check_state_dir(state_dir: Path) -> None:
    """As root, refuse a state_dir others may change before anything in it is opened
    (fsutil.untrusted_state_dir), even before the first inventory exists to be refused."""
    _refuse(untrusted_state_dir(state_dir))


def load(state_dir: Path) -> Inventory:
    """The inventory. As root, only one that root alone may change: it says which users,
    uids and folders are Hive's, and `hive purge` deletes the data of the folder it names,
    so a state_dir another user may write would let that user point root anywhere."""
    path = state_dir / FILE_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return Inventory()
    except OSError as exc:
        raise InventoryError(f"{path}: cannot read the inventory ({exc.strerror}); restore "
                             "it from a backup (Hive will not guess what it owns)") from None
    try:
        if os.geteuid() == 0:
            for where, info in ((state_dir, os.stat(state_dir)), (path, os.fstat(fd))):
                _refuse(untrusted(where, info))
        with os.fdopen(os.dup(fd), encoding="utf-8") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError) as exc:
        raise InventoryError(f"{path}: cannot read the inventory ({exc}); restore it from a "
                             "backup (Hive will not guess what it owns)") from None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or not isinstance(data.get("accounts", {}), dict) \
            or not isinstance(data.get("directories", []), list):
        raise InventoryError(f"{path}: not an inventory Hive wrote; restore it from a backup "
                             "(Hive will not guess what it owns)")
    if data.get("version") != VERSION:
        raise InventoryError(f"{path}: inventory version {data.get('version')} is not "
                             f"{VERSION}; this Hive is too old for this server")
    return Inventory(data.get("accounts", {}), set(data.get("directories", [])))


def save(state_dir: Path, inventory: Inventory) -> None:
    atomic_write(state_dir / FILE_NAME, inventory.to_json(), mode=0o644)
