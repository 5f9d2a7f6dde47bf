"""What the report needs from DuckDB, asked in a few set-based statements.

Everything that grows with the history (snapshots, events, journal rows) is aggregated
here, inside DuckDB, for all repositories at once: the chart points are formatted into
SVG coordinate strings by SQL, growth and the fill date are DuckDB's `regr_slope` /
`regr_intercept`, and a timeline is the newest rows per repository (`QUALIFY
row_number()`). Python only ever sees a bounded number of rows per repository, so 5,000
repositories and millions of events render in seconds.

Repositories are matched by their folder (`path`, from `HiveConfig.repo_path`) and
`host`, as `hive status` matches them: a folder name alone is not unique across users
or hosts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

CHART_DAYS = 90   # the size charts show this much history
FIT_DAYS = 30     # growth and the fill date: least squares over this much
MIN_FIT_SPAN = 86400  # ... from measurements at least this far apart (seconds), else no guess
BUCKETS = 60      # at most this many points per chart
SPARK_W, SPARK_H = 100, 24
CHART_W, CHART_H = 600, 200
TIMELINE = 20     # newest timeline rows per repository page
ALERTS = 20       # newest alerts per repository page
#: What the report shows of each message `hive notify` sent (never a channel's URL).
ALERT_COLUMNS = ("time", "alert", "kind", "channel", "result")


@dataclass
class Series:
    """Size history of one repository, ready to draw, and the least-squares fit."""

    spark: str = ""        # SVG polyline points in a SPARK_W x SPARK_H box
    chart: str = ""        # SVG polyline points in a CHART_W x CHART_H box
    first: datetime | None = None
    last: datetime | None = None
    max_bytes: int | None = None
    points: int = 0
    slope: float | None = None       # bytes per second over FIT_DAYS
    intercept: float | None = None   # bytes at epoch 0 (for the fill date)
    fit_points: int = 0
    fit_span: float = 0.0            # seconds between the first and last fitted measurement


@dataclass
class Item:
    """One row of a repository's timeline: an event the watcher saw or an applied change."""

    time: datetime
    shown: str  # the time as the page prints it (formatted by DuckDB)
    what: str
    who: str | None
    detail: str | None
    origin: str  # watch | apply


@dataclass
class Timeline:
    items: list[Item] = field(default_factory=list)
    total: int = 0


_REPOS = """repos AS (
    SELECT unnest($names::VARCHAR[]) AS repository, unnest($paths::VARCHAR[]) AS path)"""
_REPOS_ID = """repos AS (
    SELECT unnest($names::VARCHAR[]) AS repository, unnest($paths::VARCHAR[]) AS path,
           generate_subscripts($names::VARCHAR[], 1) AS id)"""


def _params(host: str, names: list[str], paths: list[str], **more: Any) -> dict[str, Any]:
    return {"host": host, "names": names, "paths": paths, **more}


def series(con: Any, host: str, names: list[str], paths: list[str],
           now: datetime) -> dict[str, Series]:
    """Size history per repository: chart points (bucketed, formatted by DuckDB) and the fit."""
    # Rows are keyed by a small integer from here on, not the path: 1.8 million
    # snapshots with a path string each would hold hundreds of MB.
    sql = f"""
    WITH {_REPOS_ID},
    s AS MATERIALIZED (
        SELECT r.id, epoch(x.time) AS t, x.size_bytes AS size
        FROM snapshots x JOIN repos r ON x.path = r.path
        WHERE x.host = $host AND x.present AND x.size_bytes IS NOT NULL
          AND x.time > $now::TIMESTAMPTZ - INTERVAL {CHART_DAYS} DAY
          AND x.time <= $now::TIMESTAMPTZ),
    span AS MATERIALIZED (
        SELECT id, min(t) AS t0, max(t) AS t1, max(size) AS ymax, count(*) AS n,
               regr_slope(size, t) FILTER (WHERE t > $fit_from) AS slope,
               regr_intercept(size, t) FILTER (WHERE t > $fit_from) AS icpt,
               count(DISTINCT t) FILTER (WHERE t > $fit_from) AS fit_n,
               max(t) FILTER (WHERE t > $fit_from) - min(t) FILTER (WHERE t > $fit_from)
                   AS fit_span
        FROM s GROUP BY id),
    b AS (
        SELECT s.id,
               CASE WHEN span.t1 = span.t0 THEN 0
                    ELSE floor({BUCKETS - 1}.999 * (s.t - span.t0) / (span.t1 - span.t0))
               END AS bucket,
               max(s.size) AS size, max(s.t) AS t
        FROM s JOIN span USING (id) GROUP BY ALL),
    p AS (
        SELECT b.id, b.t,
               coalesce((b.t - span.t0) / nullif(span.t1 - span.t0, 0), 0) AS x,
               coalesce(b.size / nullif(span.ymax, 0), 0) AS y
        FROM b JOIN span USING (id)),
    drawn AS (
        SELECT id,
               string_agg(printf('%.1f,%.1f', 1 + x * {SPARK_W - 2},
                                 {SPARK_H - 1} - y * {SPARK_H - 2}), ' ' ORDER BY t) AS spark,
               string_agg(printf('%.1f,%.1f', x * {CHART_W},
                                 {CHART_H - 2} - y * {CHART_H - 10}), ' ' ORDER BY t) AS chart,
               count(*) AS drawn_n,
               arg_max(y, t) AS last_y
        FROM p GROUP BY id)
    SELECT repos.repository, drawn.spark, drawn.chart, drawn.drawn_n, drawn.last_y,
           to_timestamp(span.t0), to_timestamp(span.t1), span.ymax, span.n, span.slope,
           span.icpt, span.fit_n, span.fit_span
    FROM span JOIN drawn USING (id) JOIN repos USING (id)
    """
    found: dict[str, Series] = {}
    for (name, spark, chart, drawn_n, last_y, first, last, ymax, n, slope, icpt, fit_n,
         fit_span) in con.execute(sql, _params(host, names, paths, now=now,
                                             fit_from=now.timestamp() - FIT_DAYS * 86400)
                                 ).fetchall():
        if drawn_n == 1:  # one measurement: a flat line across, not an invisible dot
            spark += f" {SPARK_W - 1:.1f},{SPARK_H - 1 - last_y * (SPARK_H - 2):.1f}"
            chart += f" {CHART_W:.1f},{CHART_H - 2 - last_y * (CHART_H - 10):.1f}"
        found[name] = Series(spark=spark, chart=chart, first=first, last=last,
                             max_bytes=ymax, points=n, slope=slope, intercept=icpt,
                             fit_points=fit_n or 0, fit_span=fit_span or 0.0)
    return found


