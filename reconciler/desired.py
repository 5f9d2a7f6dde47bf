"""What hive.yaml asks for, as resources: pure, given the file, the inventory and the facts.

This is where the rules about identity live: a repository's user keeps its uid for ever,
new users take the lowest free uid, a repository removed from the file keeps a locked
account and all its data, and only `--prune` deletes what Hive made, and only once the
repository's data is gone.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler import keylines
from reconciler.inventory import Inventory
from reconciler.resources import UNKNOWN, Facts, Key, Resource
from schemas.models import HiveConfig


@dataclass
class Desired:
    resources: dict[Key, Resource] = field(default_factory=dict)
    remove: set[Key] = field(default_factory=set)
    inventory: Inventory = field(default_factory=Inventory)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, resource: Resource) -> None:
        self.resources[resource.key] = resource


def directories_to_observe(config: HiveConfig, inventory: Inventory) -> list[str]:
    """The paths whose state the plan needs: desired ones and the ones Hive made."""
    root = str(config.server.repos_root)
    paths = {root}
    for repo in config.repositories:
        home = f"{root}/{config.user_name(repo)}"
        paths.update((home, f"{home}/{repo}"))
    for user, entry in inventory.accounts.items():
        paths.update((f"{root}/{user}", f"{root}/{user}/{entry['repository']}"))
        if entry.get("path"):  # where the repository was when last applied
            paths.update((entry["path"], os.path.dirname(entry["path"])))
    paths.update(inventory.directories)
    return sorted(paths)


def _dn_function(config: HiveConfig) -> Any:
    """For the LDAP backend, plans name each account's DN."""
    identity = config.server.identity
    if identity.backend != "ldap":
        return lambda user: {}
    return lambda user: {"dn": f"uid={user},{identity.ldap.people}"}


def _holds_data(observed: Any) -> bool:
    """True unless a folder is known to be absent or empty (unreadable counts as data)."""
    return observed is not None and (observed is UNKNOWN or bool(observed.get("children")))


def _allocate(wanted: list[str], taken: set[int], low: int, high: int) -> dict[str, int]:
    result = {}
    uid = low
    for user in wanted:
        while uid in taken and uid <= high:
            uid += 1
        if uid > high:
            break
        result[user] = uid
        taken.add(uid)
    return result


def _account(uid: int, gecos: str, home: Path, shell: str, locked: bool) -> dict[str, Any]:
    return {"uid": uid, "gid": uid, "group": uid, "gecos": gecos, "home": str(home),
            "shell": shell, "locked": locked}


def _dir(uid: int, gid: int, mode: int) -> dict[str, Any]:
    return {"type": "directory", "uid": uid, "gid": gid, "mode": f"{mode:04o}"}


