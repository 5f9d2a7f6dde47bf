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


def paths_to_observe(config: HiveConfig, inventory: Inventory) -> tuple[set[str], set[str]]:
    """The paths whose state the plan needs (desired ones and the ones Hive made), and the
    folders among them whose content (empty or not) it reads: where a repository gone from
    the file keeps its data and its user folder, and where a moved one was. Only these are
    listed; opening every repository folder would cost a 50,000-repository plan seconds. A
    folder observed without its content counts as holding data (_content)."""
    paths = {str(config.server.repos_root)}
    add = paths.add
    folders = {}  # unix user -> its repository's folder, for the repositories in the file
    for name in config.repositories:
        path = folders[config.user_name(name)] = config.repo_folder(name)
        add(path)
        add(path.rpartition("/")[0])  # os.path.dirname, for a path repo_folder made
    contents = set()
    for user, entry in inventory.accounts.items():
        before = entry.get("path")  # where the repository was when last applied
        now_at = folders.get(user)
        if now_at is not None:  # still in the file
            if before and before != now_at:  # moved (repos_root changed?): is the old place
                contents.add(before)         # empty?
                paths.update((before, os.path.dirname(before)))
            if entry.get("removed"):  # back in the file: does it hold the old one's data,
                contents.add(now_at)      # where it was or where the file puts it (the tree
                if before:                # moved with repos_root)?
                    contents.add(before)
            continue
        # gone from the file: its data and user folder are kept, and read before a prune,
        # both where it was applied and where the file now puts it (repos_root moved with
        # its tree: the data is there)
        made = config.repo_folder(entry["repository"], user)
        path = before or made
        for where in (path, os.path.dirname(path), made, os.path.dirname(made)):
            contents.add(where)
            add(where)
    paths.update(inventory.directories)
    return paths, contents


def _content(observed: Any) -> tuple[str, ...] | None:
    """Up to two names a folder holds (enough to tell empty); None when not known."""
    if observed is None or observed is UNKNOWN:
        return None
    children: tuple[str, ...] | None = observed.get("children")
    return children


def _dn(config: HiveConfig, user: str) -> dict[str, str]:
    """For the LDAP backend, plans name each account's DN."""
    identity = config.server.identity
    if identity.backend != "ldap":
        return {}
    return {"dn": identity.ldap.user_dn(user)}


def _holds_data(observed: Any) -> bool:
    """True unless a folder is known to be absent or empty (unreadable or unlisted counts
    as data)."""
    return observed is not None and _content(observed) != ()


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


def _account(uid: int, gecos: str, home: str | Path, shell: str, locked: bool) -> dict[str, Any]:
    return {"uid": uid, "gid": uid, "group": uid, "gecos": gecos, "home": str(home),
            "shell": shell, "locked": locked}


_MODE_TEXT = {0o700: "0700", 0o750: "0750", 0o755: "0755"}


def _dir(uid: int, gid: int, mode: int) -> dict[str, Any]:
    return {"type": "directory", "uid": uid, "gid": gid,
            "mode": _MODE_TEXT.get(mode) or f"{mode:04o}"}


def _removed_gecos(name: str) -> str:
    """What the account of a repository removed from the file says (its data kept)."""
    return f"Hive repository {name} (removed)"


