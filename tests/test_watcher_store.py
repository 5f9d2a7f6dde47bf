"""The DuckDB file: versioned migrations, the lock every opener takes, batch inserts, and
the apply journal copied in exactly once. Real DuckDB files, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_watcher_support import ROOT, hive_cli, make_config

from reconciler.journal import Journal
from watcher import journal_rows, store

M1 = ["CREATE TABLE t (a INTEGER)"]
M2 = ["ALTER TABLE t ADD COLUMN b VARCHAR", "CREATE TABLE u (c INTEGER)"]


def test_migrations_are_applied_on_open_and_recorded(tmp_path: Path) -> None:
    with store.write(tmp_path, migrations=[M1]) as con:
        con.execute("INSERT INTO t VALUES (1)")
    with store.write(tmp_path, migrations=[M1, M2]) as con:
        con.execute("INSERT INTO t VALUES (2, 'two')")
        rows = con.execute("SELECT version, hive FROM schema_version ORDER BY 1").fetchall()
    assert [v for v, _ in rows] == [1, 2] and rows[0][1]
    with store.read(tmp_path, migrations=[M1, M2]) as con:
        assert con.execute("SELECT * FROM t ORDER BY a").fetchall() == [(1, None), (2, "two")]


def test_a_reader_upgrades_an_older_file_first(tmp_path: Path) -> None:
    with store.write(tmp_path, migrations=[M1]):
        pass
    with store.read(tmp_path, migrations=[M1, M2]) as con:
        assert con.execute("SELECT count(*) FROM u").fetchone() == (0,)
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (2,)


def test_a_newer_file_refuses_an_older_hive(tmp_path: Path) -> None:
    with store.write(tmp_path, migrations=[M1, M2]):
        pass
    for opener in (store.write, store.read):
        refused = pytest.raises(store.StoreError, match=r"schema version 2, written by a "
                                "newer Hive; this Hive knows versions up to 1")
        with refused, opener(tmp_path, migrations=[M1]):
            pass


def test_hive_status_refuses_a_database_from_the_future(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"r1": "owner: alice"})
    state = tmp_path / "state"
    with store.write(state) as con:
        con.execute("INSERT INTO schema_version VALUES (99, now(), '9.0.0')")
    for command in ("status", "stats"):
        result = hive_cli(command, "-f", str(config))
        assert result.returncode == 1, result.stdout + result.stderr
        assert "schema version 99, written by a newer Hive" in result.stderr
        assert "Traceback" not in result.stderr


def test_no_database_yet_means_no_rows_not_an_error(tmp_path: Path) -> None:
    with store.read(tmp_path) as con:
        assert con is None
    assert not (tmp_path / store.DB_NAME).exists()


def test_read_only_openers_fail_while_a_writer_holds_the_file_so_hive_waits(
        tmp_path: Path) -> None:
    """The premise of the design, shown on the real DuckDB: while a writer has the file, a
    plain read-only connect from another process fails; `store.read` waits for the lock
    instead (and here gives up cleanly, since the writer never lets go)."""
    script = """if True:
        import sys, duckdb
        from pathlib import Path
        from watcher import store
        try:
            duckdb.connect(sys.argv[1] + "/events.duckdb", read_only=True)
            print("plain: opened")
        except duckdb.Error as exc:
            print("plain: failed", type(exc).__name__)
        try:
            with store.read(Path(sys.argv[1]), timeout=0.3):
                print("hive: opened")
        except store.StoreBusy:
            print("hive: waited, busy")
    """
    with store.write(tmp_path) as con:
        con.execute("SELECT 1")
        result = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.stdout.splitlines() == ["plain: failed IOException", "hive: waited, busy"], \
        result.stderr
    after = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert after.stdout.splitlines() == ["plain: opened", "hive: opened"], after.stderr


def test_a_failed_batch_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), store.write(tmp_path) as con:
        store.insert(con, "watcher_log", ("time", "host", "kind"),
                     [(datetime.now(UTC), "h", "start")])
        raise RuntimeError("crash mid-batch")
    with store.read(tmp_path) as con:
        assert con.execute("SELECT count(*) FROM watcher_log").fetchone() == (0,)


def test_insert_is_one_statement_for_many_rows(tmp_path: Path) -> None:
    rows = [(i, f"name {i}", None if i % 2 else json.dumps({"i": i})) for i in range(20_000)]
    with store.write(tmp_path, migrations=[["CREATE TABLE w (i INTEGER, n VARCHAR, d JSON)"]]
                     ) as con:
        assert store.insert(con, "w", ("i", "n", "d"), rows) == 20_000
        assert store.insert(con, "w", ("i", "n", "d"), []) == 0
        got = con.execute("SELECT count(*), count(d), max(i), min(n) FROM w").fetchone()
    assert got == (20_000, 10_000, 19_999, "name 0")


# ----------------------------------------------------------------------------- the journal


def test_journal_records_become_rows_once(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "test1")
    start = journal.record("start", user="carol", file="hive.yaml", commit=None,
                           summary={"add": 1})
    change = journal.record("change", action="create", kind="account", name="bh-r1",
                            before=None, after={"uid": 20000}, repository="r1", error=None)
    journal.write(start, change)
    path = tmp_path / "journal.jsonl"
    finish = json.dumps(journal.record("finish", error=None, done=1, total=1))
    with open(path, "a") as handle:
        handle.write(finish[:20])  # an apply caught mid-write: a torn last line
    with store.write(tmp_path) as con:
        assert journal_rows.import_new(con, tmp_path) == 2
    with open(path, "a") as handle:
        handle.write(finish[20:] + "\n")
    with store.write(tmp_path) as con:
        assert journal_rows.import_new(con, tmp_path) == 1
        assert journal_rows.import_new(con, tmp_path) == 0
        rows = con.execute("SELECT record_type, who, action, resource_kind, name, repository "
                           "FROM journal ORDER BY rowid").fetchall()
        history = con.execute("SELECT what, who, origin FROM history").fetchall()
    assert rows == [("start", "carol", None, None, None, None),
                    ("change", "carol", "create", "account", "bh-r1", "r1"),
                    ("finish", "carol", None, None, None, None)]
    assert history == [("create account bh-r1", "carol", "apply")]


def test_a_replaced_journal_is_read_from_its_start(tmp_path: Path) -> None:
    journal = Journal(tmp_path, "test1")
    journal.write(journal.record("start", user="a"), journal.record("finish", error=None))
    with store.write(tmp_path) as con:
        assert journal_rows.import_new(con, tmp_path) == 2
    path = tmp_path / "journal.jsonl"
    replacement = tmp_path / "journal.new"
    replacement.write_text(json.dumps({"type": "start", "run": "r2", "user": "b"}) + "\n")
    os.replace(replacement, path)  # rotated: another inode
    with store.write(tmp_path) as con:
        assert journal_rows.import_new(con, tmp_path) == 1
        assert con.execute("SELECT who FROM journal ORDER BY rowid").fetchall() == [
            ("a",), ("a",), ("b",)]
