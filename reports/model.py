"""The report's rows: `hive status`'s evaluation joined with what the queries found.

State and last backup come from `watcher.status.gather`, the code behind `hive status`,
so the page, status.json, the metrics and the terminal always agree, and a change to
what "last backup" means reaches all of them. Nothing here touches the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reports.queries import MIN_FIT_SPAN, Series, Timeline
from schemas.models import HiveConfig
from schemas.sshkeys import parse_public_key
from watcher.status import STATES, RepoStatus

#: Worst first: the banner shows the first state any repository is in.
SEVERITY = ("corrupt", "missing on disk", "locked", "stale", "never backed up", "ok", "disabled")
assert set(SEVERITY) == set(STATES)
WEEK = 7 * 86400


@dataclass
class KeyRow:
    name: str
    owner: str
    type: str
    bits: int | None
    fingerprint: str  # SHA256:..., as `ssh-keygen -l` prints it
    access: str       # full, append-only, import (rsync in), export (rsync out), none
    from_: list[str]
    expires: datetime | None
    expired: bool


@dataclass
class Projection:
    """When the quota fills at the current rate, or why that cannot be said."""

    when: datetime | None
    text: str


@dataclass
class Row:
    """One repository: everything index, owner and group pages show about it."""

    host: str
    status: RepoStatus
    description: str | None
    series: Series
    growth_per_week: float | None  # bytes; None: not enough data
    in_groups: list[str] = field(default_factory=list)  # its group pages (filter by group)

    @property
    def name(self) -> str:
        return self.status.repository

    @property
    def severity(self) -> int:
        return SEVERITY.index(self.status.state)


@dataclass
class RepoPage:
    row: Row
    client_url: str
    keys: list[KeyRow]
    projection: Projection | None  # None: no quota
    timeline: Timeline
    alerts: list[dict[str, Any]] | None  # None: no notify_attempts table


@dataclass
class Summary:
    host: str
    generated: datetime
    counts: dict[str, int]
    worst: str | None
    total: int


@dataclass
class Report:
    summary: Summary
    rows: list[Row]
    pages: list[RepoPage]
    owners: dict[str, list[Row]] = field(default_factory=dict)
    groups: dict[str, list[Row]] = field(default_factory=dict)


def enough(series: Series) -> bool:
    """A slope from measurements minutes apart extrapolates noise to terabytes a week."""
    return (series.slope is not None and series.fit_points >= 2
            and series.fit_span >= MIN_FIT_SPAN)


def growth(series: Series) -> float | None:
    """Bytes per week from the least-squares slope over the last 30 days."""
    return series.slope * WEEK if enough(series) and series.slope is not None else None


def projection(status: RepoStatus, series: Series, now: datetime) -> Projection | None:
    if not status.quota_bytes:
        return None
    quota = status.quota_bytes
    if status.size_bytes is not None and status.size_bytes >= quota:
        return Projection(now, "full now")
    if not enough(series) or series.slope is None or series.intercept is None:
        return Projection(None, "not enough data (hive stats measurements at least a day "
                                "apart within the last 30 days)")
    if series.slope <= 0:
        return Projection(None, "not growing")
    seconds = (quota - series.intercept) / series.slope
    try:
        when = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return Projection(None, "not within this century")
    when = max(when, now)  # the line crosses the quota already: it fills any moment
    return Projection(when, when.strftime("%Y-%m-%d"))


def keys(config: HiveConfig, name: str, now: datetime) -> list[KeyRow]:
    repo = config.repositories[name]
    kind = {"borg": "full", "import": "import (rsync in)", "export": "export (rsync out)",
            "disabled": "none (disabled)"}[repo.mode]
    found = []
    for access, names in ((kind, repo.keys),
                          (kind if repo.mode != "borg" else "append-only",
                           repo.append_only_keys)):
        for key_name in names:
            key = config.keys[key_name]
            public = parse_public_key(key.public_key)
            expires = key.expires_at()
            found.append(KeyRow(
                name=key_name, owner=key.owner, type=public.type, bits=public.bits,
                fingerprint=public.fingerprint, access=access, from_=list(key.from_),
                expires=expires, expired=expires is not None and expires <= now))
    return found


def summary(host: str, rows: list[Row], now: datetime) -> Summary:
    counts = {state: 0 for state in SEVERITY}
    for row in rows:
        counts[row.status.state] += 1
    worst = min((r.status.state for r in rows), key=SEVERITY.index, default=None)
    return Summary(host=host, generated=now, counts=counts, worst=worst, total=len(rows))


def build(config: HiveConfig, statuses: list[RepoStatus], series: dict[str, Series],
          timelines: dict[str, Timeline], alerts: dict[str, list[dict[str, Any]]] | None,
          now: datetime) -> Report:
    host = config.server.name
    rows, pages = [], []
    for status in statuses:
        repo = config.repositories[status.repository]
        found = series.get(status.repository, Series())
        row = Row(host=host, status=status, description=repo.description, series=found,
                  growth_per_week=growth(found))
        rows.append(row)
        pages.append(RepoPage(
            row=row, client_url=config.client_url(status.repository),
            keys=keys(config, status.repository, now),
            projection=projection(status, found, now),
            timeline=timelines.get(status.repository, Timeline()),
            alerts=None if alerts is None else alerts.get(status.repository, [])))
    rows.sort(key=lambda r: (r.severity, r.name))  # worst first, on every list page
    report = Report(summary=summary(host, rows, now), rows=rows, pages=pages)
    # The rule of `hive status --group` (schemas.selection.matches): shared with the group,
    # or owned by one of its members; as a map, not a scan per group.
    member_of: dict[str, set[str]] = {}
    for group, spec in config.groups.items():
        for member in spec.members:
            member_of.setdefault(member, set()).add(group)
    report.owners = {owner: [] for owner in sorted(config.owners)}
    report.groups = {group: [] for group in sorted(config.groups)}
    for row in rows:
        report.owners.setdefault(row.status.owner, []).append(row)
        row.in_groups = sorted(set(row.status.groups) | member_of.get(row.status.owner, set()))
        for group in row.in_groups:
            report.groups.setdefault(group, []).append(row)
    return report