def _as_seen(seen: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """`wanted`, or the equal attrs observed (the same values): a converged plan then holds
    one copy of 50,000 repositories' attributes and key lines, not two, and the diff
    skips each without comparing."""
    return seen if type(seen) is dict and seen == wanted else wanted


# -- 0. Which accounts are Hive's ------------------------------------------------------


def known_accounts(config: HiveConfig, inventory: Inventory,
                   facts: Facts) -> dict[str, dict[str, Any]]:
    """Hive's accounts: what this host's inventory remembers, plus what the backend marks
    (an LDAP entry with Hive's mark is Hive's even where the inventory was lost).

    A mark is only text anyone with write access to the directory can copy, so a marked
    entry the inventory does not remember is taken as Hive's only with a uid Hive could
    have given it: one in server.users.uid_range, or the file's pin for that repository.
    Any other uid (0, a local user's) would hand that uid a repository's folder and keys;
    such an entry stays foreign, and a repository of that name is refused.

    Nor is one taken whose repository is not in this file: it is no proof that this host
    made it (a copied hive.yaml keeps the same server.name on another host), and taking
    it would lock, or with --prune delete, that host's user. Left alone, it keeps its uid
    taken; it has no keys here (the key cache is this host's)."""
    known = dict(inventory.accounts)
    low, high = config.server.users.uid_range
    repositories = config.repositories
    for user, repository in facts.marked.items():
        account = facts.accounts.get(user)
        if user in known or not isinstance(account, dict) or repository not in repositories:
            continue
        uid = account["uid"]
        pinned = repositories[repository].uid
        if low <= uid <= high or uid == pinned:
            known[user] = {"repository": repository, "uid": uid, "protected": False}
    return known


# -- 1. uids ---------------------------------------------------------------------------


@dataclass
class Uids:
    """Each user's uid, the users Hive refuses to touch, and why (in the plan's order)."""

    uids: dict[str, int] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)


def taken_names(users: dict[str, str], known: dict[str, Any], facts: Facts) -> dict[str, str]:
    """Users whose name belongs to someone else, so Hive neither creates nor takes them
    over -> the error saying so."""
    refusals = {}
    accounts = facts.accounts
    for user, name in users.items():
        if user not in known and user in facts.other_servers:
            refusals[user] = (f"user {user} (repository {name}) already exists, made by the "
                              f"Hive of server {facts.other_servers[user]} that shares this "
                              "directory; Hive will not take it over. Rename the repository "
                              "(user names are one namespace for every server)")
        elif user not in known and (user in accounts or user in facts.system_names):
            refusals[user] = (f"user {user} (repository {name}) already exists and was not "
                              "created by Hive; Hive will not take it over. Remove that user "
                              "or rename the repository")
        elif user in known and user not in accounts and user in facts.system_names:
            refusals[user] = (f"user {user} (repository {name}) was Hive's but now exists "
                              "without Hive's mark: someone else recreated it. Hive will not "
                              "touch it; remove it or rename the repository")
        elif user in accounts and user in facts.system_names:
            refusals[user] = (f"user {user} (repository {name}): besides Hive's own entry, "
                              "another account or group of that name exists (a local one, or "
                              "one elsewhere in the directory), which logins may resolve the "
                              "name to. Hive will not touch it; remove or rename the other one")
    return refusals


def kept_uids(config: HiveConfig, users: dict[str, str], known: dict[str, Any],
              refused: set[str] | dict[str, str]) -> tuple[dict[str, int], set[str]]:
    """The uids Hive means to use before allocating: pinned in the file, else remembered
    (also for repositories gone from the file). Returns (user -> uid, the pinned users)."""
    uids: dict[str, int] = {}
    pinned: set[str] = set()
    for user, name in users.items():
        if user in refused:
            continue
        repo = config.repositories[name]
        if repo.uid is not None:
            uids[user] = repo.uid
            pinned.add(user)
        elif user in known:
            uids[user] = known[user]["uid"]
    for user, entry in known.items():
        if user not in users:
            uids[user] = entry["uid"]
    return uids, pinned


def uid_conflicts(uids: dict[str, int], pinned: set[str], users: dict[str, str],
                  facts: Facts) -> dict[str, str]:
    """A uid Hive means to use (pinned or remembered) must not be held by anyone else:
    sharing it would hand that someone the repository's backups. User -> the error."""
    conflicts = {}
    for user, uid in uids.items():
        others = facts.others_holding(uid, user)
        if others:
            holder = others[0]
            where = f"repositories.{users[user]}.uid: " if user in pinned else f"user {user}: "
            conflicts[user] = (f"{where}uid {uid} is already used by {holder!r}; "
                               + ("pin a free uid" if user in pinned else
                                  "Hive keeps a repository's uid for ever, so remove or "
                                  "renumber that entry"))
    return conflicts


