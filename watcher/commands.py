"""The click commands `hive watch`, `hive stats` and `hive status`.

`hive` imports this module on every call (even `hive validate`), so it imports nothing
heavy at module level: DuckDB, inotify_simple and the watcher's modules are imported
inside the commands that need them.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from hive.common import EXIT_ERROR, EXIT_OK, EXIT_TROUBLE, Seconds, duration, fail, load
from hive.common import file_option as _file_option
from watcher.states import STATES as _STATES

if TYPE_CHECKING:
    from schemas.models import HiveConfig


_LOCK_STALE = click.option(
    "--lock-stale-after", default="24h", show_default=True, callback=duration,
    help="A lock is stale (left behind) when its holder, a process on this host, is gone, "
         "or when it is older than this.")


def _load(config_file: str | None, fmt: str) -> HiveConfig:
    return load(config_file, fmt)[0]


def _error(message: str, fmt: str = "text") -> int:
    if fmt == "json":
        fail(message, fmt)  # the record; people see the line on stderr either way
    return fail(message)


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


# ----------------------------------------------------------------------------- watch


@click.command()
@_file_option
@click.option("--flush-interval", type=Seconds(0.05, 3600), default=0.5,
              show_default=True, help="Seconds between writes of buffered events.")
@click.option("--rescan-interval", default="5m", show_default=True, callback=duration,
              help="How often every repository is compared with the disk, as a safety net.")
@_LOCK_STALE
@click.option("--lock-check-interval", type=Seconds(0.05, 3600), default=10.0,
              show_default=True, help="Seconds between looks at held locks (for lock_stale).")
@click.option("-v", "--verbose", is_flag=True, help="Log every repository event.")
def watch(config_file: str | None, flush_interval: float, rescan_interval: float,
          lock_stale_after: float, lock_check_interval: float, verbose: bool) -> int:
    """Watch repos_root with inotify and record repository events in DuckDB.

    \b
    Events: created, opened, closed, updated (a new commit), deleted, lock_stale.
    They go to <state_dir>/events.duckdb in batches (table 'events'), with the
    apply journal (table 'journal'). Runs until SIGTERM or Ctrl-C, then writes
    what is buffered and exits 0. 'hive status' and 'hive stats' work meanwhile.
    On start, and after an inotify queue overflow, every repository is compared with
    what was recorded, so nothing is counted twice or lost across restarts.
    """
    import logging

    config = _load(config_file, "text")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s hive watch: %(message)s")
    from watcher import store
    from watcher.inotify_loop import Watcher, WatchError

    watcher = Watcher(config.server.repos_root, config.server.state_dir, config.server.name,
                      flush_interval=flush_interval, rescan_interval=rescan_interval,
                      lock_stale_after=lock_stale_after,
                      lock_check_interval=lock_check_interval)
    try:
        return watcher.run()
    except (WatchError, store.StoreError) as exc:
        return _error(str(exc))


# ----------------------------------------------------------------------------- stats


_KEY_CHANGED = ("the key in the config of repository {repo} changed since Hive last kept "
                "it. If its owner did not change the passphrase, a client replaced it (an "
                "append-only key can): every key it had is kept in {copy}; put the right one "
                "back with 'borg key import URL FILE'")


@click.command()
@click.argument("repositories", nargs=-1)
@_file_option
@click.option("--no-record", is_flag=True, help="Only print; append no snapshot rows.")
@click.option("--output", "-o", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="json: one JSON object per line, a 'version' record "
                                      "first, one 'repository' record each, a 'summary' last.")
def stats(repositories: tuple[str, ...], config_file: str | None, no_record: bool,
          fmt: str) -> int:
    """Measure repositories and append one snapshot row each to DuckDB.

    \b
    Per repository: size on disk (as du counts it), number of files, last access
    (the last borg session), last update (the last commit), lock state, quota and
    quota use, and the repository layout (borg1/borg2 and its version). Every
    repository in hive.yaml and every repository folder on disk, or only those named.
    Symlinks are never followed. Meant for a timer; the rows (table 'snapshots') give
    growth over time.

    \b
    It also keeps a copy of each borg 1.x repository's key (repokey mode) in
    <state_dir>/repokeys/, where no client can reach it: an append-only key can still
    replace the key in a repository's config, and without it no archive can be read.
    A key that changed is a warning and an event (kind 'repokey_changed').
    """
    from hive import output

    if fmt == "json":
        output.emit_version()
    config = _load(config_file, fmt)
    from watcher import stats as stats_mod
    from watcher import store

    todo = stats_mod.targets(config, repositories)
    unknown = sorted(set(repositories) - {t[0] for t in todo})
    if unknown:
        return _error(f"no such repository: {', '.join(unknown)}", fmt)
    results = [stats_mod.measure(*t) for t in todo]
    if not no_record:
        stats_mod.keep_repokeys(config.server.state_dir, results)
    problems = sum(len(r.errors) for r in results)
    if not no_record:
        try:
            stats_mod.record(config.server.state_dir, config.server.name, results)
        except (store.StoreError, OSError) as exc:
            return _error(str(exc), fmt)
    if fmt == "json":
        for r in results:
            data = {k: v.isoformat() if isinstance(v, datetime) else v
                    for k, v in r.__dict__.items()}
            output.emit("repository", host=config.server.name, **data)
        output.emit("summary", repositories=len(results), recorded=not no_record,
                    errors=problems)
    else:
        rows = [[r.repository, r.unix_user, "missing" if not r.present else r.layout or "empty",
                 human_bytes(r.size_bytes), "-" if r.files is None else str(r.files),
                 _when(r.last_access), _when(r.last_update),
                 "-" if r.locked is None else ("locked" if r.locked else "no"),
                 human_bytes(r.quota_bytes) if r.quota_bytes else "-",
                 f"{r.quota_used:.1%}" if r.quota_used is not None else "-"]
                for r in results]
        _table(["REPOSITORY", "USER", "LAYOUT", "SIZE", "FILES", "LAST ACCESS", "LAST UPDATE",
                "LOCK", "QUOTA", "USED"], rows)
        for r in results:
            for error in r.errors:
                click.echo(click.style("Warning: ", fg="yellow") + error, err=True)
            if r.repokey_changed:
                click.echo(click.style("Warning: ", fg="yellow") + _KEY_CHANGED.format(
                    repo=r.repository, copy=os.path.dirname(r.repokey_copy or "")), err=True)
        if not no_record:
            click.echo(f"\n{len(results)} snapshot rows appended to "
                       f"{config.server.state_dir}/events.duckdb.")
    return EXIT_ERROR if problems else EXIT_OK


# ----------------------------------------------------------------------------- status


@click.command()
@click.argument("repositories", nargs=-1, metavar="[REPO]...")
@_file_option
@click.option("--owner", multiple=True, help="Only repositories of this owner (repeatable).")
@click.option("--group", multiple=True,
              help="Only repositories shared with this group or owned by one of its members "
                   "(repeatable).")
@click.option("--state", "states", multiple=True, type=click.Choice(_STATES),
              help="Only repositories in this state (repeatable).")
@_LOCK_STALE
@click.option("--output", "-o", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True,
              help="json: ONE JSON document, a list with an object per repository "
                   "(repository, owner, mode, state, last_backup as ISO 8601 or null, "
                   "size_bytes, quota_bytes, ...), not JSON lines.")
def status(repositories: tuple[str, ...], config_file: str | None, owner: tuple[str, ...],
           group: tuple[str, ...], states: tuple[str, ...], lock_stale_after: float,
           fmt: str) -> int:
    """Show each repository's state: is it being backed up?

    With REPO names: only those, each followed by its client URL and a BORG_REPO line
    to paste on the client (-o json always has 'url' and 'borg_repo').

    \b
    States: ok; stale (last backup older than its stale_after, default
    server.stale_after, 26h); never backed up; disabled (mode: disabled); locked (a
    lock left behind); missing on disk; corrupt (its files say what no borg writes,
    e.g. an index number beyond 32 bits: look with 'borg check').
    Exit codes for monitoring: 0 all shown are ok (or disabled), 2 some are stale or
    in trouble, 1 error. Sizes come from the last 'hive stats' run.
    --output json prints one JSON document, a list, unlike other commands' JSON lines.
    """
    config = _load(config_file, "text")
    from watcher import status as status_mod
    from watcher import store

    unknown = [o for o in owner if o not in config.owners]
    unknown += [g for g in group if g not in config.groups]
    unknown += [r for r in repositories if r not in config.repositories]
    if unknown:
        return _error(f"not in {config_file or 'hive.yaml'}: {', '.join(unknown)}")
    try:
        found = status_mod.gather(config, owner, group, lock_stale_after)
    except store.StoreError as exc:
        return _error(str(exc))
    if repositories:
        found = [s for s in found if s.repository in repositories]
    if states:
        found = [s for s in found if s.state in states]
    trouble = any(s.state in status_mod.TROUBLE for s in found)
    if fmt == "json":
        host = config.server.name  # each object names it: hosts' lists may be merged
        click.echo(json.dumps([{"host": host, **s.as_json()} for s in found], indent=2))
        return EXIT_TROUBLE if trouble else EXIT_OK
    rows = []
    for s in found:
        colour = {"ok": "green", "disabled": None}.get(s.state, "red")
        quota = (f"{s.quota_used:.1%} of {human_bytes(s.quota_bytes)}"
                 if s.quota_used is not None else
                 f"- of {human_bytes(s.quota_bytes)}" if s.quota_bytes else "-")
        rows.append([s.repository, s.owner, s.mode, s.state, _when(s.last_backup),
                     human_age(s.age_seconds), human_bytes(s.size_bytes), quota, colour or ""])
    headers = ["REPOSITORY", "OWNER", "MODE", "STATE", "LAST BACKUP", "AGE", "SIZE",
               "QUOTA USE"]
    if not rows:
        click.echo("No repositories match.")
        return EXIT_OK
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)]
        if row[-1]:
            cells[3] = click.style(cells[3], fg=row[-1])
        click.echo("  ".join(cells).rstrip())
    for s in found:
        if s.problem:
            click.echo(click.style("Warning: ", fg="yellow")
                       + f"{s.repository} ({s.path}): {s.problem}", err=True)
    counts = {state: sum(s.state == state for s in found) for state in _STATES}
    click.echo("\n" + f"{len(found)} repositories on {config.server.name}: "
               + ", ".join(f"{n} {state}" for state, n in counts.items() if n) + ".")
    for s in found if repositories else []:
        click.echo(f"\n{s.repository} ({s.mode}), as unix user {s.unix_user}:\n  URL: {s.url}")
        if s.borg_repo:
            click.echo(f"  {s.borg_repo}")
    return EXIT_TROUBLE if trouble else EXIT_OK
