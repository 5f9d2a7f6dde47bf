"""What is wrong (`conditions`) and who must hear what about it now (`decide`). Pure.

Staleness, locks and missing folders are `hive status`'s verdicts (watcher/status.py),
not derived again here, so notify follows whatever status means by "last backup". Only
what status does not judge is added: how long a never-backed-up repository has existed,
quota use against quota_warn, keys about to expire, and a borg key that was replaced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.models import HiveConfig, duration_seconds
from schemas.selection import channel_allows, rule_matches

KEY_EXPIRY_WARNING = timedelta(days=14)
# How long a key change `hive stats` saw stays an alert: long enough to be read after a
# weekend; the copies of every key are kept for good (watcher/repokeys.py).
REPOKEY_CHANGE_ALERT = timedelta(days=7)
BACKUP_ALERTS = frozenset({"stale", "never_backed_up"})
# Repositories in these modes are not backed up by borg clients: no backup alerts.
NO_BACKUP_MODES = frozenset({"import", "export", "disabled"})
_FROM_STATUS = {"stale": "stale", "never backed up": "never_backed_up", "locked": "locked",
                "missing on disk": "missing", "corrupt": "corrupt"}


def age_text(seconds: float | None) -> str:
    """'5 d', '7 h', '12 m', '30 s': short enough for a phone's lock screen."""
    if seconds is None:
        return "never"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@dataclass(frozen=True)
class Condition:
    """One alert that holds now for one repository; `detail` is its few words."""

    repository: str
    alert: str
    detail: str
    status: Any  # watcher.status.RepoStatus


def conditions(config: HiveConfig, statuses: Iterable[Any],
               created: dict[str, datetime], now: datetime,
               ) -> dict[tuple[str, str], Condition]:
    """Every (repository, alert) that holds now.

    `created`: when Hive created each repository (from the apply journal). A repository
    never backed up alerts once it is older than its stale_after; one whose creation is
    not known alerts at once (fail closed: better one message too many than silence).
    """
    found: dict[tuple[str, str], Condition] = {}

    def add(status: Any, alert: str, detail: str) -> None:
        found[(status.repository, alert)] = Condition(status.repository, alert, detail, status)

    for s in statuses:
        if s.mode == "disabled":
            continue
        alert = _FROM_STATUS.get(s.state)
        if alert in BACKUP_ALERTS and s.mode in NO_BACKUP_MODES:
            alert = None
        if alert == "never_backed_up":
            born = created.get(s.repository)
            if born is not None and (now - born).total_seconds() <= s.stale_after_seconds:
                alert = None
        if alert == "stale":
            add(s, alert, age_text(s.age_seconds))
        elif alert == "never_backed_up":
            add(s, alert, "never")
        elif alert == "locked":
            since = (now - s.lock_since).total_seconds() if s.lock_since else None
            add(s, alert, "locked" + (f" {age_text(since)}" if since is not None else ""))
        elif alert == "missing":
            add(s, alert, "missing")
        elif alert == "corrupt":
            add(s, alert, "files make no sense: " + (s.problem or "see hive status"))
        if s.quota_used is not None and s.quota_used >= config.quota_warn(s.repository):
            used = s.quota_used
            add(s, "quota", f"quota {used:.0%}" if used >= 0.1 else f"quota {used:.1%}")
        expiring = []
        repo = config.repositories[s.repository]
        for key_name in dict.fromkeys([*repo.keys, *repo.append_only_keys]):
            key = config.keys.get(key_name)
            expires = key.expires_at() if key is not None else None
            if expires is not None and now < expires <= now + KEY_EXPIRY_WARNING:
                expiring.append(f"key {key_name} expires in "
                                f"{age_text((expires - now).total_seconds())}")
        if expiring:
            add(s, "key_expiring", ", ".join(expiring))
        changed = s.repokey_changed
        if changed is not None and now - changed <= REPOKEY_CHANGE_ALERT:
            add(s, "repokey_changed", "its borg key was replaced "
                f"{age_text((now - changed).total_seconds())} ago; the earlier one is kept "
                "(hive stats)")
    return found


@dataclass(frozen=True)
class Sent:
    """An alert episode that went out: first and latest successful message."""

    first: datetime
    last: datetime


StateKey = tuple[str, str, str, str]  # rule, channel, repository, alert


@dataclass(frozen=True)
class Delivery:
    """One repository's alert for one channel through one rule.

    kind: new (first message), repeat, recovery (the alert ended and had been sent), or
    clear (it ended, the rule says recovery: false: forget it without a message)."""

    rule: str
    channel: str
    repository: str
    alert: str
    kind: str
    condition: Condition | None

    @property
    def key(self) -> StateKey:
        return (self.rule, self.channel, self.repository, self.alert)


def channels_for(config: HiveConfig, rule: Any, repository: str) -> list[str]:
    """The channels a rule uses for one repository: its own and, with notify_owner, the
    owner's; a channel whose owner:/groups: exclude the repository never gets it (the
    file's validation refuses such rules; this is the second lock on the door)."""
    names = list(rule.channels)
    if rule.notify_owner:
        owner = config.owners.get(config.repositories[repository].owner)
        names += owner.notify if owner is not None else []
    channels = config.notifications.channels
    return [n for n in dict.fromkeys(names)
            if n in channels and channel_allows(config, channels[n], repository)]


def decide(config: HiveConfig, active: dict[tuple[str, str], Condition],
           sent: dict[StateKey, Sent], now: datetime) -> list[Delivery]:
    """What to send now, given what holds (`active`) and what went out before (`sent`)."""
    out: list[Delivery] = []
    episodes = {(k[0], k[2], k[3]) for k in sent}
    for rule in config.notifications.rules:
        repeat = duration_seconds(rule.repeat_every)
        stop = duration_seconds(rule.stop_after) if rule.stop_after else None
        for repository in config.repositories:
            if not rule_matches(config, rule, repository):
                continue
            targets = None
            for alert in rule.alerts:
                condition = active.get((repository, alert))
                if condition is None and (rule.name, repository, alert) not in episodes:
                    continue
                if targets is None:
                    targets = channels_for(config, rule, repository)
                for channel in targets:
                    before = sent.get((rule.name, channel, repository, alert))
                    kind = _kind(condition is not None, before, now, repeat, stop,
                                 rule.recovery)
                    if kind:
                        out.append(Delivery(rule.name, channel, repository, alert, kind,
                                            condition))
    return out


def _kind(active: bool, before: Sent | None, now: datetime, repeat: int,
          stop: int | None, recovery: bool) -> str | None:
    if active:
        if before is None:
            return "new"
        if stop is not None and (now - before.first).total_seconds() >= stop:
            return None
        if (now - before.last).total_seconds() >= repeat:
            return "repeat"
        return None
    if before is None:
        return None
    return "recovery" if recovery else "clear"