def assign_uids(config: HiveConfig, users: dict[str, str], known: dict[str, Any],
                facts: Facts) -> Uids:
    """Pinned, else remembered, else observed on a Hive entry, else the lowest free uid."""
    names = taken_names(users, known, facts)
    uids, pinned = kept_uids(config, users, known, names)
    conflicts = uid_conflicts(uids, pinned, users, facts)
    out = Uids(uids, set(names) | set(conflicts), [*names.values(), *conflicts.values()])
    taken = set(facts.ids_in_use) | set(uids.values())
    low, high = config.server.users.uid_range
    missing = [u for u in users if u not in uids and u not in out.refused]
    allocated = _allocate(missing, taken, low, high)
    if len(allocated) < len(missing):
        out.errors.append(f"server.users.uid_range [{low}, {high}] has no free uid left for "
                          f"{len(missing) - len(allocated)} new repositories; widen it")
    out.uids.update(allocated)
    return out


# -- 2. Repositories in the file -------------------------------------------------------


@dataclass
class Wanted:
    """One repository in the file: its resources, what the inventory claims for it, the
    keys left out because they expired; or the error that stops it."""

    resources: list[Resource] = field(default_factory=list)
    claim: dict[str, Any] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    expired: dict[str, dt.datetime] = field(default_factory=dict)
    error: str | None = None


def wanted_repository(config: HiveConfig, name: str, uid: int, known: dict[str, Any] | None,
                      facts: Facts, now: dt.datetime,
                      maker: keylines.LineMaker | None = None) -> Wanted:
    """Account, user folder, repository folder and key file of one repository (`maker`
    renders the key lines; one for all repositories makes each key's part once)."""
    repo = config.repositories[name]
    user = config.user_name(name)
    path = config.repo_folder(name)
    home = path.rpartition("/")[0]  # os.path.dirname, for a path repo_folder made
    seen = facts.directories
    before = known.get("path") if known else None
    if before and before != path and _holds_data(seen.get(before)):
        return Wanted(error=f"repository {name} was at {before} and would now be at {path} "
                            "(server.repos_root changed?). Hive never moves backups: move "
                            f"the folder yourself (mv {before} {path}) or set repos_root back")
    if known is not None and _was_removed(known, facts.accounts.get(user), name):
        error = _readded(name, repo.owner, known.get("owner"), (before or path, path), seen)
        if error:
            return Wanted(error=error)
    server = config.server
    try:
        maker = maker or keylines.LineMaker(config)
        lines, expired = maker.repository_lines(repo, path, now)
    except keylines.UnsafeKeyLine as exc:  # validation should have caught it: fail closed
        return Wanted(error=f"repository {name}: {exc}")
    meta = {"repository": name}  # shared: nothing changes a resource's meta
    account = {"uid": uid, "gid": uid, "group": uid,
               "gecos": f"Hive repository {name} ({repo.owner})", "home": home,
               "shell": server.users.shell, "locked": False}  # _account, inline: 50,000 calls
    resources = [
        Resource("account", user, _as_seen(facts.accounts.get(user), account),
                 {**meta, **_dn(config, user)} if server.identity.backend == "ldap" else meta),
        Resource("directory", home, _as_seen(seen.get(home), _dir(0, uid, 0o750)),
                 {"role": "user_dir", "repository": name}),
        Resource("directory", path, _as_seen(seen.get(path), _dir(uid, uid, 0o700)),
                 {"role": "repository", "repository": name})]
    if lines:
        resources.append(Resource("authorized_keys", user, _as_seen(
            facts.authorized_keys.get(user), {"keys": lines}), meta))
    return Wanted(resources, {"repository": name, "uid": uid, "protected": repo.protected,
                              "path": path, "owner": repo.owner},
                  [maker.repos_root, home, path], expired)


def _was_removed(known: dict[str, Any], account: Any, name: str) -> bool:
    """Whether Hive removed this repository from its file earlier (its data kept). An
    inventory of a Hive that did not record owners may lack the mark; the locked
    account then says it."""
    return bool(known.get("removed")) or (
        "owner" not in known and type(account) is dict
        and account.get("gecos") == _removed_gecos(name))