def timelines(con: Any, host: str, names: list[str], paths: list[str],
              limit: int = TIMELINE) -> dict[str, Timeline]:
    """The newest `limit` events and applied changes per repository, and how many exist."""
    # The newest `limit` of each source per repository first (a cutoff time per folder
    # from DuckDB's top-n `max(time, n)`: much cheaper than ranking every event), then the
    # newest `limit` of those.
    sql = f"""
    WITH {_REPOS},
    e_cut AS (SELECT path, list_min(max(time, $limit)) AS cut, count(*) AS n FROM events
              WHERE host = $host AND path IN (SELECT path FROM repos) GROUP BY path),
    j_cut AS (SELECT repository, list_min(max(time, $limit)) AS cut, count(*) AS n
              FROM journal
              WHERE host = $host AND record_type = 'change' AND time IS NOT NULL
                AND repository IN (SELECT repository FROM repos) GROUP BY repository),
    items AS (
        SELECT r.repository, e.time, e.kind AS what, NULL::VARCHAR AS who,
               CAST(e.details AS VARCHAR) AS detail, 'watch' AS origin
        FROM events e JOIN e_cut c ON e.path = c.path AND e.time >= c.cut
        JOIN repos r ON r.path = e.path
        WHERE e.host = $host
        UNION ALL
        SELECT j.repository, j.time, concat_ws(' ', j.action, j.resource_kind, j.name),
               j.who, j.error, 'apply'
        FROM journal j JOIN j_cut c ON j.repository = c.repository AND j.time >= c.cut
        WHERE j.host = $host AND j.record_type = 'change'),
    totals AS (
        SELECT r.repository, coalesce(e_cut.n, 0) + coalesce(j_cut.n, 0) AS total
        FROM repos r LEFT JOIN e_cut USING (path) LEFT JOIN j_cut USING (repository))
    SELECT repository, time, strftime(time, '%Y-%m-%d %H:%M:%S'), what, who, detail, origin,
           total
    FROM items JOIN totals USING (repository)
    QUALIFY row_number() OVER (PARTITION BY repository ORDER BY time DESC) <= $limit
    ORDER BY repository, time DESC
    """
    found: dict[str, Timeline] = {}
    for name, time, shown, what, who, detail, origin, total in con.execute(
            sql, _params(host, names, paths, limit=limit)).fetchall():
        entry = found.setdefault(name, Timeline(total=total))
        entry.items.append(Item(time=time, shown=shown, what=what, who=who, detail=detail,
                                origin=origin))
    return found


def alerts(con: Any, host: str, names: list[str],
           limit: int = ALERTS) -> dict[str, list[dict[str, Any]]] | None:
    """The newest messages `hive notify` tried to send about each repository from this
    host (its `notify_attempts` log: one row per message, rule and alert, listing the
    repositories); None when this database has no such table. Only columns that cannot
    hold a secret: never the error text (it may quote a channel's answer)."""
    if not con.execute("SELECT 1 FROM information_schema.tables "
                       "WHERE table_name = 'notify_attempts'").fetchall():
        return None
    found: dict[str, list[dict[str, Any]]] = {}
    for repository, *row in con.execute(
            "SELECT repository, time, alert, kind, channel, result FROM ("
            "  SELECT unnest(repositories) AS repository, time, alert, kind, channel, result"
            "  FROM notify_attempts WHERE host = $host AND kind <> 'test')"
            " WHERE repository IN (SELECT unnest($names::VARCHAR[]))"
            " QUALIFY row_number() OVER (PARTITION BY repository ORDER BY time DESC) <= $limit"
            " ORDER BY repository, time DESC",
            {"host": host, "names": names, "limit": limit}).fetchall():
        found.setdefault(repository, []).append(dict(zip(ALERT_COLUMNS, row, strict=True)))
    return found
