"""Validation of `notifications:` and `owners.<x>.notify`, reported as FILE:LINE:COL.

`problems` is pure and cheap: it runs with every load of hive.yaml (references, channel
restrictions, a literal password in a URL). `apprise_problems` imports apprise (half a
second) to ask it whether it can parse each URL and which of its parts are secrets, so
only `hive validate` and `hive notify` run it. Nothing is sent by either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from notifications.secrets import placeholder_markers, policy_of
from schemas.checks import Problem
from schemas.models import SECRET_PLACEHOLDER, Channel, HiveConfig, Rule

_MARKER = re.compile(r"^(hivesecret[0-9]+x)+$")
_HAS_MARKER = re.compile(r"hivesecret[0-9]+x")
# Query parameters that carry secrets whatever the service (?token=, ?password=, ?apikey=).
_SECRET_ARG = re.compile(r"(pass|token|secret|key|auth)", re.IGNORECASE)


def channel_allows(config: HiveConfig, channel: Channel, repository: str) -> bool:
    """May this channel carry alerts about this repository (its owner:/groups: limits)?"""
    from watcher.status import matches

    if channel.owner is not None and config.repositories[repository].owner != channel.owner:
        return False
    return not channel.groups or matches(config, repository, (), tuple(channel.groups))


def rule_matches(config: HiveConfig, rule: Rule, repository: str) -> bool:
    """Does the rule's match: cover this repository? Owner and group as `hive status
    --owner/--group` read them."""
    from watcher.status import matches

    m = rule.match
    repo = config.repositories[repository]
    if m.repositories and repository not in m.repositories:
        return False
    if m.mode is not None and repo.mode != m.mode:
        return False
    return matches(config, repository, (m.owner,) if m.owner else (),
                   (m.group,) if m.group else ())


def problems(config: HiveConfig) -> Iterator[Problem]:
    """Every reference and restriction problem of the notifications section."""
    section = config.notifications
    channels = section.channels
    for name, channel in channels.items():
        where: tuple[str | int, ...] = ("notifications", "channels", name)
        if channel.owner is not None and channel.owner not in config.owners:
            yield Problem((*where, "owner"), f"unknown owner {channel.owner!r}; add it under "
                                             "'owners:'")
        for i, group in enumerate(channel.groups):
            if group not in config.groups:
                yield Problem((*where, "groups", i), f"unknown group {group!r}; add it under "
                                                     "'groups:'")
        literal = _literal_password(channel.url)
        if literal:
            yield Problem((*where, "url"), literal)
        policy = policy_of(config)
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


def _literal_password(url: str) -> str | None:
    """A password in the URL's user:password@ part that is not a placeholder."""
    marked, _ = placeholder_markers(url)
    try:
        password = urlsplit(marked).password
    except ValueError:
        return None  # apprise_problems says what is wrong with it
    if password and not _MARKER.fullmatch(password):
        return ("holds a literal password; hive.yaml is committed to git, so write "
                "{env:NAME} or {file:/path} in its place")
    return None


def apprise_problems(config: HiveConfig) -> list[Problem]:
    """Ask apprise, without sending, whether each channel URL is one it can use, and
    refuse literal values in the parts apprise itself marks private (tokens, keys)."""
    result = []
    for name, channel in config.notifications.channels.items():
        if _literal_password(channel.url):
            continue  # `problems` said so already
        message = url_problem(channel.url)
        if message:
            result.append(Problem(("notifications", "channels", name, "url"), message))
    return result


def url_problem(url: str) -> str | None:
    from apprise.manager_plugins import NotificationManager

    marked, markers = placeholder_markers(url)
    schema = marked.split("://", 1)[0].lower()
    manager = NotificationManager()
    plugin = manager[schema] if schema in manager else None  # noqa: SIM401 (no .get)
    if plugin is None:
        return f"apprise knows no service {schema + '://'!r}; see apprise's list of services"
    try:
        parsed = plugin.parse_url(marked)
    except Exception:  # apprise raises assorted errors on odd input
        parsed = None
    if not parsed:
        return f"apprise cannot parse this {schema}:// URL; check its form in apprise's docs"
    private = {name for name, spec in plugin.template_tokens.items() if spec.get("private")}
    for name, spec in plugin.template_args.items():
        if spec.get("private"):
            private.update({name, spec.get("map_to", name)})
    # A value with a placeholder in it passes: tgram://123456789:{env:BOT_SECRET}/chat
    # keeps the public bot id literal and the secret out.
    literal = {name: parsed.get(name) for name in private}
    for name, value in (parsed.get("qsd") or {}).items():
        if name in private or _SECRET_ARG.search(name):
            literal[name] = value
    for name in sorted(literal):
        values = literal[name]
        for value in values if isinstance(values, list | tuple) else [values]:
            if value and isinstance(value, str) and not _HAS_MARKER.search(value):
                return (f"its {name!r} part holds a literal secret; write {{env:NAME}} or "
                        "{file:/path} in its place (hive.yaml is committed to git)")
    if not markers:
        from apprise import Apprise

        if Apprise.instantiate(url, suppress_exceptions=True) is None:
            return f"apprise refuses this {schema}:// URL; check its form in apprise's docs"
    return None


def has_secret_placeholders(url: str) -> bool:
    return bool(SECRET_PLACEHOLDER.search(url))


def apprise_problems_if_any(config: HiveConfig) -> list[Problem]:
    """apprise_problems, without importing apprise for a file that has no channels."""
    return apprise_problems(config) if config.notifications.channels else []
