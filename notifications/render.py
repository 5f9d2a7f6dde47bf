"""Words for people: one message per channel and kind, titled for a phone's lock screen.

The title carries the news by itself ("backup1: 3 backups late: laptop 2 d, pc never,
nas 5 d"); the body has the details and where to look next.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from notifications.alerts import BACKUP_ALERTS, Delivery, age_text
from schemas.models import HiveConfig

TITLE_LIMIT = 160
BODY_ITEMS = 50  # repositories described in one body; the rest are named in one line
SEVERE = frozenset({"stale", "never_backed_up", "locked", "missing", "corrupt",
                    "repokey_changed"})
_NAMES = {"stale": "stale", "never_backed_up": "never backed up", "locked": "locked",
          "missing": "missing on disk", "corrupt": "corrupt", "quota": "quota",
          "key_expiring": "key expiring", "repokey_changed": "borg key replaced"}


@dataclass
class Message:
    """What one channel gets in this run. kind: alert, recovery or test; notify_type is
    apprise's (failure, warning, success, info)."""

    channel: str
    kind: str
    title: str
    body: str
    notify_type: str
    deliveries: list[Delivery] = field(default_factory=list)

    def items(self) -> list[tuple[str, str]]:
        return list(dict.fromkeys((d.repository, d.alert) for d in self.deliveries))


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "never"


def _title(prefix: str, parts: list[str]) -> str:
    title = prefix + ", ".join(parts)
    shown = len(parts)
    while len(title) > TITLE_LIMIT and shown > 1:
        shown -= 1
        title = prefix + ", ".join(parts[:shown]) + f", +{len(parts) - shown} more"
    return title


def _where(config: HiveConfig, repository: str) -> str:
    url = config.notifications.report_url
    return f"report: {url}" if url else f"details: hive status {repository}"


def _short(alert: str, detail: str) -> str:
    if alert == "stale":
        return f"late {detail}"
    if alert == "never_backed_up":
        return "never backed up"
    return detail


def messages(config: HiveConfig, deliveries: Iterable[Delivery],
             statuses: dict[str, Any], now: datetime) -> list[Message]:
    """Group deliveries per channel into one alert message and one recovery message."""
    host = config.server.name
    grouped: dict[tuple[str, str], list[Delivery]] = {}
    for d in deliveries:
        if d.kind == "clear":
            continue
        kind = "recovery" if d.kind == "recovery" else "alert"
        grouped.setdefault((d.channel, kind), []).append(d)
    out = []
    for (channel, kind), group in sorted(grouped.items()):
        first: dict[tuple[str, str], Delivery] = {}
        for d in sorted(group, key=lambda d: (d.repository, d.alert)):
            first.setdefault((d.repository, d.alert), d)
        items = list(first.values())
        rules = sorted({d.rule for d in group})
        if kind == "alert":
            out.append(_alert(config, host, channel, items, group, rules))
        else:
            out.append(_recovery(config, host, channel, items, group, statuses, now))
    return out


def _alert(config: HiveConfig, host: str, channel: str, items: list[Delivery],
           group: list[Delivery], rules: list[str]) -> Message:
    n = len(items)
    if all(d.alert in BACKUP_ALERTS for d in items):
        prefix = f"{host}: {n} backup{'s' if n != 1 else ''} late: "
        parts = [f"{d.repository} {d.condition.detail}" for d in items if d.condition]
    else:
        prefix = f"{host}: {n} problem{'s' if n != 1 else ''}: "
        parts = [f"{d.repository} {_short(d.alert, d.condition.detail)}"
                 for d in items if d.condition]
    lines = [f"Backup server {host}: {n} alert{'s' if n != 1 else ''}.", ""]
    for d in items[:BODY_ITEMS]:
        if d.condition is None:
            continue
        s = d.condition.status
        again = " (reminder)" if d.kind == "repeat" else ""
        detail = (f": {d.condition.detail}"
                  if d.alert in ("locked", "quota", "key_expiring", "repokey_changed") else "")
        lines.append(f"{d.repository} (owner {s.owner}): {_NAMES[d.alert]}{detail}{again}")
        lines.append(f"  last backup: {_when(s.last_backup)}"
                     + (f" ({age_text(s.age_seconds)} ago)" if s.last_backup else ""))
        lines.append(f"  host: {host}; {_where(config, d.repository)}")
    if n > BODY_ITEMS:
        lines.append(f"... and {n - BODY_ITEMS} more: "
                     + ", ".join(f"{d.repository} ({_NAMES[d.alert]})"
                                 for d in items[BODY_ITEMS:]))
    lines += ["", f"Rules: {', '.join(rules)}. Sent by hive notify."]
    severe = any(d.alert in SEVERE for d in items)
    return Message(channel, "alert", _title(prefix, parts), "\n".join(lines),
                   "failure" if severe else "warning", group)


def _recovery(config: HiveConfig, host: str, channel: str, items: list[Delivery],
              group: list[Delivery], statuses: dict[str, Any], now: datetime) -> Message:
    repos = list(dict.fromkeys(d.repository for d in items))
    prefix = f"{host}: {len(repos)} recovered: "
    lines = [f"Backup server {host}: these alerts have ended.", ""]
    for d in items[:BODY_ITEMS]:
        s = statuses.get(d.repository)
        owner = s.owner if s is not None else config.repositories[d.repository].owner
        lines.append(f"{d.repository} (owner {owner}): {_NAMES[d.alert]} recovered"
                     + (f"; now {s.state}" if s is not None else ""))
        if s is not None:
            lines.append(f"  last backup: {_when(s.last_backup)}"
                         + (f" ({age_text(s.age_seconds)} ago)" if s.last_backup else ""))
        lines.append(f"  host: {host}; {_where(config, d.repository)}")
    if len(items) > BODY_ITEMS:
        lines.append(f"... and {len(items) - BODY_ITEMS} more: "
                     + ", ".join(f"{d.repository} ({_NAMES[d.alert]})"
                                 for d in items[BODY_ITEMS:]))
    return Message(channel, "recovery", _title(prefix, repos), "\n".join(lines), "success",
                   group)


def test_message(config: HiveConfig, channel: str, now: datetime) -> Message:
    host = config.server.name
    return Message(channel, "test", f"{host}: test message from hive notify",
                   f"Channel {channel} of backup server {host} works ({_when(now)}).", "info")
