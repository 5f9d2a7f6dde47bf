"""Several Hive hosts: their DuckDB files merged into one, and one LDAP directory shared.

The same repository name (and folder) lives on two hosts, `east` and `west`. Each host's
events.duckdb is written through watcher.store (the writers' own code), then the two files
are merged into a third one by ATTACH, as a fleet-wide view is built. Every reader (`hive
status`, `hive report`, its status.json and metrics, `hive notify`'s memory, the report's
timeline) run with east's hive.yaml over the merged file must show east's facts only.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
from conftest import hive, write_config

from notifications import state as notify_state
from watcher import store
from watcher.stats import COLUMNS as SNAPSHOT_COLUMNS

NOW = datetime.now(UTC).replace(microsecond=0)
#: host -> (size_bytes, hours since its last backup, timeline events, notify alert).
#: West is measured later, so a host-blind "newest" would pick west's.
HOSTS = {"east": (1_000_000, 2, 3, None), "west": (7_777_777_000, 100, 25, "stale")}
TABLES = ("events", "snapshots", "journal", "repository_state", "watcher_log",
          "notify_attempts", "notify_state")


def host_config(folder: Path, host: str) -> Path:
    cfg = write_config(folder, "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n")
    cfg.write_text(cfg.read_text().replace("name: test1", f"name: {host}")
                   .replace("repos_root: ./repos", "repos_root: /srv/hive-multi/repos"))
    return cfg


def record_host(state_dir: Path, host: str, path: str) -> None:
    size, hours, events, alert = HOSTS[host]
    last = NOW - timedelta(hours=hours)
    snap = dict.fromkeys(SNAPSHOT_COLUMNS)
    snap.update(time=NOW - timedelta(minutes=5 if host == "east" else 1), host=host,
                repository="r1", unix_user="bh-r1", path=path, in_config=True, present=True,
                size_bytes=size)
    rows = [(last - timedelta(hours=i), host, "r1", "bh-r1", path, "updated", "inotify",
             json.dumps({"backup": True, "transaction": 10 - i})) for i in range(events)]
    with store.write(state_dir) as con:
        store.insert(con, "snapshots", SNAPSHOT_COLUMNS, [tuple(snap[c] for c in
                                                               SNAPSHOT_COLUMNS)])
        store.insert(con, "events", store.EVENT_COLUMNS, rows)
        store.insert(con, "journal", ("time", "host", "run", "record_type", "action",
                                      "resource_kind", "name", "repository"),
                     [(last, host, f"run-{host}", "change", "create", "directory",
                       f"{host}-only-change", "r1")])
        if alert:
            store.insert(con, "notify_state", ("host", "rule", "channel", "repository",
                                               "alert", "first_sent", "last_sent", "sends"),
                         [(host, "ops", "mail", "r1", alert, last, last, 3)])


def merge(sources: dict[str, Path], into: Path) -> None:
    """One file holding every host's rows: the schema by Hive's own migrations, the rows
    by ATTACH + INSERT ... SELECT, table by table."""
    with store.write(into):
        pass
    con = duckdb.connect(str(into / store.DB_NAME))
    for host, state_dir in sources.items():
        con.execute(f"ATTACH '{state_dir / store.DB_NAME}' AS {host} (READ_ONLY)")
        for table in TABLES:
            con.execute(f"INSERT INTO {table} SELECT * FROM {host}.{table}")
        con.execute(f"DETACH {host}")
    con.close()


def test_readers_over_a_merged_file_keep_the_hosts_apart(tmp_path: Path) -> None:
    configs = {}
    for host in HOSTS:
        (tmp_path / host).mkdir()
        configs[host] = host_config(tmp_path / host, host)
        record_host(tmp_path / host / "state", host, "/srv/hive-multi/repos/bh-r1/r1")
    merged = tmp_path / "merged"
    merged.mkdir()
    (merged / "state").mkdir()
    merge({h: tmp_path / h / "state" for h in HOSTS}, merged / "state")
    cfg = host_config(merged, "east")
    con = duckdb.connect(str(merged / "state" / store.DB_NAME), read_only=True)
    assert con.execute("SELECT count(DISTINCT host) FROM snapshots").fetchone() == (2,)
    con.close()

    status = hive("status", "-f", str(cfg), "-o", "json")
    assert status.returncode in (0, 2), status.stdout + status.stderr
    (row,) = json.loads(status.stdout)
    assert row["host"] == "east", row
    text = hive("status", "-f", str(cfg))
    assert "1 repositories on east: " in text.stdout, text.stdout + text.stderr
    assert row["size_bytes"] == HOSTS["east"][0], row
    assert datetime.fromisoformat(row["last_backup"]) == NOW - timedelta(hours=2), row

    assert notify_state.load_sent(merged / "state", "east") == {}
    assert len(notify_state.load_sent(merged / "state", "west")) == 1

    report = hive("report", "-f", str(cfg), "-d", str(tmp_path / "site"))
    assert report.returncode == 0, report.stdout + report.stderr
    site = json.loads((tmp_path / "site" / "status.json").read_text())
    assert site["host"] == "east"
    (repo,) = site["repositories"]
    assert repo["host"] == "east" and repo["size_bytes"] == HOSTS["east"][0], repo
    metrics = (tmp_path / "site" / "metrics.prom").read_text()
    assert 'host="west"' not in metrics and "7777777000" not in metrics
    assert 'hive_repository_size_bytes{host="east",repository="r1",owner="alice"} 1000000' \
        in metrics
    page = (tmp_path / "site" / "repos" / "r1.html").read_text()
    assert "east-only-change" in page and "west-only-change" not in page
    assert page.count("<td>watch</td>") == HOSTS["east"][2]  # west's 25 events not shown


def test_the_report_shows_the_alerts_hive_notify_sent_on_this_host(tmp_path: Path) -> None:
    """`hive notify` logs into `notify_attempts` (notifications/state.py, its own writer);
    the repository page lists those of this host, never another host's."""
    from notifications.alerts import Delivery

    for host in HOSTS:
        (tmp_path / host).mkdir()
    cfg = host_config(tmp_path / "east", "east")
    state_dir = tmp_path / "east" / "state"
    record_host(state_dir, "east", "/srv/hive-multi/repos/bh-r1/r1")
    sent = [notify_state.Attempt("mail", "alert", [Delivery("ops", "mail", "r1", "stale",
                                                            "new", None)], None)]
    notify_state.record(state_dir, "east", NOW - timedelta(hours=1), sent, [])
    failed = [notify_state.Attempt("chat", "alert", [Delivery("ops", "chat", "r1",
                                                              "never_backed_up", "new",
                                                              None)], "refused")]
    notify_state.record(state_dir, "west", NOW, failed, [])  # another host's row
    report = hive("report", "-f", str(cfg), "-d", str(tmp_path / "site"))
    assert report.returncode == 0, report.stdout + report.stderr
    page = (tmp_path / "site" / "repos" / "r1.html").read_text()
    assert "<h2>Alerts sent</h2>" in page
    assert "<td>stale</td>" in page and "<td>mail</td>" in page and "<td>sent</td>" in page
    assert "never_backed_up" not in page and "<td>chat</td>" not in page
