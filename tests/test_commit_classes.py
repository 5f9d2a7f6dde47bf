"""What each borg commit did, read from segment headers, through the real watcher.

Real borg (Debian's 1.2, and 1.4 with HIVE_TEST_BORG14) runs init, create, create with
no new data, prune, delete, compact, check, a create killed by SIGKILL after a
checkpoint, and commits made while the watcher is down (a borgmatic-like create + prune
+ compact); the recorded `updated` events must say what each was, and "last backup" must
stay at the create. Then the parser itself is fuzzed with random and mutated segments.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
from test_watcher_support import (
    Borg,
    barrier,
    events,
    hive_cli,
    make_config,
    optional_borgs,
    repo_path,
    wait_for,
    watching,
)

from borgrepo import segments


def _updates(state_dir: Path) -> list[dict[str, object]]:
    return [d for k, d, _ in events(state_dir, "r") if k == "updated"]


def _borg1(borg: Borg, *args: str) -> None:
    result = subprocess.run([borg.binary, *args], capture_output=True, text=True,
                            env=borg.env(), timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr


def _index(repo: Path) -> int:
    return max((int(p.name[6:]) for p in repo.glob("index.*") if p.name[6:].isdigit()),
               default=0)


def one_repository(tmp_path: Path, data_bytes: int) -> tuple[Path, Path, Path, Path]:
    """hive.yaml with repository r (owner alice), r's folder, the state dir, and a source
    folder holding `data_bytes` of random data to back up."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "random").write_bytes(os.urandom(data_bytes))
    return (make_config(tmp_path, {"r": "owner: alice"}), repo_path(tmp_path, "r"),
            tmp_path / "state", src)


@pytest.mark.parametrize("binary", [b for b in optional_borgs()
                                    if "borg-2" not in str(b)])
def test_each_commit_is_classified_through_the_watcher(tmp_path: Path, binary: str) -> None:
    borg = Borg(tmp_path / "borg-base", binary)
    if borg.two:
        pytest.skip("borg 2 keeps archives as entries under archives/, not in segments")
    config, repo, state, src = one_repository(tmp_path, 3_000_000)
    with watching(config) as watcher:
        borg("init", repo)
        borg("create", repo, "a1", str(src))
        borg("create", repo, "a2", str(src))      # no new data
        _borg1(borg, "prune", "--keep-last", "1", str(repo))
        borg("create", repo, "a3", str(src))
        _borg1(borg, "delete", f"{repo}::a3")
        _borg1(borg, "compact", str(repo))
        _borg1(borg, "check", str(repo))          # read-only: no commit
        barrier(tmp_path, state)
        assert watcher.stop() == 0, watcher.text()
    seen = _updates(state)
    assert [d["what"] for d in seen] == ["init", "backup", "backup", "delete", "backup",
                                         "delete", "compact"], seen
    assert seen[1]["bytes_added"] > 3_000_000 and seen[1]["objects_added"] >= 2
    assert 0 < seen[2]["bytes_added"] < 10_000        # the archive's own metadata only
    assert seen[3]["objects_deleted"] >= 1 and seen[3]["bytes_added"] == 0
    assert all(d["backup"] == (d["what"] == "backup") for d in seen)
    last_create = _index(repo)

    # borgmatic-like create + prune + compact while no watcher runs, and a create killed
    # by SIGKILL after its first checkpoint.
    (src / "more").write_bytes(os.urandom(1_000_000))
    borg("create", repo, "b1", str(src))
    created = time.time()
    _borg1(borg, "prune", "--keep-last", "1", str(repo))
    before = _index(repo)
    time.sleep(1.1)
    big = tmp_path / "big"
    big.mkdir()
    (big / "data").write_bytes(os.urandom(300_000_000))
    killed = borg.start("create", repo, "k1", "--checkpoint-interval=1", str(big))
    try:
        wait_for(lambda: _index(repo) > before, timeout=60, what="a checkpoint commit")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
    with watching(config) as watcher:
        barrier(tmp_path, state)
        assert watcher.stop() == 0, watcher.text()
    missed = _updates(state)[len(seen):]
    whats = [d["what"] for d in missed]
    assert whats[:2] == ["backup", "delete"], missed   # b1, then the prune
    assert "backup" in whats[2:], missed               # the checkpoint
    assert missed[0]["previous"] == last_create
    rows = [(k, d) for k, d, _ in events(state, "r") if k == "updated"][len(seen):]
    assert len(rows) == len(missed)

    # Without any watcher record, status classifies from disk: the checkpoint is the
    # newest backup, and no later commit.
    for item in state.iterdir():
        if item.name.startswith("events"):
            item.unlink()
    shown = json.loads(hive_cli("status", "-f", str(config), "-o", "json").stdout)[0]
    backup = datetime.fromisoformat(shown["last_backup"]).timestamp()
    activity = datetime.fromisoformat(shown["last_activity"]).timestamp()
    assert 0 <= activity - backup < 2  # the commit segment, then its index.N
    assert backup > created