def _readded(name: str, owner: str, was: str | None, places: tuple[str, str],
             seen: dict[str, Any]) -> str | None:
    """Why a removed repository cannot come back under `owner`: its data is kept, where it
    was applied or where the file now puts it (repos_root moved with its tree), and is
    `was`'s, or nobody knows whose (an older Hive did not record owners)."""
    where = next((p for p in dict.fromkeys(places) if _holds_data(seen.get(p))), None)
    if where is None or was == owner:
        return None
    if was is None:
        return (f"repository {name} was removed from the file and its data kept at {where}, "
                f"by a Hive that did not record whose it is: adding it again could give "
                f"{owner}'s keys another owner's backups. Purge it first ('hive purge "
                f"{name}'), or move the folder aside (mv {where} {where}.kept) to start it "
                "empty")
    return (f"repository {name} was removed from the file and its data kept at {where} "
            f"(owner {was}); adding it again under owner {owner} would give {owner}'s keys "
            f"that data. Purge it first ('hive purge {name}'), or add it back with owner "
            f"{was} and change the owner in a change of its own")


def expired_note(expired: dict[str, dt.datetime]) -> str | None:
    """One note for every expired key left out, naming the first ten."""
    if not expired:
        return None
    listed = ", ".join(f"{k} ({t:%Y-%m-%d})" for k, t in sorted(expired.items())[:10])
    more = f" and {len(expired) - 10} more" if len(expired) > 10 else ""
    return (f"{len(expired)} expired key{'s' if len(expired) > 1 else ''} "
            f"left out: {listed}{more}; remove them from hive.yaml")


# -- 3. Repositories gone from the file ------------------------------------------------


@dataclass
class Removal:
    """A repository gone from the file: its locked account (None once pruned), what to
    delete, a note, or the error that keeps it as it is."""

    account: Resource | None = None
    remove: set[Key] = field(default_factory=set)
    note: str | None = None
    error: str | None = None


def removed_repository(config: HiveConfig, user: str, known: dict[str, Any], facts: Facts,
                       made: set[str], prune: bool) -> Removal:
    """Revoke access, keep data; with --prune delete the user and the folders Hive made
    (`made`), and only once the repository's data is gone."""
    name = known["repository"]
    if known.get("protected"):
        return Removal(error=f"repository {name} is protected but no longer in the file; "
                             "set 'protected: false' and apply first if you mean to remove it")
    if user in facts.system_names:  # locking or pruning would write to that entry too
        return Removal(error=f"repository {name} removed from the file: besides Hive's user "
                             f"{user}, another account or group of that name exists. Hive "
                             "will not touch either; remove or rename the other one")
    # where its data really is: where it was applied, or where the file now puts it (a
    # repos_root moved with its tree); the user, and so its uid, stays while either holds
    # anything, else the next new repository would get the uid that owns these backups
    path = Path(known.get("path") or config.repo_path(name, user))
    home = path.parent
    seen = facts.directories
    places = [path, config.repo_path(name, user)]
    full = next((p for p in places if _holds_data(seen.get(str(p)))), None)
    if full is not None:
        path, home = full, full.parent
    data_gone = full is None
    held: tuple[str, ...] | None = ()
    for folder in dict.fromkeys(p.parent for p in places):
        user_dir = seen.get(str(folder))
        content = _content(user_dir)
        if user_dir is None:
            continue
        if content is None or not set(content) <= {name}:
            home, held = folder, content
            break
    home_clear = held is not None and set(held) <= {name}
    if prune and data_gone and home_clear:
        remove: set[Key] = {("account", user)}
        remove.update(("directory", str(d)) for p in places for d in (p, p.parent)
                      if str(d) in made)
        return Removal(remove=remove, note=f"repository {name} removed from the file: "
                                           "--prune deletes its user, group and empty folders")
    out = Removal(account=Resource("account", user, _account(
        known["uid"], _removed_gecos(name), home, config.server.users.shell,
        True), {"repository": name, **_dn(config, user)}))
    if prune and data_gone and held is not None:
        others = ", ".join(c for c in held if c != name)
        out.note = (f"repository {name} removed from the file: {home} still holds "
                    f"{others} (a rollback copy?); move or delete it, then prune")
    elif prune:
        out.note = (f"repository {name} removed from the file: its data at {path} "
                    f"is kept; run 'hive purge {name}' to delete it, then prune")
    return out


# -- 4. The key cache ------------------------------------------------------------------


