"""The DuckDB file `<state_dir>/events.duckdb`: schema, migrations, locking, batch inserts.

DuckDB lets one process write a file, and while it does even read-only openers from other
processes fail. So nobody keeps the file open: every writer (the watcher's flush, `hive
stats`) takes an exclusive flock on `<state_dir>/events.lock`, opens the file, writes one
batch in one transaction and closes it; readers (`hive status`) take a shared flock and
open it read-only. Each holds it for milliseconds, and the watcher buffers events in
memory while someone else holds it.

The schema is versioned: `schema_version` records each migration applied. Writers apply
missing migrations on open; a file written by a newer Hive is refused with a clear message
rather than half-understood.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DB_NAME = "events.duckdb"
LOCK_NAME = "events.lock"
#: The columns of `events` in the order writers give them (the watcher, `hive stats`).
EVENT_COLUMNS = ("time", "host", "repository", "unix_user", "path", "kind", "source",
                 "details")

# Never edit a released migration: add a new one. Each runs in the transaction that
# records it in schema_version.
MIGRATIONS: list[list[str]] = [
    [  # 1
        """CREATE TABLE events (
            time TIMESTAMPTZ NOT NULL, host VARCHAR NOT NULL, repository VARCHAR NOT NULL,
            unix_user VARCHAR NOT NULL, path VARCHAR NOT NULL, kind VARCHAR NOT NULL,
            source VARCHAR NOT NULL, details JSON)""",
        """CREATE TABLE repository_state (
            host VARCHAR NOT NULL, path VARCHAR NOT NULL, repository VARCHAR NOT NULL,
            unix_user VARCHAR NOT NULL, layout VARCHAR, layout_version INTEGER,
            transaction BIGINT, commit_time TIMESTAMPTZ, archives BOOLEAN,
            locks VARCHAR[], lock_since TIMESTAMPTZ, stale_reported BOOLEAN,
            updated_at TIMESTAMPTZ NOT NULL)""",
        """CREATE TABLE snapshots (
            time TIMESTAMPTZ NOT NULL, host VARCHAR NOT NULL, repository VARCHAR NOT NULL,
            unix_user VARCHAR NOT NULL, path VARCHAR NOT NULL, in_config BOOLEAN,
            present BOOLEAN, layout VARCHAR, layout_version INTEGER, size_bytes BIGINT,
            files BIGINT, dirs BIGINT, last_access TIMESTAMPTZ, last_update TIMESTAMPTZ,
            transaction BIGINT, locked BOOLEAN, lock_since TIMESTAMPTZ, quota_bytes BIGINT,
            quota_used DOUBLE, unreadable BIGINT, scan_seconds DOUBLE)""",
        """CREATE TABLE journal (
            time TIMESTAMPTZ, host VARCHAR, run VARCHAR, record_type VARCHAR, who VARCHAR,
            action VARCHAR, resource_kind VARCHAR, name VARCHAR, repository VARCHAR,
            error VARCHAR, record JSON)""",
        """CREATE TABLE watcher_log (
            time TIMESTAMPTZ NOT NULL, host VARCHAR NOT NULL, pid INTEGER,
            kind VARCHAR NOT NULL, details JSON)""",
        "CREATE TABLE meta (key VARCHAR NOT NULL, value VARCHAR)",
        """CREATE VIEW history AS
            SELECT time, host, repository, unix_user, kind AS what, NULL::VARCHAR AS who,
                   CAST(details AS VARCHAR) AS details, 'watch' AS origin
            FROM events
            UNION ALL
            SELECT time, host, repository, NULL, action || ' ' || resource_kind || ' ' || name,
                   who, error, 'apply'
            FROM journal WHERE record_type = 'change'""",
    ],
    [  # 2: hive notify. Every attempt to send, and the alerts that went out (their state).
        """CREATE TABLE notify_attempts (
            time TIMESTAMPTZ NOT NULL, host VARCHAR NOT NULL, run VARCHAR NOT NULL,
            rule VARCHAR, channel VARCHAR NOT NULL, alert VARCHAR, kind VARCHAR NOT NULL,
            repositories VARCHAR[], result VARCHAR NOT NULL, error VARCHAR)""",
        """CREATE TABLE notify_state (
            host VARCHAR NOT NULL, rule VARCHAR NOT NULL, channel VARCHAR NOT NULL,
            repository VARCHAR NOT NULL, alert VARCHAR NOT NULL,
            first_sent TIMESTAMPTZ NOT NULL, last_sent TIMESTAMPTZ NOT NULL,
            sends INTEGER NOT NULL)""",
    ],
    [  # 3: why a repository is `corrupt`, so that readers who may not open it see it too.
        "ALTER TABLE repository_state ADD COLUMN problem VARCHAR",
    ],
]


class StoreError(Exception):
    """The database cannot be used; the message says why and what to do."""


class StoreBusy(StoreError):
    pass


def _schema_too_new(path: Path, found: int, known: int) -> StoreError:
    return StoreError(f"{path} has schema version {found}, written by a newer Hive; this Hive "
                      f"knows versions up to {known}. Upgrade Hive (pip install -U "
                      "hive-borg) rather than letting an older one touch the file")


@contextmanager
def _flock(path: Path, exclusive: bool, timeout: float) -> Iterator[bool]:
    """Yields False when the lock file does not exist and a reader cannot create it.

    As root, a state_dir others may change is refused first, as apply refuses it: a link
    planted there would make root create a file of that user's choosing (/etc/nologin)."""
    from reconciler.fsutil import untrusted_state_dir

    problem = untrusted_state_dir(path.parent)
    if problem is not None:
        raise StoreError(f"{problem}; until then Hive records nothing there")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except PermissionError as exc:
        if exclusive:
            raise StoreError(f"cannot write {path}: {exc.strerror}; hive watch and hive "
                             "stats need write access to the state dir") from None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            yield False
            return
        except PermissionError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}; run as root or as a user "
                             f"who may read {path.parent}") from None
    try:
        deadline = time.monotonic() + timeout
        op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreBusy(f"{path} is held by another Hive process; waited "
                                    f"{timeout:g}s") from None
                time.sleep(0.01)
        yield True
    finally:
        os.close(fd)


