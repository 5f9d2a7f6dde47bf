"""Rules that need the whole file: references, who may attach which key, uid pins, and
the notifications: section (references, a channel's limits, secrets only as placeholders).

Pure functions over a validated HiveConfig. Each problem names the path of the field to fix
(the loader turns it into file:line:col), so all of them can be reported at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from schemas.models import SECRET_PLACEHOLDER, HiveConfig
from schemas.placeholders import literal_password, policy_of
from schemas.selection import channel_allows, rule_matches
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
    return [*_owners_and_groups(config), *_keys(config), *_repositories(config),
            *_notifications(config)]


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
        if append_only and repo.mode == "import":
            yield Problem((*where, "append_only_keys"),
                          "mode import gives each key rsync write access to the whole "
                          "repository, which cannot be append-only: remove "
                          "append_only_keys while importing (a key under 'keys' gets that "
                          "write access)")
        if repo.quota is not None and repo.mode == "import":
            yield Problem((*where, "quota"),
                          "mode import gives each key rsync write access, which no quota "
                          "limits: remove quota while importing, and set it again with "
                          "mode: borg (hive status shows the size meanwhile)")
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


def _notifications(config: HiveConfig) -> Iterator[Problem]:
    """Every reference and restriction problem of the notifications section."""
    section = config.notifications
    channels = section.channels
    policy = policy_of(config)
    for name, channel in channels.items():
        where: tuple[str | int, ...] = ("notifications", "channels", name)
        if channel.owner is not None and channel.owner not in config.owners:
            yield Problem((*where, "owner"), f"unknown owner {channel.owner!r}; add it under "
                                             "'owners:'")
        for i, group in enumerate(channel.groups):
            if group not in config.groups:
                yield Problem((*where, "groups", i), f"unknown group {group!r}; add it under "
                                                     "'groups:'")
        literal = literal_password(channel.url)
        if literal:
            yield Problem((*where, "url"), literal)
        for kind, arg in SECRET_PLACEHOLDER.findall(channel.url):
            refused = policy.file_problem(arg) if kind == "file" else policy.env_problem(arg)
            if refused:
                yield Problem((*where, "url"), refused)
    by_owner: dict[str, list[str]] = {}
    for repository, repo in config.repositories.items():
        by_owner.setdefault(repo.owner, []).append(repository)
    for owner_name, owner in config.owners.items():
        mine = by_owner.get(owner_name, [])
        for i, channel_name in enumerate(owner.notify):
            at: tuple[str | int, ...] = ("owners", owner_name, "notify", i)
            if channel_name not in channels:
                yield Problem(at, f"unknown channel {channel_name!r}; add it under "
                                     "'notifications.channels:'")
                continue
            yield from _restricted(config, at, channel_name, mine, f"owner {owner_name!r}")
    seen: set[str] = set()
    for i, rule in enumerate(section.rules):
        where = ("notifications", "rules", i)
        if rule.name in seen:
            yield Problem((*where, "name"), f"rule {rule.name!r} is defined twice; rules are "
                                            "told apart by name (DuckDB keeps what each sent)")
        seen.add(rule.name)
        m = rule.match
        if m.owner is not None and m.owner not in config.owners:
            yield Problem((*where, "match", "owner"), f"unknown owner {m.owner!r}")
        if m.group is not None and m.group not in config.groups:
            yield Problem((*where, "match", "group"), f"unknown group {m.group!r}")
        for j, repository in enumerate(m.repositories):
            if repository not in config.repositories:
                yield Problem((*where, "match", "repositories", j),
                              f"unknown repository {repository!r}")
        if (m.owner is not None and m.owner not in config.owners) or \
                (m.group is not None and m.group not in config.groups):
            continue
        covered = [r for r in config.repositories if rule_matches(config, rule, r)]
        for j, channel_name in enumerate(rule.channels):
            if channel_name not in channels:
                yield Problem((*where, "channels", j),
                              f"unknown channel {channel_name!r}; add it under "
                              "'notifications.channels:'")
                continue
            yield from _restricted(config, (*where, "channels", j), channel_name, covered,
                                   f"rule {rule.name!r}")


def _restricted(config: HiveConfig, where: tuple[Any, ...], channel_name: str,
                repositories: list[str], user: str) -> Iterator[Problem]:
    channel = config.notifications.channels[channel_name]
    if channel.owner is None and not channel.groups:
        return
    refused = [r for r in repositories if not channel_allows(config, channel, r)]
    if refused:
        limit = (f"owner {channel.owner!r}" if channel.owner is not None
                 else f"groups {', '.join(channel.groups)}")
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more"
                                           if len(refused) > 5 else "")
        yield Problem(where, f"channel {channel_name!r} may only carry alerts about the "
                             f"repositories of {limit}, but {user} would send it {shown}; "
                             "narrow the match or use another channel")
