"""`hive watch` for real: a watcher subprocess, real borg clients, a real DuckDB file.

Each test starts `python -m hive watch`, drives borg against repositories under its
repos_root and asserts the events that end up in the database: a whole session, a restart
in the middle of a backup, a queue overflow, repositories deleted and moved, SIGTERM, a
lock left behind, the inotify watch limit, and `hive status` / `hive stats` running side
by side with the watcher.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import requires_root, write_config
from test_watcher_support import (
    ROOT,
    Borg,
    WatchProcess,
    backup_in_progress,
    barrier,
    events,
    hive_cli,
    kinds,
    make_config,
    optional_borgs,
    query,
    repo_path,
    wait_for,
    watching,
)

pytestmark = pytest.mark.skipif(shutil.which("borg") is None, reason="needs borg")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "file.txt").write_text("some data to back up\n")
    return folder


def borg1_transaction(repo: Path) -> int:
    return max(int(p.name[6:]) for p in repo.glob("index.*") if p.name[6:].isdigit())


# ----------------------------------------------------------------------------- sessions


@pytest.mark.parametrize("binary", optional_borgs())
def test_a_repositorys_life_is_recorded(tmp_path: Path, src: Path, binary: str) -> None:
    config = make_config(tmp_path, {"r1": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "r1")
    borg = Borg(tmp_path / "borg-base", binary)
    with watching(config) as watcher:
        borg("init", repo)
        borg("create", repo, "a1", str(src))
        borg("list", repo)
        barrier(tmp_path, state)
        assert watcher.stop() == 0
    found = events(state, "r1")
    assert [k for k, _, _ in found[:7]] == ["created", "opened", "updated", "closed",
                                            "opened", "updated", "closed"]
    # borg list: read-only sessions (borg 1.2 opens the repository twice), no commit
    rest = [k for k, _, _ in found[7:]]
    assert rest and rest == ["opened", "closed"] * (len(rest) // 2)
    updates = [d for k, d, _ in found if k == "updated"]
    assert [u["backup"] for u in updates] == [False, True]  # init's commit is no backup
    assert updates[1]["previous"] == updates[0]["transaction"]
    if not borg.two:
        assert updates[1]["transaction"] == borg1_transaction(repo)
    rows = query(state, "SELECT DISTINCT host, repository, unix_user, path FROM events "
                        "WHERE repository = 'r1'")
    assert rows == [("test1", "r1", "bh-r1", str(repo))]
    layout = query(state, "SELECT layout FROM repository_state WHERE repository = 'r1'")
    assert layout == [("borg2" if borg.two else "borg1",)]


def test_restart_in_the_middle_of_a_backup(tmp_path: Path, src: Path) -> None:
    """No updated event is lost or counted twice, whether the backup ends while the
    watcher is back or while it is down."""
    config = make_config(tmp_path, {"r1": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "r1")
    borg = Borg(tmp_path / "borg-base")
    watcher = WatchProcess(config).start()
    try:
        borg("init", repo)
        # 1: the watcher restarts while the backup runs, and sees it end.
        with backup_in_progress(borg, repo, "a1", tmp_path / "fifo") as backup:
            wait_for(lambda: kinds(state).count("opened") == 2, what="backup 1 to open")
            assert watcher.stop() == 0
            watcher.start()
        assert backup.wait(timeout=60) == 0, backup.communicate()
        wait_for(lambda: kinds(state).count("closed") == 2, what="backup 1 to close")
        # 2: the backup ends while the watcher is down; the restart finds it.
        with backup_in_progress(borg, repo, "a2", tmp_path / "fifo") as backup:
            wait_for(lambda: kinds(state).count("opened") == 3, what="backup 2 to open")
            assert watcher.stop() == 0
        assert backup.wait(timeout=60) == 0, backup.communicate()
        watcher.start()
        wait_for(lambda: kinds(state).count("closed") == 3, what="backup 2 found on start")
        assert watcher.stop() == 0
    finally:
        watcher.kill_if_running()
    found = events(state)
    assert [k for k, _, _ in found] == ["created", "opened", "updated", "closed",
                                        "opened", "updated", "closed",
                                        "opened", "updated", "closed"]
    updates = [(d["transaction"], d["backup"], s) for k, d, s in found if k == "updated"]
    assert len({t for t, _, _ in updates}) == 3
    assert [(b, s) for _, b, s in updates] == [(False, "inotify"), (True, "inotify"),
                                               (True, "scan")]
    assert updates[-1][0] == borg1_transaction(repo)
    listing = borg("list", "--short", repo).stdout.split()
    assert listing == ["a1", "a2"]


def test_queue_overflow_is_repaired_by_a_rescan(tmp_path: Path, src: Path) -> None:
    """Flood the inotify queue while the watcher is stopped (SIGSTOP), back up meanwhile:
    the backup's file events are lost, the rescan after IN_Q_OVERFLOW finds the commit."""
    config = make_config(tmp_path, {"r1": "owner: alice", "r2": "owner: bob"})
    state = tmp_path / "state"
    r1, r2 = repo_path(tmp_path, "r1"), repo_path(tmp_path, "r2")
    borg = Borg(tmp_path / "borg-base")
    borg("init", r1)
    borg("init", r2)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    with watching(config) as watcher:
        watcher.pause()
        try:
            for i in range(limit // 2 + 1000):  # two events each: create, delete
                flood = r2 / f"flood-{i}"
                flood.touch()
                flood.unlink()
            borg("create", r1, "a1", str(src))
        finally:
            watcher.resume()
        wait_for(lambda: query(state, "SELECT count(*) FROM watcher_log "
                                      "WHERE kind = 'overflow'")[0][0] == 1, what="overflow")
        wait_for(lambda: kinds(state, "r1").count("updated") == 2, what="the rescan")
        borg("create", r1, "a2", str(src))  # and it carries on watching
        wait_for(lambda: kinds(state, "r1").count("updated") == 3, what="the next backup")
        assert watcher.stop() == 0
    updates = [(d["transaction"], s) for k, d, s in events(state, "r1") if k == "updated"]
    assert [s for _, s in updates] == ["scan", "scan", "inotify"]  # start, overflow, live
    assert len({t for t, _ in updates}) == 3
    assert updates[-1][0] == borg1_transaction(r1)
    rescan = query(state, "SELECT details FROM watcher_log WHERE kind = 'rescan'")
    assert [json.loads(d)["reason"] for (d,) in rescan] == ["overflow"]
    assert kinds(state, "r2") == ["created", "updated"]  # the flood meant nothing


def test_repositories_deleted_or_moved_while_watched(tmp_path: Path, src: Path) -> None:
    config = make_config(tmp_path, {"gone": "owner: alice", "away": "owner: alice",
                                    "mover": "owner: bob"})
    state = tmp_path / "state"
    borg = Borg(tmp_path / "borg-base")
    for name in ("gone", "away", "mover"):
        borg("init", repo_path(tmp_path, name))
    (tmp_path / "repos" / "bh-other").mkdir()
    with watching(config) as watcher:
        shutil.rmtree(repo_path(tmp_path, "gone"))
        os.rename(repo_path(tmp_path, "away"), tmp_path / "outside-the-tree")
        os.rename(repo_path(tmp_path, "mover"), tmp_path / "repos" / "bh-other" / "moved")
        wait_for(lambda: kinds(state).count("deleted") == 3 and "moved" in
                 {r for (r,) in query(state, "SELECT repository FROM events")},
                 what="deleted and moved")
        # the folder comes back and is used again: watched afresh
        repo_path(tmp_path, "gone").mkdir()
        borg("init", repo_path(tmp_path, "gone"))
        wait_for(lambda: kinds(state, "gone").count("updated") == 2, what="gone reborn")
        assert watcher.stop() == 0
    how = {}
    for name in ("gone", "away", "mover"):
        for kind, details, _ in events(state, name):
            if kind == "deleted":
                how.setdefault(name, details["how"])
    assert how == {"gone": "removed", "away": "moved", "mover": "moved"}
    assert kinds(state, "moved") == ["created", "updated"]
    assert kinds(state, "gone")[-4:] == ["created", "opened", "updated", "closed"]
    status = hive_cli("status", "-f", str(config), "-o", "json")
    assert status.returncode == 2, status.stderr
    states = {s["repository"]: s["state"] for s in json.loads(status.stdout)}
    assert states == {"gone": "never backed up", "away": "missing on disk",
                      "mover": "missing on disk"}


def test_sigterm_flushes_what_is_buffered_and_exits_0(tmp_path: Path, src: Path) -> None:
    config = make_config(tmp_path, {"r1": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "r1")
    borg = Borg(tmp_path / "borg-base")
    with watching(config, "--flush-interval", "3600") as watcher:
        borg("init", repo)
        borg("create", repo, "a1", str(src))
        wait_for(lambda: watcher.text().count(" closed ") == 2, what="events in memory")
        assert kinds(state) == []  # nothing written yet: they are buffered
        assert watcher.stop(signal.SIGTERM) == 0
    assert kinds(state) == ["created", "opened", "updated", "closed",
                            "opened", "updated", "closed"]
    log = query(state, "SELECT kind FROM watcher_log ORDER BY time")
    assert log == [("start",), ("stop",)]


def test_a_lock_left_behind_is_reported_stale(tmp_path: Path, src: Path) -> None:
    """borg killed with SIGKILL mid-backup leaves its lock; its holder (a process of this
    host) is gone, so the lock is stale at once, whatever its age."""
    config = make_config(tmp_path, {"r1": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "r1")
    borg = Borg(tmp_path / "borg-base")
    borg("init", repo)
    borg("create", repo, "a0", str(src))
    with watching(config) as watcher:
        with backup_in_progress(borg, repo, "a1", tmp_path / "fifo") as backup:
            wait_for(lambda: "opened" in kinds(state), what="the backup to open")
            backup.kill()
            backup.wait(timeout=30)
        stale = wait_for(lambda: [d for k, d, _ in events(state) if k == "lock_stale"],
                         what="lock_stale")
        assert stale[0]["reason"] == "holder gone"
        assert f"pid {backup.pid}" in stale[0]["holders"][0]
        status = hive_cli("status", "-f", str(config), "-o", "json")
        assert (status.returncode, json.loads(status.stdout)[0]["state"]) == (2, "locked")
        borg("break-lock", repo)
        wait_for(lambda: kinds(state)[-1] == "closed", what="closed after break-lock")
        assert watcher.stop() == 0
    assert kinds(state).count("lock_stale") == 1
    status = hive_cli("status", "-f", str(config), "-o", "json")
    assert (status.returncode, json.loads(status.stdout)[0]["state"]) == (0, "ok")


def _can_limit_watches() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "sh", "-c",
                            "echo 3 > /proc/sys/user/max_inotify_watches"],
                           capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(shutil.which("unshare") is None or not _can_limit_watches(),
                    reason="needs user namespaces with a writable max_inotify_watches")
def test_watch_limit_names_the_sysctl(tmp_path: Path) -> None:
    """In a user namespace of its own the watcher gets 3 watches (the host's limit is not
    touched) and needs more: it must say which sysctl to raise, and exit 1."""
    config = make_config(tmp_path, {"r1": "owner: alice", "r2": "owner: alice",
                                    "r3": "owner: alice"})
    for name in ("r1", "r2", "r3"):
        repo_path(tmp_path, name).mkdir()
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "sh", "-c",
         'echo 3 > /proc/sys/user/max_inotify_watches && exec "$@"', "sh",
         sys.executable, "-m", "hive", "watch", "-f", str(config)],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "fs.inotify.max_user_watches" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_watcher_refuses_to_start(tmp_path: Path) -> None:
    """Two watchers on one state_dir would record every event twice: the second exits 1 at
    once, naming the first; once the first has stopped, a new one starts."""
    config = make_config(tmp_path, {"r1": "owner: alice"})
    with watching(config) as first:
        assert first.process is not None
        pid = first.process.pid
        assert (tmp_path / "state" / "watch.lock").read_text() == f"{pid}\n"
        second = hive_cli("watch", "-f", str(config), timeout=30)
        assert second.returncode == 1, second.stderr
        assert f"pid {pid}" in second.stderr and "already running" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.process.poll() is None
        assert first.stop() == 0
    with watching(config) as again:
        assert again.stop() == 0


# ----------------------------------------------------------------------------- side by side


def test_status_and_stats_work_while_watch_runs(tmp_path: Path) -> None:
    """The watcher writes every 50 ms while sessions come and go; meanwhile `hive status`,
    `hive stats` and a read-only DuckDB reader run over and over. None may fail, and no
    event may be lost."""
    config = make_config(tmp_path, {"r1": "owner: alice", "r2": "owner: bob"})
    state = tmp_path / "state"
    borg = Borg(tmp_path / "borg-base")
    for name in ("r1", "r2"):
        borg("init", repo_path(tmp_path, name))
    sessions = 0
    stop = threading.Event()

    def sessions_come_and_go() -> None:
        nonlocal sessions
        lock = repo_path(tmp_path, "r2") / "lock.exclusive"
        while not stop.is_set():  # what borg does to open and close, without borg's cost
            lock.mkdir()
            lock.rmdir()
            sessions += 1
            stop.wait(0.002)  # a busy server, not a flood: overflows are another test

    with watching(config, "--flush-interval", "0.05") as watcher:
        worker = threading.Thread(target=sessions_come_and_go)
        worker.start()
        try:
            results = []
            for _ in range(6):
                results.append(hive_cli("status", "-f", str(config), "-o", "json"))
                results.append(hive_cli("stats", "-f", str(config), "-o", "json"))
                results.append(subprocess.run(
                    [sys.executable, "-c", "import sys; from pathlib import Path; "
                     "from watcher import store\n"
                     "with store.read(Path(sys.argv[1])) as con:\n"
                     "    print(con.execute('SELECT count(*) FROM events').fetchone()[0])",
                     str(state)], capture_output=True, text=True, cwd=ROOT, timeout=60))
        finally:
            stop.set()
            worker.join()
        wait_for(lambda: kinds(state, "r2").count("closed") == sessions,
                 what="every session recorded")
        assert watcher.stop() == 0
    for result in results:
        assert result.returncode in (0, 2), result.stderr  # 2: status says never backed up
        assert "lock" not in result.stderr.lower(), result.stderr
    assert kinds(state, "r2").count("opened") == sessions
    assert query(state, "SELECT kind FROM watcher_log") == [("start",), ("stop",)]
    rows = query(state, "SELECT count(*), count(DISTINCT time) FROM snapshots")
    assert rows == [(12, 6)]  # two repositories, six runs
    assert sessions > 10


@requires_root
def test_apply_journal_becomes_rows_and_new_repositories_are_watched(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    config = write_config(tmp_path, f"""\
        owners: {{alice: {{}}}}
        keys: {{k: {{owner: alice, public_key: "{pubkeys['a']}"}}}}
        repositories: {{}}
        """)
    (tmp_path / "repos").mkdir()
    state = tmp_path / "state"
    borg = Borg(tmp_path / "borg-base")
    with watching(config) as watcher:
        text = config.read_text().replace("repositories: {}",
                                          "repositories: {fresh: {owner: alice, keys: [k]}}")
        config.write_text(text)
        applied = hive_cli("apply", "-f", str(config))
        assert applied.returncode == 0, applied.stderr
        borg("init", tmp_path / "repos" / "bh-fresh" / "fresh")
        wait_for(lambda: "closed" in kinds(state, "fresh"), what="the new repository")
        wait_for(lambda: query(state, "SELECT count(*) FROM journal WHERE record_type = "
                                      "'finish'")[0][0] == 1, what="the journal")
        assert watcher.stop() == 0
    who = query(state, "SELECT DISTINCT who FROM journal")
    assert who == [(os.environ.get("SUDO_USER") or "root",)]
    history = query(state, "SELECT origin, what, repository FROM history "
                           "WHERE repository = 'fresh' ORDER BY time")
    assert ("apply", "create account bh-fresh", "fresh") in history
    assert ("watch", "created", "fresh") in history
    assert [o for o, _, _ in history].index("apply") < [o for o, _, _ in history].index("watch")


def test_the_cli_imports_nothing_heavy() -> None:
    """`hive` is imported on every call (sshd's login path included): the watcher's heavy
    parts must only load inside the commands that need them."""
    code = ("import sys, hive.cli; print(sorted(m for m in ('duckdb', 'inotify_simple', "
            "'watcher.store', 'watcher.inotify_loop', 'watcher.stats') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


def test_events_wait_in_memory_while_another_program_holds_the_file(
        tmp_path: Path) -> None:
    """Someone opens events.duckdb read-write outside Hive's lock (a DuckDB CLI, say):
    the watcher cannot write, says so once, keeps the events, and writes them later."""
    config = make_config(tmp_path, {"r1": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "r1")
    borg = Borg(tmp_path / "borg-base")
    with watching(config, "--flush-interval", "0.1") as watcher:
        holder = subprocess.Popen(
            [sys.executable, "-c", "import sys, duckdb\n"
             "con = duckdb.connect(sys.argv[1])\nprint('holding', flush=True)\n"
             "sys.stdin.readline()\ncon.close()", str(state / "events.duckdb")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            borg("init", repo)
            wait_for(lambda: "could not write to the database" in watcher.text(),
                     what="the write to fail")
            wait_for(lambda: watcher.text().count(" closed ") == 1, what="events in memory")
        finally:
            assert holder.stdin is not None
            holder.stdin.write("\n")
            holder.stdin.close()
            holder.wait(timeout=30)
        wait_for(lambda: kinds(state, "r1") == ["created", "opened", "updated", "closed"],
                 what="the buffered events")
        assert watcher.stop() == 0
    assert watcher.text().count("could not write to the database") == 1


def test_lock_holders_of_this_host_are_checked_and_others_are_not() -> None:
    """borg's host id is "<fqdn>@<uuid.getnode()>"; either half identifies this host
    (under systemd's PrivateNetwork= the node is random, the name is not)."""
    import socket
    import uuid

    from borgrepo.locks import Holder, holders_alive

    gone = subprocess.Popen(["true"])
    gone.wait()
    me = socket.gethostname()
    assert holders_alive([Holder(f"{me}@1", os.getpid())]) is True
    assert holders_alive([Holder(f"{me}@1", gone.pid)]) is False
    assert holders_alive([Holder(f"elsewhere.example@{uuid.getnode()}", gone.pid)]) is False
    assert holders_alive([Holder("elsewhere.example@1", gone.pid)]) is None
    assert holders_alive([Holder(f"{me}@1", gone.pid), Holder(f"{me}@1", os.getpid())])
    assert holders_alive([]) is None