def test_borgmatic_run_leaves_last_backup_at_the_create(tmp_path: Path) -> None:
    borg = Borg(tmp_path / "borg-base")
    config, repo, state, src = one_repository(tmp_path, 100_000)
    borg("init", repo)
    with watching(config) as watcher:
        borg("create", repo, "a1", str(src))
        barrier(tmp_path, state)
        first = hive_cli("status", "-f", str(config), "-o", "json")
        created = json.loads(first.stdout)[0]["last_backup"]
        time.sleep(1.1)
        _borg1(borg, "prune", "--keep-last", "1", str(repo))
        _borg1(borg, "compact", str(repo))
        barrier(tmp_path, state)
        assert watcher.stop() == 0, watcher.text()
    shown = json.loads(hive_cli("status", "-f", str(config), "-o", "json").stdout)[0]
    assert created is not None and shown["last_backup"] == created, (created, shown)
    assert shown["last_activity"] > shown["last_backup"]


BORG2 = [b for b in optional_borgs() if b.id == "borg-2"]


@pytest.mark.parametrize("binary", BORG2)
def test_borg2_commits_are_classified_by_archive_entries(tmp_path: Path,
                                                          binary: str) -> None:
    """A borg 2 beta (HIVE_TEST_BORG2): create writes `archives/<id>`, delete and prune
    rename entries to `.del`, compact removes those and commits no manifest."""
    borg = Borg(tmp_path / "borg-base", binary)
    assert borg.two, borg.version
    config, repo, state, src = one_repository(tmp_path, 1_000_000)
    with watching(config) as watcher:
        borg("init", repo)
        borg("create", repo, "a1", str(src))
        borg("create", repo, "a2", str(src))           # no new data: still a backup
        borg("delete", repo, "-a", "a1")
        borg("create", repo, "a3", str(src))
        borg("prune", repo, "--keep-last", "1")          # a2 goes
        barrier(tmp_path, state)
        before_compact = len(events(state, "r"))
        borg("compact", repo)
        borg("check", repo)
        barrier(tmp_path, state)
        assert watcher.stop() == 0, watcher.text()
    seen = _updates(state)
    assert [d["what"] for d in seen] == ["init", "backup", "backup", "delete", "backup",
                                         "delete"], seen
    assert all(d["backup"] == (d["what"] == "backup") for d in seen)
    assert [(d["archives"], d["archives_deleted"]) for d in seen[1:]] == [
        (1, 0), (2, 0), (1, 1), (2, 1), (1, 2)]
    # compact removes the `.del` entries but commits no manifest: sessions only
    assert [k for k, _, _ in events(state, "r")[before_compact:]] == [
        "opened", "closed", "opened", "closed"]
    assert sorted(p.name.endswith(".del") for p in (repo / "archives").iterdir()) == [False]

    # While no watcher runs: a create and a prune (two commits, one span for a rescan:
    # it added an entry, so it is a backup); then, watched, a delete, an undelete and a
    # delete again.
    (src / "more").write_bytes(os.urandom(100_000))
    borg("create", repo, "b1", str(src))
    borg("prune", repo, "--keep-last", "1")
    with watching(config) as watcher:
        barrier(tmp_path, state)
        borg("delete", repo, "-a", "b1")
        borg("undelete", repo, "-a", "b1")       # renamed back: neither backup nor delete
        borg("delete", repo, "-a", "b1")
        barrier(tmp_path, state)
        assert watcher.stop() == 0, watcher.text()
    missed = _updates(state)[len(seen):]
    assert [(d["what"], d["archives"]) for d in missed] == [
        ("backup", 1), ("delete", 0), ("other", 1), ("delete", 0)]

    # Without any watcher record, status reads the newest archive entry from disk: b1's,
    # though b1 is deleted now (it was a backup), and the last activity is the delete.
    b1 = max(p.stat().st_mtime for p in (repo / "archives").iterdir())
    for item in state.iterdir():
        if item.name.startswith("events"):
            item.unlink()
    shown = json.loads(hive_cli("status", "-f", str(config), "-o", "json").stdout)[0]
    assert datetime.fromisoformat(shown["last_backup"]).timestamp() == pytest.approx(b1)
    assert shown["last_activity"] > shown["last_backup"]


