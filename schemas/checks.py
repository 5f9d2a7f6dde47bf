"""Rules that need the whole file: references, who may attach which key, uid pins.

Pure functions over a validated HiveConfig. Each problem names the path of the field to fix
(the loader turns it into file:line:col), so all of them can be reported at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from schemas.models import HiveConfig
from schemas.sshkeys import parse_public_key

MAX_USER_NAME = 32
USER_NAME_START = "abcdefghijklmnopqrstuvwxyz_"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with hive.yaml; `key` points at a mapping key rather than its value."""

    path: tuple[str | int, ...]
    message: str
    key: bool = False


def check(config: HiveConfig) -> list[Problem]:
    """All cross-field problems in the file, in file order."""
    from notifications import checks as notifications

    return [*_owners_and_groups(config), *_keys(config), *_repositories(config),
            *notifications.problems(config)]


def _owners_and_groups(config: HiveConfig) -> Iterator[Problem]:
    for group_name, group in config.groups.items():
        seen: set[str] = set()
        for i, member in enumerate(group.members):
            if member not in config.owners:
                yield Problem(("groups", group_name, "members", i),
                              f"unknown owner {member!r}; add it under 'owners:'")
            if member in seen:
                yield Problem(("groups", group_name, "members", i),
                              f"{member!r} is listed twice")
            seen.add(member)


def _keys(config: HiveConfig) -> Iterator[Problem]:
    owners = config.owners
    by_blob: dict[str, str] = {}
    for key_name, key in config.keys.items():
        if key.owner not in owners:
            yield Problem(("keys", key_name, "owner"),
                          f"unknown owner {key.owner!r}; add it under 'owners:'")
        # validation parsed every key just now: this is a lookup in parse_public_key's cache
        blob = parse_public_key(key.public_key).blob
        first = by_blob.setdefault(blob, key_name)
        if first != key_name:
            yield Problem(("keys", key_name, "public_key"),
                          f"the same public key is already defined as {first!r}; "
                          "one key, one name (sshd would only ever use the first line)")


def _repositories(config: HiveConfig) -> Iterator[Problem]:
    pins: dict[int, str] = {}  # pins may lie outside uid_range: users imported with their uid
    owners, groups, keys = config.owners, config.groups, config.keys
    for repo_name, repo in config.repositories.items():
        where = ("repositories", repo_name)
        user = config.user_name(repo_name)
        if len(user) > MAX_USER_NAME:
            yield Problem(where, f"unix user {user!r} would be {len(user)} characters, over "
                                 f"the limit of {MAX_USER_NAME}; shorten the name or the "
                                 "prefix", key=True)
        if user[0] not in USER_NAME_START:
            yield Problem(where, f"unix user {user!r} would start with a digit; set a "
                                 "server.users.prefix such as 'bh-'", key=True)
        owner = repo.owner
        if owner not in owners:
            yield Problem((*where, "owner"),
                          f"unknown owner {owner!r}; add it under 'owners:'")
        allowed = {owner}
        for i, group in enumerate(repo.groups):
            if group in groups:
                allowed.update(groups[group].members)
            else:
                yield Problem((*where, "groups", i),
                              f"unknown group {group!r}; add it under 'groups:'")
        append_only = repo.append_only_keys
        full = set(repo.keys) if append_only else set()
        for field, names in (("keys", repo.keys), ("append_only_keys", append_only)):
            seen: set[str] = set()
            for i, key_name in enumerate(names):
                if key_name in seen:
                    yield Problem((*where, field, i), f"key {key_name!r} is listed twice")
                seen.add(key_name)
                key = keys.get(key_name)
                if key is None:
                    yield Problem((*where, field, i),
                                  f"unknown key {key_name!r}; add it under 'keys:'")
                    continue
                if field == "append_only_keys" and key_name in full:
                    yield Problem((*where, field, i), f"key {key_name!r} is in both 'keys' "
                                                      "and 'append_only_keys'; choose one")
                if key.owner not in allowed:
                    yield Problem((*where, field, i),
                                  f"key {key_name!r} belongs to {key.owner!r}, who is "
                                  f"neither the owner ({owner!r}) nor in one of this "
                                  "repository's groups")
        if repo.uid is not None:  # its bounds are the model's (schemas/models.py MIN_UID)
            if repo.uid in pins:
                yield Problem((*where, "uid"), f"uid {repo.uid} is already pinned by "
                                               f"repository {pins[repo.uid]!r}")
            else:
                pins[repo.uid] = repo_name