def desired_state(config: HiveConfig, inventory: Inventory, facts: Facts, now: dt.datetime,
                  prune: bool = False) -> Desired:
    out = Desired(inventory=inventory.copy())
    server = config.server
    root = server.repos_root
    out.add(Resource("directory", str(root), _dir(0, 0, 0o755), {"role": "repos_root"}))

    # Hive's accounts: what this host's inventory remembers, plus what the backend marks.
    known_accounts = dict(inventory.accounts)
    for user, repository in facts.marked.items():
        if user not in known_accounts and isinstance(facts.accounts.get(user), dict):
            known_accounts[user] = {"repository": repository,
                                    "uid": facts.accounts[user]["uid"], "protected": False}
    dn = _dn_function(config)

    # 1. uids: pinned, else remembered, else observed on a Hive entry, else allocated.
    uids: dict[str, int] = {}
    pinned_by: dict[int, str] = {}
    refused: set[str] = set()
    users = {config.user_name(name): name for name in config.repositories}
    for user, name in users.items():
        repo = config.repositories[name]
        known = known_accounts.get(user)
        if user not in known_accounts and (user in facts.accounts
                                               or user in facts.system_names):
            out.errors.append(f"user {user} (repository {name}) already exists and was not "
                              "created by Hive; Hive will not take it over. Remove that user "
                              "or rename the repository")
            refused.add(user)
            continue
        if user in known_accounts and user not in facts.accounts \
                and user in facts.system_names:
            out.errors.append(f"user {user} (repository {name}) was Hive's but now exists "
                              "without Hive's mark: someone else recreated it. Hive will not "
                              "touch it; remove it or rename the repository")
            refused.add(user)
            continue
        if repo.uid is not None:
            uids[user] = repo.uid
            pinned_by[repo.uid] = user
        elif known is not None:
            uids[user] = known["uid"]
    for user, known in known_accounts.items():
        if user not in users:
            uids[user] = known["uid"]
    # A uid Hive means to use (pinned or remembered) must not be held by anyone else:
    # sharing it would hand that someone the repository's backups.
    for user, uid in uids.items():
        holder = facts.ids_in_use.get(uid)
        if holder is not None and holder != user:
            where = (f"repositories.{users[user]}.uid: " if user in pinned_by.values()
                     else f"user {user}: ")
            out.errors.append(f"{where}uid {uid} is already used by {holder!r}; "
                              + ("pin a free uid" if user in pinned_by.values() else
                                 "Hive keeps a repository's uid for ever, so remove or "
                                 "renumber that entry"))
            refused.add(user)
    taken = set(facts.ids_in_use) | set(uids.values())
    low, high = server.users.uid_range
    missing = [u for u in users if u not in uids and u not in refused]
    allocated = _allocate(missing, taken, low, high)
    if len(allocated) < len(missing):
        out.errors.append(f"server.users.uid_range [{low}, {high}] has no free uid left for "
                          f"{len(missing) - len(allocated)} new repositories; widen it")
    uids.update(allocated)

    # 2. Repositories in the file: account, directories, keys.
    expired: dict[str, dt.datetime] = {}
    for user, name in users.items():
        if user not in uids or user in refused:
            continue
        repo = config.repositories[name]
        uid = uids[user]
        home = root / user
        path = home / name
        before = (known_accounts.get(user) or {}).get("path")
        if before and before != str(path) and _holds_data(facts.directories.get(before)):
            out.errors.append(f"repository {name} was at {before} and would now be at {path} "
                              "(server.repos_root changed?). Hive never moves backups: move "
                              f"the folder yourself (mv {before} {path}) or set repos_root back")
            continue
        out.add(Resource("account", user, _account(
            uid, f"Hive repository {name} ({repo.owner})", home, server.users.shell, False),
            {"repository": name, **dn(user)}))
        out.add(Resource("directory", str(home), _dir(0, uid, 0o750),
                         {"role": "user_dir", "repository": name}))
        out.add(Resource("directory", str(path), _dir(uid, uid, 0o700),
                         {"role": "repository", "repository": name}))
        lines, gone = keylines.repository_lines(config, repo, path, now)
        expired.update(gone)
        if lines:
            out.add(Resource("authorized_keys", user, {"keys": lines}, {"repository": name}))
        out.inventory.accounts[user] = {"repository": name, "uid": uid,
                                        "protected": repo.protected, "path": str(path)}
        for p in (root, home, path):
            if str(p) not in facts.directories or str(p) in inventory.directories:
                out.inventory.directories.add(str(p))

    if expired:
        listed = ", ".join(f"{k} ({t:%Y-%m-%d})" for k, t in sorted(expired.items())[:10])
        more = f" and {len(expired) - 10} more" if len(expired) > 10 else ""
        out.notes.append(f"{len(expired)} expired key{'s' if len(expired) > 1 else ''} "
                         f"left out: {listed}{more}; remove them from hive.yaml")

    # 3. Repositories gone from the file: revoke access, keep data; prune only when empty.
    for user, known in known_accounts.items():
        if user in users or user in refused:
            continue
        name = known["repository"]
        if known.get("protected"):
            out.errors.append(f"repository {name} is protected but no longer in the file; "
                              "set 'protected: false' and apply first if you mean to remove it")
            continue
        path = Path(known.get("path") or root / user / name)  # where its data really is
        home = path.parent
        repo_dir = facts.directories.get(str(path))
        user_dir = facts.directories.get(str(home))
        data_gone = repo_dir is None or (repo_dir is not UNKNOWN and not repo_dir["children"])
        home_clear = (user_dir is None or (user_dir is not UNKNOWN
                                           and set(user_dir["children"]) <= {name}))
        if prune and data_gone and home_clear:
            out.remove.add(("account", user))
            for p in (path, home):
                if str(p) in inventory.directories:
                    out.remove.add(("directory", str(p)))
            out.notes.append(f"repository {name} removed from the file: --prune deletes its "
                             "user, group and empty folders")
            continue
        if prune and data_gone and user_dir is not UNKNOWN and user_dir is not None:
            others = ", ".join(c for c in user_dir["children"] if c != name)
            out.notes.append(f"repository {name} removed from the file: {home} still holds "
                             f"{others} (a rollback copy?); move or delete it, then prune")
        elif prune:
            out.notes.append(f"repository {name} removed from the file: its data at {path} "
                             f"is kept; run 'hive purge {name}' to delete it, then prune")
        out.add(Resource("account", user, _account(
            known["uid"], f"Hive repository {name} (removed)", home, server.users.shell, True),
            {"repository": name, **dn(user)}))
        out.inventory.accounts.setdefault(user, dict(known))

    # 4. The cache directory belongs to Hive: any file in it that is not wanted goes.
    for user in facts.authorized_keys:
        if ("authorized_keys", user) not in out.resources:
            out.remove.add(("authorized_keys", user))
    return out
