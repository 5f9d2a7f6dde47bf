"""A repository's own user (or an import-mode rsync client) controls every file in it.

Whatever it plants -- numbers no borg writes, FIFOs, symlinks, trees thousands of levels
deep -- that repository is reported as making no sense while every other repository keeps
being watched, measured and reported; `hive rollback` neither hangs nor leaves a lock, an
empty aside folder or a journal start without its finish. Real files, real DuckDB, real
`hive` processes; the fuzzing at the end uses a fixed seed and a time bound.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import nobody_hive_argv, requires_root
from test_watcher_support import (
    ROOT,
    barrier,
    events,
    hive_cli,
    make_config,
    query,
    repo_path,
    watching,
)

from borgrepo import layout, locks, segments
from reconciler import rollback as rb
from reconciler import treewalk
from watcher import events as ev
from watcher import stats, status

BIG = "9" * 20


def fake_borg1(path: Path, transaction: int = 5) -> Path:
    """The top of a borg 1.x repository as the watcher and status read it."""
    (path / "data" / "0").mkdir(parents=True, exist_ok=True)
    (path / "config").write_text("[repository]\nversion = 1\nsegments_per_dir = 1000\n"
                                 "append_only = 1\nid = " + "ab" * 32 + "\n")
    head = segments._HEADER

    def entry(tag: int, ident: bytes = b"", payload: int = 0) -> bytes:
        return head.pack(0, segments.HEADER_SIZE + len(ident) + payload, tag) + ident \
            + bytes(payload)

    manifest, commit = segments.MANIFEST_ID, entry(segments.COMMIT)
    content = {0: entry(segments.PUT, manifest, 10), 1: commit,  # borg init
               transaction - 2: entry(segments.DELETE, manifest),
               transaction - 1: entry(segments.PUT, manifest, 10), transaction: commit}
    for n in range(transaction + 1):  # the backup's data, then the manifest and COMMIT
        body = content.get(n, entry(segments.PUT, bytes([n]) * 32, 1000))
        (path / "data" / "0" / str(n)).write_bytes(segments.MAGIC + body)
    (path / f"index.{transaction}").write_bytes(b"x" * 100)
    (path / f"hints.{transaction}").write_bytes(b"x" * 10)
    (path / "transactions").write_text(
        "".join(f"transaction {n}, UTC time 2026-01-0{n % 9 + 1}T00:00:00.000000\n"
                for n in range(1, transaction + 1, 2)) + f"transaction {transaction}, UTC "
        "time 2026-01-09T00:00:00.000000\n")
    return path


def two_repos(tmp_path: Path) -> tuple[Path, Path, Path]:
    config = make_config(tmp_path, {"good": "owner: alice", "bad": "owner: bob"})
    good = fake_borg1(repo_path(tmp_path, "good"))
    bad = fake_borg1(repo_path(tmp_path, "bad"))
    return config, good, bad


# ----------------------------------------------------------------- numbers (item 3)

@pytest.mark.parametrize("plant", [
    lambda repo: (repo / f"index.{BIG}").write_bytes(b"x"),
    lambda repo: (repo / "config").write_text("[repository]\nversion = 3000000000\n"),
    lambda repo: os.utime(repo / "index.5", (0, 2**40)),  # dated in year 36812
])
def test_numbers_no_borg_writes_make_the_repository_corrupt_not_the_scan(
        tmp_path: Path, plant: object) -> None:
    repo = fake_borg1(tmp_path / "r")
    plant(repo)  # type: ignore[operator]
    state = layout.scan_repository(repo)
    assert state is not None and state.problem
    assert state.transaction is None or state.transaction <= ev.MAX_TRANSACTION
    assert state.layout_version in (None, 1)


def test_lock_holders_with_impossible_pids_are_unknown_not_a_crash(tmp_path: Path) -> None:
    repo = fake_borg1(tmp_path / "r")
    (repo / "lock.exclusive").mkdir()
    (repo / "lock.exclusive" / "host@x.9999999999-0").touch()
    (repo / "lock.exclusive" / f"{os.uname().nodename}@1.{'9' * 7}-0").touch()
    state = layout.scan_repository(repo)
    assert state is not None and state.locked
    holders = locks.lock_holders(repo, state)
    assert all(h.pid is None for h in holders) and len(holders) == 2
    assert locks.holders_alive(holders) is None  # cannot tell: the lock's age decides
    # borg 2's JSON lock files: an infinite or huge pid, deep nesting
    for text in ('{"hostid": "h", "processid": 1e999}', '{"hostid": "h", "processid": '
                 + "9" * 40 + "}", "[" * 4000):
        assert locks.checked_pid(json.loads(text)["processid"]
                                if text.startswith("{") else None) is None


def test_index_events_with_impossible_numbers_record_corrupt_once() -> None:
    state = ev.RepoState(layout=ev.BORG1, transaction=5)
    new, found = ev.apply(state, ev.FileEvent(1.0, f"index.{BIG}", True))
    assert [e.kind for e in found] == ["corrupt"] and new.transaction == 5
    again, found = ev.apply(new, ev.FileEvent(2.0, f"index.{BIG}1", True))
    assert found == [] or [e.kind for e in found] == ["corrupt"]
    assert ev.apply(again, ev.FileEvent(3.0, "index.²", True))[1] == []  # not an index name


def test_status_and_stats_report_the_corrupt_one_and_all_others(tmp_path: Path) -> None:
    config, _good, bad = two_repos(tmp_path)
    (bad / f"index.{BIG}").write_bytes(b"x")
    (bad / "config").write_text("[repository]\nversion = 3000000000\n")
    shown = hive_cli("status", "-f", str(config), "-o", "json")
    assert shown.returncode == 2, shown.stderr
    states = {r["repository"]: r for r in json.loads(shown.stdout)}
    assert states["bad"]["state"] == "corrupt" and BIG in states["bad"]["problem"]
    assert states["good"]["state"] == "ok" and states["good"]["last_backup"]
    text = hive_cli("status", "-f", str(config))
    assert "corrupt" in text.stdout and "no borg writes" in text.stderr
    measured = hive_cli("stats", "-f", str(config), "-o", "json")
    assert measured.returncode == 1, measured.stderr  # a problem, said, and recorded
    records = {r["repository"]: r for r in map(json.loads, measured.stdout.splitlines())
               if r.get("type") == "repository"}
    assert records["good"]["transaction"] == 5 and records["bad"]["errors"]
    rows = query(tmp_path / "state", "SELECT repository, transaction, layout_version "
                                     "FROM snapshots ORDER BY repository")
    assert rows == [("bad", 5, None), ("good", 5, 1)]


def test_the_watcher_survives_and_keeps_watching_the_others(tmp_path: Path) -> None:
    config, good, bad = two_repos(tmp_path)
    (bad / f"index.{BIG}").write_bytes(b"x")  # there before the start
    state_dir = tmp_path / "state"
    for _ in range(2):  # and every restart
        with watching(config) as watcher:
            (bad / f"index.{BIG}7").write_bytes(b"x")  # and planted while watched
            (good / "index.6").write_bytes(b"x")
            (good / "index.5").unlink()
            barrier(tmp_path, state_dir)
            assert watcher.stop() == 0, watcher.text()
        (good / "index.6").rename(good / "index.5")
    found = events(state_dir)
    assert ("updated", "good") in {(k, d.get("repository", "good")) for k, d, _ in
                                   events(state_dir, "good")}
    assert any(k == "corrupt" and BIG in d["problem"] for k, d, _ in events(state_dir, "bad"))
    assert query(state_dir, "SELECT max(transaction) FROM repository_state")[0][0] <= 6
    assert len(found) >= 3


@requires_root
def test_a_user_who_cannot_open_a_corrupt_repository_sees_what_the_watcher_saw(
        sysroot: Path) -> None:
    """`hive status` as a user who may not read the repositories (a report or monitoring
    account) gets `corrupt` and its problem from the database, as root gets it from disk."""
    argv = nobody_hive_argv(sysroot)
    if argv is None:
        pytest.skip("cannot run this interpreter as nobody")
    config, good, bad = two_repos(sysroot)
    config.chmod(0o644)
    (bad / f"index.{BIG}").write_bytes(b"x")
    with watching(config) as watcher:
        assert watcher.stop() == 0, watcher.text()
    for repo in (good, bad):
        repo.chmod(0o700)
    result = subprocess.run([*argv, "status", "-f", str(config), "-o", "json"],
                            capture_output=True, text=True, cwd=sysroot, timeout=60)
    assert result.returncode == 2, result.stderr   # 2: a repository in trouble
    states = {r["repository"]: r for r in json.loads(result.stdout)}
    assert states["bad"]["state"] == "corrupt" and BIG in states["bad"]["problem"]
    assert states["good"]["state"] == "ok" and states["good"]["problem"] is None


def test_rollback_list_refuses_a_nonsense_log_clearly(tmp_path: Path) -> None:
    config, _good, bad = two_repos(tmp_path)
    with (bad / "transactions").open("a") as log:
        log.write(f"transaction {'7' * 5000}, UTC time 2026-01-09T00:00:00\n")
    listed = hive_cli("rollback", "bad", "--list", "-f", str(config))
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    assert "beyond" in listed.stderr or "not borg's format" in listed.stderr
    (bad / "transactions").write_text("transaction 1, UTC time 2026-01-09T00:00:00\n")
    (bad / f"index.{BIG}").write_bytes(b"x")
    listed = hive_cli("rollback", "bad", "--list", "-f", str(config))
    assert listed.returncode == 1 and "no borg writes" in listed.stderr, listed.stderr
    assert hive_cli("rollback", "good", "--list", "-f", str(config)).returncode == 0


# ----------------------------------------------------------------- lock.roster (item 4)

def _lock_in_child(repo: Path, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    code = ("import sys; from pathlib import Path; from reconciler import rollback as rb\n"
            "try:\n"
            f"    with rb.repository_lock(Path({str(repo)!r}), 0.5): print('locked')\n"
            "except rb.RollbackError as exc: print('refused', exc); sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("plant", ["fifo", "dev-zero", "huge"])
def test_a_planted_roster_neither_hangs_nor_leaves_the_lock(tmp_path: Path,
                                                            plant: str) -> None:
    repo = fake_borg1(tmp_path / "r")
    roster = repo / "lock.roster"
    if plant == "fifo":
        os.mkfifo(roster)
    elif plant == "dev-zero":
        roster.symlink_to("/dev/zero")
    else:
        with roster.open("wb") as handle:
            handle.truncate(locks.ROSTER_LIMIT + 1)
    started = time.monotonic()
    result = _lock_in_child(repo)
    assert time.monotonic() - started < 15
    assert result.returncode == 3 and "refused" in result.stdout, result
    assert not (repo / "lock.exclusive").exists()
    assert not list(repo.glob("lock.exclusive.*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="hive rollback needs root")
def test_a_rollback_refused_by_its_roster_cleans_up_and_finishes_the_journal(
        tmp_path: Path) -> None:
    config, _good, bad = two_repos(tmp_path)
    os.mkfifo(bad / "lock.roster")
    done = hive_cli("rollback", "bad", "--to", "1", "--force", "--confirm", "bad",
                    "--lock-wait", "0.2", "-f", str(config), timeout=30)
    assert done.returncode == 1 and "not a regular file" in done.stderr, done.stderr
    assert not (bad / "lock.exclusive").exists()
    assert [p.name for p in bad.parent.iterdir()] == ["bad"]  # no empty aside folder
    journal = [json.loads(line) for line in
               (tmp_path / "state" / "journal.jsonl").read_text().splitlines()]
    assert [r["type"] for r in journal][-3:] == ["start", "change", "finish"]
    assert journal[-1]["error"]
    assert sorted(p.name for p in bad.iterdir() if p.name.startswith(("index", "data"))) \
        == ["data", "index.5"]  # nothing moved


# ----------------------------------------------------------------- deep trees (item 5)

def _deep(top: Path, depth: int, payload: int) -> Path:
    """`top/a/a/.../a/data` (depth levels), made with relative mkdirs (paths get long)."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("a", dir_fd=fd)
            child = os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        out = os.open("data", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, os.urandom(payload))
        os.close(out)
    finally:
        os.close(fd)
    return top