@pytest.mark.parametrize("binary", BORG2)
def test_borg2_prune_and_compact_leave_last_backup_at_the_create(tmp_path: Path,
                                                                 binary: str) -> None:
    borg = Borg(tmp_path / "borg-base", binary)
    config, repo, state, src = one_repository(tmp_path, 100_000)
    borg("init", repo)
    borg("create", repo, "a0", str(src))
    with watching(config) as watcher:
        borg("create", repo, "a1", str(src))
        barrier(tmp_path, state)
        created = json.loads(hive_cli("status", "-f", str(config), "-o", "json").stdout)[0]
        time.sleep(1.1)
        borg("prune", repo, "--keep-last", "1")
        borg("compact", repo)
        barrier(tmp_path, state)
        assert watcher.stop() == 0, watcher.text()
    assert [d["what"] for d in _updates(state)][-2:] == ["backup", "delete"]
    shown = json.loads(hive_cli("status", "-f", str(config), "-o", "json").stdout)[0]
    assert created["last_backup"] is not None
    assert shown["last_backup"] == created["last_backup"], (created, shown)
    assert shown["last_activity"] > shown["last_backup"]
    assert shown["state"] == "ok"


def test_borg2_archives_listing_reads_only_what_borg_writes(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """The repository's user controls archives/: a symlinked folder, FIFOs, symlinks,
    sub-folders and future dates are not archives, and the listing is bounded."""
    from borgrepo import archives

    repo = tmp_path / "r"
    repo.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ("a" * 64)).write_bytes(b"")
    (repo / "archives").symlink_to(outside)
    assert archives.listing(str(repo)) == archives.Listing()     # never followed
    (repo / "archives").unlink()
    (repo / "archives").mkdir()
    assert archives.what(archives.listing(str(repo)), None, 10) == "other"
    os.mkfifo(repo / "archives" / "fifo")
    (repo / "archives" / "link").symlink_to(outside / ("a" * 64))
    (repo / "archives" / "dir").mkdir()
    (repo / "archives" / "x.tmp").write_bytes(b"")
    future = repo / "archives" / "future"
    future.write_bytes(b"")
    os.utime(future, (time.time() + 10 * 86_400,) * 2)
    found = archives.listing(str(repo))
    assert (found.live, found.deleted, found.written, found.problem) == (1, 0, (), None)
    (repo / "archives" / "b.del").write_bytes(b"")
    found = archives.listing(str(repo))
    assert (found.live, found.deleted, len(found.soft_deleted)) == (1, 1, 1)
    monkeypatch.setattr(archives, "ENTRY_LIMIT", 3)
    assert "more than 3 entries" in (archives.listing(str(repo)).problem or "")


@pytest.mark.parametrize(("listing", "previous", "expected"), [
    ({}, None, "init"),                                    # repo-create: no archives/
    ({"exists": True}, None, "other"),                     # first sight: not guessed
    ({"exists": True, "written": (15,), "folder_mtime": 15}, 10, "backup"),
    ({"exists": True, "written": (5, 15), "soft_deleted": (16,)}, 10, "backup"),
    ({"exists": True, "written": (5,), "soft_deleted": (15,)}, 10, "delete"),
    ({"exists": True, "written": (5,), "folder_mtime": 15}, 10, "delete"),
    ({"exists": True, "written": (5,), "folder_mtime": 5}, 10, "other"),   # check --repair
    ({"exists": True, "written": (5,), "renamed": (15,), "folder_mtime": 15}, 10,
     "other"),                                             # undelete
    ({"exists": True, "written": (25,), "folder_mtime": 25}, 10, "other"),  # a later create
])
def test_borg2_what_a_commit_did(listing: dict[str, object], previous: int | None,
                                 expected: str) -> None:
    from borgrepo import archives

    assert archives.what(archives.Listing(**listing), previous, 20) == expected  # type: ignore[arg-type]


# ----------------------------------------------------------------- the parser, fuzzed

