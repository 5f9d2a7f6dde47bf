"""Repository events and statistics in DuckDB: `hive watch`, `hive stats`, `hive status`.

Borg trusts the server with as little as possible, so Hive learns what happens to a
repository from the filesystem: `hive watch` turns inotify activity under repos_root into
repository events (created, opened, closed, updated, deleted, lock_stale), `hive stats`
measures each repository, and `hive status` says which ones went quiet.

Concurrency design. DuckDB allows one read-write process per file, and while it has the
file even read-only openers in other processes fail. So no process keeps
`<state_dir>/events.duckdb` open:
- every writer (the watcher's flush, `hive stats`) takes an exclusive flock on
  `<state_dir>/events.lock`, opens the file, writes one batch in one transaction, closes
  it and releases the lock: milliseconds;
- readers (`hive status`) take a shared flock and open the file read-only;
- the watcher buffers events in memory between flushes (every half second, or sooner when
  10,000 are waiting); if the lock is busy it keeps buffering and tries again on the next
  tick, so a slow reader never makes it lose inotify events. On SIGTERM it flushes,
  waiting up to 20 s for the lock, and exits 0.
flock is released by the kernel when a holder dies, so a crashed process never blocks
the others.

Modules: events.py (pure: file events and scans -> repository events), commits.py (what
each commit did, from borgrepo/segments.py), inotify_loop.py (the watcher), store.py
(schema, migrations, locking, batch inserts), journal_rows.py (the apply journal as rows),
stats.py (disk usage walk and snapshots), status.py (states and their sources),
commands.py (the click commands; imports nothing heavy at module level). What borg's
files mean (layouts, locks, segments) lives in borgrepo/.
"""