def test_walks_of_a_3000_level_tree_see_everything(tmp_path: Path) -> None:
    tree = _deep(tmp_path / "repo", 3000, 1 << 20)
    found = treewalk.usage(tree)
    assert (found.files, found.dirs, found.unreadable) == (1, 3001, 0)
    assert found.apparent_bytes >= 1 << 20
    if os.geteuid() == 0:
        os.chown(tree, 20001, 20001)
        treewalk.chown_tree(tree, 0, 20001, 20001)
        treewalk.Walk(tree)
        assert all(e.stat.st_uid == 20001 for e in treewalk.Walk(tree).entries())
    treewalk.remove_tree(tree)
    assert not tree.exists()


def test_names_gone_between_listing_and_look_are_not_problems(tmp_path: Path) -> None:
    """borg makes and removes lock files and folders all the time: a name the walk listed
    but that is gone when it looks (stat, open) was simply not there to see. A small
    folder is listed in one getdents, so removing names after the first entry comes out
    makes exactly that happen."""
    top = tmp_path / "repo"
    top.mkdir()
    for name in ("a", "b", "c"):
        (top / f"file-{name}").write_bytes(b"x")
        (top / f"dir-{name}").mkdir()
    walk = treewalk.Walk(top)
    seen = []
    for entry in walk.entries():
        if not seen:  # the listing is read: remove everything else
            for path in top.iterdir():
                if path.name != entry.name:
                    path.rmdir() if path.is_dir() else path.unlink()
        seen.append(entry.name)
    assert len(seen) == 1 and walk.complete, walk.problems


