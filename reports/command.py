"""The click command `hive report`: gather, build, render, swap in.

Imports nothing heavy at module level (`hive` imports this on every call): DuckDB and
jinja2 are imported when the command runs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from watcher.commands import _LOCK_STALE, _error, _file_option, _load

# One DuckDB thread (the other core meanwhile runs `hive status`'s look at the folders)
# and a memory cap: 5,000 repositories with 1M events and 1.8M snapshots need ~130 MB.
DUCKDB_THREADS, DUCKDB_MEMORY = 1, "192MB"


def aggregate(config: Any, names: list[str], paths: list[str],
              now: datetime) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Series, timelines and alerts from DuckDB, under the shared lock `hive status` takes."""
    from reports import queries
    from watcher import store

    host = config.server.name
    with store.read(config.server.state_dir) as con:
        if con is None:
            return {}, {}, None
        con.execute(f"SET threads = {DUCKDB_THREADS}")
        con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
        return (queries.series(con, host, names, paths, now),
                queries.timelines(con, host, names, paths), queries.alerts(con, host, names))


def generate(config: Any, dest: Path, prometheus_file: Path | None,
             lock_stale_after: float = 86_400.0, now: datetime | None = None) -> Any:
    """The whole report: `hive status`'s evaluation, the aggregates, the files."""
    from concurrent.futures import ThreadPoolExecutor

    from reports import model, render
    from watcher import status as status_mod

    now = now or datetime.now(UTC)
    render.check_destination(dest)  # before any work: a wrong -d fails at once
    names = sorted(config.repositories)
    paths = [str(config.repo_path(name)) for name in names]
    # DuckDB works without the GIL: let it aggregate while status looks at the folders.
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(aggregate, config, names, paths, now)
        statuses = status_mod.gather(config, lock_stale_after=lock_stale_after, now=now)
        series, timelines, alerts = pending.result()
    report = model.build(config, statuses, series, timelines, alerts, now)
    render.write(report, config, dest, prometheus_file)
    return report


@click.command()
@_file_option
@click.option("-d", "--dest", type=click.Path(file_okay=False), default=None,
              help="Folder to write. Default: <state_dir>/report. It is replaced as a whole "
                   "(a new folder is built beside it and swapped in), so it must be one "
                   "hive report wrote, or empty, or absent.")
@click.option("--prometheus-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics here, by rename (for node_exporter's textfile "
                   "collector, e.g. /var/lib/prometheus/node-exporter/hive.prom).")
@_LOCK_STALE
def report(config_file: str | None, dest: str | None, prometheus_file: str | None,
           lock_stale_after: float) -> int:
    """Write the static status page, status.json and metrics.prom.

    \b
    DIR/index.html           every repository: state, last backup, size, quota, growth
    DIR/repos/NAME.html      client URL, borgmatic block, keys, size chart, timeline
    DIR/owners/O.html, DIR/groups/G.html   the same table, only theirs
    DIR/status.json          the machine-readable status (README documents it)
    DIR/metrics.prom         Prometheus text format
    Pages are self-contained (no network, work from file://). Serve DIR read-only with any
    web server, and run this from a timer (deploy/systemd/hive-report.timer: hourly).
    Exit codes: 0 written, 1 error (nothing replaced).
    """
    from reports.render import ReportError
    from watcher.store import StoreError

    config = _load(config_file, "text")
    folder = Path(dest) if dest else config.server.state_dir / "report"
    try:
        found = generate(config, folder.absolute(),
                         Path(prometheus_file).absolute() if prometheus_file else None,
                         lock_stale_after)
    except (ReportError, StoreError) as exc:
        return _error(str(exc))
    summary = found.summary
    counts = ", ".join(f"{n} {state}" for state, n in summary.counts.items() if n)
    click.echo(f"Wrote {folder}: {summary.total} repositories ({counts or 'none'}).")
    if prometheus_file:
        click.echo(f"Wrote {prometheus_file}.")
    return 0