def stray_key_files(facts: Facts, resources: dict[Key, Resource]) -> set[Key]:
    """The cache directory belongs to Hive: any file in it that is not wanted goes."""
    return {("authorized_keys", user) for user in facts.authorized_keys
            if ("authorized_keys", user) not in resources}


def desired_state(config: HiveConfig, inventory: Inventory, facts: Facts, now: dt.datetime,
                  prune: bool = False) -> Desired:
    """The phases above, in order; each adds its resources, errors and notes."""
    out = Desired(inventory=inventory.copy())
    out.add(Resource("directory", str(config.server.repos_root), _dir(0, 0, 0o755),
                     {"role": "repos_root"}))
    known = known_accounts(config, inventory, facts)
    users = {config.user_name(name): name for name in config.repositories}

    # 1. uids: pinned, else remembered, else observed on a Hive entry, else allocated.
    assigned = assign_uids(config, users, known, facts)
    out.errors.extend(assigned.errors)

    # 2. Repositories in the file: account, directories, keys.
    expired: dict[str, dt.datetime] = {}
    seen = facts.directories
    maker = keylines.LineMaker(config)
    resources, claims, made = out.resources, out.inventory.accounts, inventory.directories
    claimed_paths = out.inventory.directories
    uids, refused = assigned.uids, assigned.refused
    # a repository of the file that Hive made under another user (server.users.prefix
    # changed): its backups stay with that user, so a new user would start it empty
    earlier = {entry["repository"]: (u, entry) for u, entry in known.items() if u not in users}
    for user, name in users.items():
        if user not in uids or user in refused:
            continue
        if name in earlier:
            was, entry = earlier[name]
            at = entry.get("path") or config.repo_folder(name, was)
            if _holds_data(seen.get(at)):
                out.errors.append(
                    f"repository {name} was made as user {was} (its data is at {at}) and "
                    f"would now be user {user} with a new, empty folder (server.users.prefix "
                    "changed?). Hive never renames users or moves backups: set the prefix "
                    "back")
                continue
        wanted = wanted_repository(config, name, uids[user], known.get(user), facts, now,
                                   maker)
        if wanted.error:
            out.errors.append(wanted.error)
            continue
        path = wanted.claim["path"]
        found = seen.get(path)
        if type(found) is dict and path not in made and found.get("type") == "directory" \
                and found.get("uid") not in (uids[user], (known.get(user) or {}).get("uid")):
            # a folder Hive did not make, of someone else: adopting it would chown all that
            # someone's files in it to this repository's user
            out.errors.append(
                f"{path} exists, Hive did not make it, and it belongs to uid {found['uid']}: "
                f"Hive will not give what it holds to {user}. Move it away; or, if it is "
                f"this repository's data, 'chown -R {uids[user]}:{uids[user]} {path}' "
                "yourself, then apply")
            continue
        for resource in wanted.resources:
            resources[(resource.kind, resource.name)] = resource
        if wanted.expired:
            expired.update(wanted.expired)
        claims[user] = wanted.claim
        for p in wanted.paths:
            if p not in seen or p in made:
                claimed_paths.add(p)
    note = expired_note(expired)
    if note:
        out.notes.append(note)

    # 3. Repositories gone from the file: revoke access, keep data; prune only when empty.
    for user, entry in known.items():
        if user in users or user in assigned.refused:
            continue
        removal = removed_repository(config, user, entry, facts, inventory.directories, prune)
        if removal.error:
            out.errors.append(removal.error)
            continue
        out.remove |= removal.remove
        if ("account", user) in removal.remove and user not in facts.accounts \
                and entry["uid"] not in facts.ids_in_use:
            # pruned by an apply killed before it trimmed the inventory: forgotten now,
            # else every later apply would make it again as a locked account
            del out.inventory.accounts[user]
        if removal.note:
            out.notes.append(removal.note)
        if removal.account:
            out.add(removal.account)
            # marked removed: a repository of that name added later is checked against the
            # owner whose data this is (wanted_repository)
            out.inventory.accounts[user] = {**entry, "removed": True}

    # 4. The cache directory belongs to Hive: any file in it that is not wanted goes.
    out.remove |= stray_key_files(facts, out.resources)
    return out