def test_a_folder_made_again_since_the_listing_is_not_a_problem(tmp_path: Path) -> None:
    """borg's lock.exclusive is removed and made again on every session: a folder that is
    another one by the time the walk opens it was made after the listing, like a new name,
    and is neither walked nor counted as unreadable."""
    top = tmp_path / "repo"
    (top / "lock.exclusive").mkdir(parents=True)
    (top / "lock.exclusive" / "old-holder").write_bytes(b"")
    (top / "config").write_bytes(b"x")
    walk = treewalk.Walk(top)
    seen = []
    for entry in walk.entries():
        if entry.depth == 1 and entry.name == "lock.exclusive":  # listed, not yet opened
            (top / "lock.exclusive").rename(tmp_path / "old")  # (so the new one cannot
            (top / "lock.exclusive").mkdir()                   # reuse its inode number)
            (top / "lock.exclusive" / "new-holder").write_bytes(b"")
            shutil.rmtree(tmp_path / "old")
        seen.append(entry.name)
    assert sorted(seen) == ["config", "lock.exclusive"] and walk.complete, walk.problems


def test_walks_say_when_they_could_not_see_everything(sysroot: Path) -> None:
    """A folder the walker may not read is counted and named, and a chown walk that could
    not reach everything raises (so the folder keeps its old owner and the plan its
    change). As root, the walk runs with the effective uid of nobody."""
    tree = _deep(sysroot / "repo", 3, 10)
    (tree / "a" / "a").chmod(0)
    euid = os.geteuid()
    try:
        if euid == 0:
            os.seteuid(65534)
        found = treewalk.usage(tree)
        with pytest.raises(OSError, match="could not give all"):
            treewalk.chown_tree(tree, 12345, 12345, 12345)
    finally:
        if euid == 0:
            os.seteuid(0)
        (tree / "a" / "a").chmod(0o755)
    assert found.unreadable == 1 and "Permission denied" in found.problems[0]
    assert treewalk.usage(tree).unreadable == 0