def _segment(entries: list[tuple[int, bytes, int]]) -> bytes:
    out = bytearray(segments.MAGIC)
    for tag, ident, payload in entries:
        body = ident + bytes(payload) if tag != segments.COMMIT else b""
        out += segments._HEADER.pack(0, segments.HEADER_SIZE + len(body), tag) + body
    return bytes(out)


def test_parser_fuzz_never_crashes_or_hangs(tmp_path: Path) -> None:
    """Random bytes and mutations of well-formed and of real borg segments (seed 10, ~5 s):
    every result is a list of commits, a bad segment makes its commit `other` with a
    problem."""
    rng = random.Random(10)
    repo = tmp_path / "r"
    (repo / "data" / "0").mkdir(parents=True)
    good = _segment([(segments.PUT, os.urandom(32), 100), (segments.DELETE,
                     segments.MANIFEST_ID, 0), (segments.PUT, segments.MANIFEST_ID, 50),
                     (segments.COMMIT, b"", 0)])
    # Real segments too: a real borg create's, each mutated in turn.
    real = tmp_path / "real"
    borg = Borg(tmp_path / "borg-base")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_bytes(os.urandom(200_000))
    borg("init", real)
    borg("create", real, "a1", str(tmp_path / "src"))
    samples = [good, *(p.read_bytes() for p in sorted((real / "data").glob("*/*")))]
    assert [c.what for c in segments.commits(str(real), 1, _index(real))] == ["backup"]
    deadline, rounds = time.monotonic() + 5, 0
    while time.monotonic() < deadline and rounds < 2000:
        rounds += 1
        data = bytearray(rng.choice(samples) if rng.random() < 0.7
                         else os.urandom(rng.randint(0, 300)))
        for _ in range(rng.randint(0, 4)):
            if data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
        if rng.random() < 0.2:
            data = data[:rng.randint(0, len(data))]
        (repo / "data" / "0" / "3").write_bytes(bytes(data))
        found = segments.commits(str(repo), 2, 3)
        assert all(c.what in segments.WHATS for c in found)
        assert all(c.what == "other" for c in found if c.problem)
    assert rounds > 100
    (repo / "data" / "0" / "3").write_bytes(good)
    assert [c.what for c in segments.commits(str(repo), 2, 3)] == ["backup"]
    (repo / "data" / "0" / "3").unlink()
    os.mkfifo(repo / "data" / "0" / "3")
    assert [c.problem is not None for c in segments.commits(str(repo), 2, 3)] == [True]


def test_a_backup_far_above_the_usual_records_unusual_growth(tmp_path: Path) -> None:
    """Ten backups of ~100 MB, then one of 3 GB (sparse segments with real headers): the
    last one records unusual_growth; a 500 MB one (5x) and a first large backup do not."""
    from watcher import commits
    from watcher import events as ev

    repo = tmp_path / "r"
    (repo / "data" / "0").mkdir(parents=True)
    head = segments._HEADER
    history = commits.new_history()

    def backup(transaction: int, size: int) -> list[str]:
        """Segments transaction-3 .. transaction: data, manifest DELETE, PUT, COMMIT."""
        data = repo / "data" / "0" / str(transaction - 3)
        with open(data, "wb") as out:
            out.write(segments.MAGIC + head.pack(0, size, segments.PUT) + os.urandom(32))
            out.truncate(len(segments.MAGIC) + size)
        for n, body in ((1, head.pack(0, 41, segments.DELETE) + segments.MANIFEST_ID),
                        (2, head.pack(0, 51, segments.PUT) + segments.MANIFEST_ID
                         + bytes(10)), (3, head.pack(0, 9, segments.COMMIT))):
            (repo / "data" / "0" / str(transaction - 3 + n)).write_bytes(segments.MAGIC + body)
        event = ev.RepoEvent(time.time(), "updated", {"transaction": transaction,
                                                      "previous": transaction - 4,
                                                      "backup": True})
        found = commits.classify(str(repo), ev.BORG1, [event], history)
        assert found[0].details["what"] == "backup"
        assert found[0].details["bytes_added"] == size
        return [e.kind for e in found]

    assert backup(5, 3 << 30) == ["updated"]          # no history yet: nothing to compare
    history.clear()
    for i in range(10):
        assert backup(9 + 4 * i, 100_000_000 + i) == ["updated"]
    assert backup(49, 500_000_000) == ["updated"]     # 5x the median, under 1 GB
    assert backup(53, 3 << 30) == ["updated", "unusual_growth"]
