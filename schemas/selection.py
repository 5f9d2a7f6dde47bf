"""Which repositories a selection covers: `hive status --owner/--group`, a notification
rule's `match:`, a channel's `owner:`/`groups:` limits. One rule for all of them, so a
channel limited to a group carries exactly what `hive status --group` shows for it.
"""

from __future__ import annotations

from schemas.models import Channel, HiveConfig, Rule


def matches(config: HiveConfig, repository: str, owners: tuple[str, ...],
            groups: tuple[str, ...]) -> bool:
    """--owner and --group: a group matches repositories shared with it or owned by a
    member of it."""
    repo = config.repositories[repository]
    if owners and repo.owner not in owners:
        return False
    if groups:
        members = {m for g in groups if g in config.groups for m in config.groups[g].members}
        if not (set(repo.groups) & set(groups)) and repo.owner not in members:
            return False
    return True


def channel_allows(config: HiveConfig, channel: Channel, repository: str) -> bool:
    """May this channel carry alerts about this repository (its owner:/groups: limits)?"""
    if channel.owner is not None and config.repositories[repository].owner != channel.owner:
        return False
    return not channel.groups or matches(config, repository, (), tuple(channel.groups))


def rule_matches(config: HiveConfig, rule: Rule, repository: str) -> bool:
    """Does the rule's match: cover this repository? Owner and group as `hive status
    --owner/--group` read them."""
    m = rule.match
    repo = config.repositories[repository]
    if m.repositories and repository not in m.repositories:
        return False
    if m.mode is not None and repo.mode != m.mode:
        return False
    return matches(config, repository, (m.owner,) if m.owner else (),
                   (m.group,) if m.group else ())