def test_stats_with_few_descriptors_measures_a_deep_repository_whole(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"deep": "owner: alice"})
    repo = fake_borg1(repo_path(tmp_path, "deep"))
    _deep(repo / "data" / "1", 300, 4 << 20)

    def few_fds() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    measured = subprocess.run([sys.executable, "-m", "hive", "stats", "deep", "-f",
                               str(config), "-o", "json", "--no-record"], cwd=ROOT,
                              capture_output=True, text=True, preexec_fn=few_fds, timeout=60)
    assert measured.returncode == 0, measured.stderr
    record = next(r for r in map(json.loads, measured.stdout.splitlines())
                  if r.get("type") == "repository")
    assert record["size_bytes"] >= 4 << 20 and record["unreadable"] == 0
    assert record["dirs"] == 300 + 4  # repo, data, data/0, data/1 and the 300 below


# ----------------------------------------------------------------- fuzzing

def _mutations(rng: random.Random) -> list[tuple[str, bytes]]:
    numbers = [str(rng.choice([0, 1, 2**31, 2**32, 2**63, 2**64, 10**19, 10**400])),
               "9" * rng.choice([1, 10, 11, 20, 300, 5000]), "-1", "1e999", "²", "٣"]
    n = rng.choice(numbers)
    noise = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 64, 4096])))
    return [
        ("config", f"[repository]\nversion = {n}\nsegments_per_dir = {n}\n".encode()),
        ("config", noise),
        (f"index.{n}", noise),
        (f"hints.{n}", noise),
        ("transactions", f"transaction {n}, UTC time {n}\n".encode()),
        ("transactions", noise),
        (f"lock.exclusive/host@{n}.{n}-{n}", b""),
        ("lock.roster", json.dumps({"shared": [["h", rng.choice([n, 1e308, -1, None]), 0]],
                                    "exclusive": []}).encode()[:5000]),
        ("lock.roster", noise),
        (f"data/0/{n}", noise),
    ]