def _version(con: Any) -> int:
    import duckdb

    try:
        return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
    except duckdb.CatalogException:
        return 0  # a new, empty file


def _migrate(con: Any, path: Path, migrations: Sequence[Sequence[str]]) -> None:
    from hive import __version__

    current = _version(con)
    if current > len(migrations):
        raise _schema_too_new(path, current, len(migrations))
    for number in range(current + 1, len(migrations) + 1):
        con.execute("BEGIN")
        if number == 1:
            con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, "
                        "applied_at TIMESTAMPTZ NOT NULL, hive VARCHAR)")
        for statement in migrations[number - 1]:
            con.execute(statement)
        con.execute("INSERT INTO schema_version VALUES ($1, now(), $2)",
                    [number, __version__])
        con.execute("COMMIT")


def _connect(path: Path, read_only: bool) -> Any:
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    con.execute("SET TimeZone = 'UTC'")
    return con


@contextmanager
def write(state_dir: Path, timeout: float = 10.0,
          migrations: Sequence[Sequence[str]] = MIGRATIONS) -> Iterator[Any]:
    """One write transaction, under the exclusive lock: commit on success, else roll back."""
    path = state_dir / DB_NAME
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {state_dir}: {exc.strerror}") from None
    with _flock(state_dir / LOCK_NAME, exclusive=True, timeout=timeout):
        con = _connect(path, read_only=False)
        try:
            _migrate(con, path, migrations)
            con.execute("BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()


@contextmanager
def read(state_dir: Path, timeout: float = 10.0,
         migrations: Sequence[Sequence[str]] = MIGRATIONS) -> Iterator[Any | None]:
    """A read-only connection under the shared lock; None when there is no database yet.

    A database from an older Hive is migrated first (that needs write access); one from a
    newer Hive is refused.
    """
    path = state_dir / DB_NAME
    for _attempt in range(2):
        if not path.exists():
            yield None
            return
        with _flock(state_dir / LOCK_NAME, exclusive=False, timeout=timeout) as locked:
            if not locked:
                yield None
                return
            con = _connect(path, read_only=True)
            try:
                found = _version(con)
                if found > len(migrations):
                    raise _schema_too_new(path, found, len(migrations))
                if found == len(migrations):
                    yield con
                    return
            finally:
                con.close()
        try:
            with write(state_dir, timeout, migrations):
                pass
        except PermissionError as exc:
            raise StoreError(f"{path} needs a schema upgrade, which needs write access: "
                             f"{exc.strerror}; run 'hive stats' once as root") from None
    raise StoreError(f"{path}: the schema upgrade did not take")


def insert(con: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Insert many rows with one statement (`INSERT ... SELECT unnest(...)`).

    Row-by-row inserts (executemany) are about 100 times slower in DuckDB.
    """
    if not rows:
        return 0
    lists = [list(col) for col in zip(*rows, strict=True)]
    selects = ", ".join(f"unnest(${i + 1})" for i in range(len(columns)))
    con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {selects}", lists)
    return len(rows)


def get_meta(con: Any, key: str) -> str | None:
    row = con.execute("SELECT value FROM meta WHERE key = $1", [key]).fetchone()
    return row[0] if row else None


def set_meta(con: Any, key: str, value: str) -> None:
    con.execute("DELETE FROM meta WHERE key = $1", [key])
    con.execute("INSERT INTO meta VALUES ($1, $2)", [key, value])

