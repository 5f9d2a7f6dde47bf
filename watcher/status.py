"""`hive status`: one line per repository in hive.yaml, and an exit code a check can use.

What it knows comes from three places, so that it answers even where one is missing:
the file (owner, mode, quota, stale_after), a short look at each repository folder (is it
there, is it locked, its last commit: the same scan the watcher uses) and the database
(the last backup the watcher saw, the last size `hive stats` measured). Run as a user who
cannot read the repositories, it relies on what the watcher recorded.

"Last backup" is the last commit that was a backup (`borg create`, its checkpoints
included), read from the segments' entry headers (borgrepo/segments.py) for borg 1.x and
from the `archives/` entries (borgrepo/archives.py) for borg 2 betas: a client that
only prunes and compacts, as borgmatic does on every run, no longer looks backed up.
`last_activity` is the last commit of any kind. With no watcher, status classifies what
it finds on disk; commits whose segments a compaction removed are not guessed at.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from borgrepo import archives as borg_archives
from borgrepo import layout as borg_layout
from borgrepo import locks as borg_locks
from borgrepo import segments
from schemas.models import HiveConfig
from schemas.selection import matches
from watcher import events as ev
from watcher.states import STATES, TROUBLE  # noqa: F401  (status_mod.TROUBLE)


@dataclass
class Recorded:
    """What the database holds about one repository path."""

    last_backup: datetime | None = None
    last_activity: datetime | None = None
    size_bytes: int | None = None
    size_time: datetime | None = None
    state: ev.RepoState | None = None
    repokey_changed: datetime | None = None  # the last time `hive stats` saw a new key


@dataclass
class RepoStatus:
    repository: str
    owner: str
    mode: str
    state: str
    last_backup: datetime | None
    age_seconds: float | None
    size_bytes: int | None
    quota_bytes: int | None
    quota_used: float | None
    locked: bool | None
    path: str
    unix_user: str
    groups: list[str] = field(default_factory=list)
    stale_after_seconds: int = 0
    size_measured: datetime | None = None
    lock_since: datetime | None = None
    problem: str | None = None  # why the state is "corrupt": what makes no sense
    last_activity: datetime | None = None  # the last commit of any kind
    url: str = ""  # what a client gives borg: HiveConfig.client_url
    repokey_changed: datetime | None = None  # `hive stats` saw the key in config change

    @property
    def borg_repo(self) -> str | None:
        """A line to paste on the client; only borg-mode repositories are borg's to open."""
        return f"export BORG_REPO='{self.url}'" if self.mode == "borg" and self.url else None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("last_backup", "size_measured", "lock_since", "last_activity",
                    "repokey_changed"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        if data["age_seconds"] is not None:
            data["age_seconds"] = round(data["age_seconds"])
        data["borg_repo"] = self.borg_repo
        return data


@dataclass
class Disk:
    """One look at the folder: state None = not there; readable False = not allowed."""

    state: ev.RepoState | None
    readable: bool = True
    holders_alive: bool | None = None
    classified: bool = False          # last_backup was read from segments or archives/
    last_backup: float | None = None  # then: the last commit that was a backup


def _ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


def evaluate(config: HiveConfig, repository: str, disk: Disk, recorded: Recorded, now: datetime,
             lock_stale_after: float) -> RepoStatus:
    """The status of one repository, from the file, the disk and the database (pure)."""
    repo = config.repositories[repository]
    user = config.user_name(repository)
    path = str(config.repo_path(repository))
    state = disk.state if disk.readable else recorded.state
    last = recorded.last_backup
    activity = recorded.last_activity
    if disk.readable and disk.state is not None:
        if disk.classified:
            on_disk = _ts(disk.last_backup)
        else:  # not classified (a repository whose files make no sense)
            on_disk = _ts(disk.state.commit_time) if disk.state.backed_up else None
        if on_disk is not None and (last is None or on_disk > last):
            last = on_disk
        commit = _ts(disk.state.commit_time)
        if commit is not None and (activity is None or commit > activity):
            activity = commit
    age = (now - last).total_seconds() if last is not None else None
    stale_after = config.stale_after_seconds(repository)
    locked = state.locked if state is not None else None
    if repo.mode == "disabled":
        verdict = "disabled"
    elif disk.readable and disk.state is None:
        verdict = "missing on disk"
    elif state is not None and state.problem is not None:
        # read from disk, or (for a user who may not open the folder) what the watcher saw
        verdict = "corrupt"
    elif state is not None and ev.is_stale_lock(state, now.timestamp(), lock_stale_after,
                                                disk.holders_alive if disk.readable else None):
        verdict = "locked"
    elif last is None:
        verdict = "never backed up"
    elif age is not None and age > stale_after:
        verdict = "stale"
    else:
        verdict = "ok"
    quota = repo.quota_bytes
    size = recorded.size_bytes
    return RepoStatus(
        repository=repository, owner=repo.owner, mode=repo.mode, state=verdict,
        last_backup=last, age_seconds=age, size_bytes=size, quota_bytes=quota,
        quota_used=(size / quota) if size is not None and quota else None, locked=locked,
        path=path, unix_user=user, groups=list(repo.groups),
        stale_after_seconds=stale_after, size_measured=recorded.size_time,
        lock_since=_ts(state.lock_since) if state is not None else None,
        problem=state.problem if state is not None else None,
        last_activity=activity,
        url=config.client_url(repository), repokey_changed=recorded.repokey_changed)


def look(path: str) -> Disk:
    """Scan a repository folder as status needs it; never raises for missing or denied."""
    try:
        state = borg_layout.scan_repository(path)
    except PermissionError:
        return Disk(None, readable=False)
    if state is None:
        return Disk(None)
    alive = borg_locks.holders_alive(borg_locks.lock_holders(path, state)) if state.locked else None
    if state.layout == ev.BORG1 and state.transaction is not None and state.problem is None:
        per_dir = segments.segments_per_dir(borg_layout.read_small(f"{path}/config"))
        backup = segments.last_backup(path, state.transaction, per_dir)
        return Disk(state, holders_alive=alive, classified=True,
                    last_backup=backup.time if backup is not None else None)
    if state.layout == ev.BORG2 and state.problem is None:
        # borg 2: the newest archive entry written (a soft-deleted one too: it was a backup)
        newest = borg_archives.listing(path).newest_written
        return Disk(state, holders_alive=alive, classified=True,
                    last_backup=newest / 1e9 if newest is not None else None)
    return Disk(state, holders_alive=alive)


def recorded_by_path(con: Any, host: str) -> dict[str, Recorded]:
    """The last backup event, last snapshot, watcher state and key change per repository
    path."""
    found: dict[str, Recorded] = {}
    # `backup` is true for commits classified as backups (and, in events recorded before
    # classification existed, for every commit after borg init's).
    for path, last, activity in con.execute(
            "SELECT path, max(time) FILTER (WHERE details->>'backup' = 'true'), max(time) "
            "FROM events WHERE host = $1 AND kind = 'updated' GROUP BY path",
            [host]).fetchall():
        entry = found.setdefault(path, Recorded())
        entry.last_backup, entry.last_activity = last, activity
    for path, when in con.execute(
            "SELECT path, max(time) FROM events WHERE host = $1 AND kind = 'repokey_changed' "
            "GROUP BY path", [host]).fetchall():
        found.setdefault(path, Recorded()).repokey_changed = when
    for path, size, when in con.execute(
            "SELECT path, arg_max(size_bytes, time), max(time) FROM snapshots "
            "WHERE host = $1 AND present GROUP BY path", [host]).fetchall():
        entry = found.setdefault(path, Recorded())
        entry.size_bytes, entry.size_time = size, when
    for (path, layout, transaction, commit_time, archives, locks, lock_since,
         problem) in con.execute(
            "SELECT path, layout, transaction, commit_time, archives, locks, lock_since, "
            "problem FROM repository_state WHERE host = $1", [host]).fetchall():
        found.setdefault(path, Recorded()).state = ev.RepoState(
            layout=layout, transaction=transaction,
            commit_time=commit_time.timestamp() if commit_time else None,
            archives=bool(archives), locks=frozenset(locks or ()),
            lock_since=lock_since.timestamp() if lock_since else None, problem=problem)
    return found


def gather(config: HiveConfig, owners: tuple[str, ...] = (), groups: tuple[str, ...] = (),
           lock_stale_after: float = 86_400.0, now: datetime | None = None) -> list[RepoStatus]:
    from watcher import store

    now = now or datetime.now(UTC)
    host = config.server.name
    with store.read(config.server.state_dir) as con:
        recorded = recorded_by_path(con, host) if con is not None else {}
    result = []
    for name in sorted(config.repositories):
        if not matches(config, name, owners, groups):
            continue
        path = str(config.repo_path(name))
        disk = look(path) if config.repositories[name].mode != "disabled" else Disk(None,
                                                                                    False)
        result.append(evaluate(config, name, disk, recorded.get(path, Recorded()), now,
                               lock_stale_after))
    return result