def test_fuzzed_repository_files_never_crash_or_hang_a_reader(tmp_path: Path) -> None:
    """Random bytes and big numbers in config, index.N, hints.N, transactions and lock
    files of one repository (seed 13, at most ~15 s): the scan, status, stats and the
    rollback listing answer every time, and the other repository is always reported."""
    rng = random.Random(13)
    config, _good, bad = two_repos(tmp_path)
    pristine = tmp_path / "pristine"
    shutil.copytree(bad, pristine, symlinks=True)
    from hive.cli import _load

    hive_config, _ = _load(str(config), "text")
    deadline = time.monotonic() + 12
    rounds = 0
    remembered: ev.RepoState | None = None
    while time.monotonic() < deadline and rounds < 400:
        rounds += 1
        shutil.rmtree(bad)
        shutil.copytree(pristine, bad, symlinks=True)
        planted = rng.sample(_mutations(rng), rng.randint(1, 4))
        for name, content in planted:
            if len(name.rpartition("/")[2]) > 250:
                continue
            target = bad / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            if rng.random() < 0.2:
                os.utime(target, (0, rng.choice([-(2**40), 2**40, 2**33, 0])))
        state = layout.scan_repository(bad)
        assert state is not None
        if state.locked:
            locks.holders_alive(locks.lock_holders(bad, state))
        assert state.transaction is None or 0 <= state.transaction <= ev.MAX_TRANSACTION
        assert state.layout_version is None or 0 < state.layout_version < 100
        remembered, found_events = ev.reconcile(remembered, state, time.time())
        json.dumps([e.details for e in found_events])  # what the watcher writes
        found = status.gather(hive_config)
        assert {s.repository: s.state for s in found}["good"] == "ok"
        measured = stats.measure("bad", "bh-bad", str(bad), True, None)
        assert measured.transaction is None or measured.transaction <= ev.MAX_TRANSACTION
        try:
            repo = rb.Repository.read(bad)
            rb.plan_rollback(repo.transactions, repo.layout, 1, True)
            with rb.repository_lock(bad, 0):
                pass
        except rb.RollbackError:
            pass
        if not any(name.startswith("lock.exclusive/") for name, _ in planted):
            assert not (bad / "lock.exclusive").exists()
    assert rounds >= 50
    # The real commands, through DuckDB, on the last mutation and the good repository.
    measured_cli = hive_cli("stats", "-f", str(config), "-o", "json")
    assert "Traceback" not in measured_cli.stderr
    assert query(tmp_path / "state", "SELECT count(*) FROM snapshots")[0][0] == 2
    shown = hive_cli("status", "-f", str(config), "-o", "json")
    assert {r["repository"]: r["state"] for r in json.loads(shown.stdout)}["good"] == "ok"


def test_a_data_folder_that_is_a_symlink_is_not_read(tmp_path: Path) -> None:
    """An rsync import may leave `data` as a symlink to anywhere; root's readers (the
    watcher's commit classes, status) must not list or read segments through it."""
    elsewhere = fake_borg1(tmp_path / "elsewhere")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "data").symlink_to(elsewhere / "data")
    assert segments.segment_files(str(elsewhere), 0, 5)  # the real thing is found
    assert segments.segment_files(str(repo), 0, 5) == []
