"""`hive rollback`: the pure plan as tables, the lock and the moves against a real local borg.

The over-ssh story (an append-only key deletes, the sysadmin rolls back, the full-access key
sees the archive again) is in tests/test_access_matrix.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from borgrepo import locks
from reconciler import rollback as rb

LOG = """\
transaction 1, UTC time 2026-01-02T03:04:05.000001
transaction 5, UTC time 2026-01-02T03:05:00.500000
transaction 9, UTC time 2026-01-02T03:06:00.000000
transaction 13, UTC time 2026-01-02T03:07:00.000000
"""


def _t(*ids: int) -> list[rb.Transaction]:
    return [rb.Transaction(i, None) for i in ids]


def _layout(last_segment: int, index: int | None = None, missing: tuple[int, ...] = ()
            ) -> rb.Layout:
    paths = [f"data/{n // 1000}/{n}" for n in range(last_segment + 1) if n not in missing]
    if index is not None:
        paths += [f"index.{index}", f"hints.{index}", f"integrity.{index}"]
    return rb.Layout.from_paths([*paths, "config", "nonce", "README", "lock.roster"])


# --------------------------------------------------------------------------- parsing


def test_parse_transactions_reads_ids_and_utc_times() -> None:
    parsed = rb.parse_transactions(LOG)
    assert [t.id for t in parsed] == [1, 5, 9, 13]
    assert parsed[0].time == datetime(2026, 1, 2, 3, 4, 5, 1, tzinfo=UTC)


@pytest.mark.parametrize(("text", "ids"), [
    ("", []),
    ("\n\n", []),
    (LOG + "transaction 17, UTC ti", [1, 5, 9, 13]),                 # torn last line
    (LOG + "transaction 13, UTC time 2026-02-01T00:00:00\n", [1, 5, 9, 13]),  # index rebuilt
    ("transaction 3, UTC time not-a-time\n", [3]),
])
def test_parse_transactions_tolerates(text: str, ids: list[int]) -> None:
    assert [t.id for t in rb.parse_transactions(text)] == ids


def test_a_rebuilt_index_keeps_the_commit_time() -> None:
    parsed = rb.parse_transactions(LOG + "transaction 13, UTC time 2026-02-01T00:00:00\n")
    assert parsed[-1].time == datetime(2026, 1, 2, 3, 7, tzinfo=UTC)


@pytest.mark.parametrize(("text", "message"), [
    ("transaction 1, UTC time 2026-01-01T00:00:00\ngarbage\n\n", "line 2 is not borg's"),
    (LOG + "transaction 10, UTC time 2026-01-03T00:00:00\n", "line 5: transaction 10 follows 13"),
])
def test_parse_transactions_refuses(text: str, message: str) -> None:
    with pytest.raises(rb.RollbackError, match=message):
        rb.parse_transactions(text)


@pytest.mark.parametrize(("text", "target", "expected_ids"), [
    (LOG, 9, [1, 5, 9]),
    (LOG, 13, [1, 5, 9, 13]),
    (LOG, 1, [1]),
    (LOG.rstrip("\n"), 13, [1, 5, 9, 13]),
    (LOG + "transaction 13, UTC time 2026-02-01T00:00:00\n", 9, [1, 5, 9]),
])
def test_truncate_log_keeps_the_lines_up_to_the_target(text: str, target: int,
                                                       expected_ids: list[int]) -> None:
    kept = rb.truncate_log(text, target)
    assert [t.id for t in rb.parse_transactions(kept)] == expected_ids
    assert kept.endswith("\n")
    assert LOG.startswith(kept) or kept.startswith(LOG.rstrip("\n"))


def test_layout_sorts_segments_and_state_files() -> None:
    layout = rb.Layout.from_paths(["data/0/0", "data/0/7", "data/1/1000", "index.7", "hints.7",
                                   "integrity.7", "config", "nonce", "data/0/README",
                                   "data/x/3", "transactions", "lock.exclusive"])
    assert layout.segments == {0: "data/0/0", 7: "data/0/7", 1000: "data/1/1000"}
    assert layout.state_files == {"index.7": 7, "hints.7": 7, "integrity.7": 7}
    assert layout.current == 7


@pytest.mark.parametrize(("paths", "current"), [
    (["data/0/0", "data/0/4", "index.4"], 4),
    (["data/0/0", "data/0/4"], 4),          # after a rollback: no index until borg opens it
    ([], None),
])
def test_layout_current(paths: list[str], current: int | None) -> None:
    assert rb.Layout.from_paths(paths).current == current


def test_segment_ranges() -> None:
    assert rb.segment_ranges(_t(1, 5, 9)) == {1: (0, 1), 5: (2, 5), 9: (6, 9)}


_ID = "0123456789abcdef" * 4


@pytest.mark.parametrize(("text", "expected"), [
    (f"[repository]\nappend_only = 1\nid = {_ID}\n", (True, _ID)),
    (f"[repository]\nappend_only = 0\nid = {_ID}\n", (False, _ID)),
    (f"[repository]\nid = {_ID}\n", (False, _ID)),
    ("[repository]\nid = abc\n", (False, None)),  # not what borg writes
    (f"[repository]\nid = {_ID} ~\n", (False, None)),
    (f"[repository]\nid = {_ID}\n  rm -rf /\n", (False, None)),  # a continuation line
    ("not a config", (False, None)),
])
def test_read_config(text: str, expected: tuple[bool, str | None]) -> None:
    assert rb.read_config(text) == expected


# --------------------------------------------------------------------------- the plan


PLAN_CASES = [
    # (name, log ids, layout, target, append_only, move, refusal fragment, warning fragment)
    ("back two transactions", (1, 5, 9, 13), _layout(13, 13), 5, True,
     ["hints.13", "index.13", "integrity.13", "data/0/13", "data/0/12", "data/0/11",
      "data/0/10", "data/0/9", "data/0/8", "data/0/7", "data/0/6"], None, None),
    ("back one, index rebuilt since", (1, 5, 9), _layout(9, 9), 5, True,
     ["hints.9", "index.9", "integrity.9", "data/0/9", "data/0/8", "data/0/7", "data/0/6"],
     None, None),
    ("already there", (1, 5, 9), _layout(9, 9), 9, True, [], None, None),
    ("across a data/ folder boundary", (998, 1001), _layout(1001, 1001), 998, True,
     ["hints.1001", "index.1001", "integrity.1001", "data/1/1001", "data/1/1000",
      "data/0/999"], None, None),
    ("not in the log", (1, 5, 9), _layout(9, 9), 7, True, [], "choose one of 1, 5, 9", None),
    ("no log", (), _layout(9, 9), 5, True, [], "no transactions log", None),
    ("compacted since", (1, 5, 9), _layout(9, 9, missing=(2, 3, 4)), 5, True,
     ["hints.9", "index.9", "integrity.9", "data/0/9", "data/0/8", "data/0/7", "data/0/6"],
     "segments 2-4 are missing", None),
    ("not append-only", (1, 5, 9), _layout(9, 9), 5, False,
     ["hints.9", "index.9", "integrity.9", "data/0/9", "data/0/8", "data/0/7", "data/0/6"],
     None, "not append-only"),
    ("full-access commit after the log", (1, 5, 9), _layout(12, 12), 5, True,
     ["hints.12", "index.12", "integrity.12", "data/0/12", "data/0/11", "data/0/10",
      "data/0/9", "data/0/8", "data/0/7", "data/0/6"], None, "(12) is not in the log"),
]


@pytest.mark.parametrize(("name", "ids", "layout", "target", "append_only", "move", "refusal",
                          "warning"), PLAN_CASES, ids=[c[0] for c in PLAN_CASES])
def test_plan_rollback(name: str, ids: tuple[int, ...], layout: rb.Layout, target: int,
                       append_only: bool, move: list[str], refusal: str | None,
                       warning: str | None) -> None:
    plan = rb.plan_rollback(_t(*ids), layout, target, append_only)
    assert plan.move == move
    assert (refusal is None) == (not plan.refusals), plan.refusals
    if refusal:
        assert refusal in " ".join(plan.refusals)
    assert (warning is None) == (not plan.warnings), plan.warnings
    if warning:
        assert warning in " ".join(plan.warnings)
    if not plan.refusals:
        assert [t.id for t in plan.kept] == [i for i in ids if i <= target]
        assert [t.id for t in plan.undone] == [i for i in ids if i > target]
    assert not any(p in ("nonce", "config") for p in plan.move), "never the nonce or config"


# --------------------------------------------------------------------------- real borg, locally

_NO_BORG = shutil.which("borg") is None


def _borg(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
    env.update(BORG_BASE_DIR=str(base), BORG_PASSPHRASE="x",
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
    return subprocess.run(["borg", *args], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.fixture
def local_repo(tmp_path: Path) -> Path:
    """A local append-only repository: a1, a2 created, a1 deleted (transactions 1-13)."""
    repo = tmp_path / "repo"
    data = tmp_path / "file.txt"
    data.write_text("payload\n")
    base = tmp_path / "base"
    for args in (("init", "-e", "repokey", "--append-only", str(repo)),
                 ("create", f"{repo}::a1", str(data)), ("create", f"{repo}::a2", str(data)),
                 ("delete", f"{repo}::a1")):
        result = _borg(base, *args)
        assert result.returncode == 0, result.stderr
    return repo


@pytest.mark.skipif(_NO_BORG, reason="borg is not installed")
def test_lock_keeps_borg_out_and_is_released(local_repo: Path) -> None:
    base = local_repo.parent / "base"
    with rb.repository_lock(local_repo) as name:
        assert (local_repo / "lock.exclusive" / name).exists()
        kept_out = _borg(base, "list", "--lock-wait", "1", str(local_repo))
        assert kept_out.returncode == 2, kept_out.stderr
        assert "Failed to create/acquire the lock" in kept_out.stderr
    assert not (local_repo / "lock.exclusive").exists()
    assert not (local_repo / "lock.roster").exists()
    assert _borg(base, "list", str(local_repo)).returncode == 0


@pytest.mark.skipif(_NO_BORG, reason="borg is not installed")
def test_lock_refuses_while_borg_holds_it(local_repo: Path) -> None:
    base = local_repo.parent / "base"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BORG_")}
    env.update(BORG_BASE_DIR=str(base), BORG_PASSPHRASE="x")
    # `borg with-lock` runs the command with the lock held: the command tries our lock.
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from pathlib import Path;"
             "from reconciler import rollback as rb\n"
             "try:\n  with rb.repository_lock(Path(sys.argv[2])): print('GOT IT')\n"
             "except rb.RepositoryBusy as e: print('BUSY', e)")
    result = subprocess.run(
        ["borg", "with-lock", str(local_repo), "python3", "-c", probe,
         str(Path(__file__).resolve().parent.parent), str(local_repo)],
        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("BUSY"), result.stdout
    assert "is locked by a borg client" in result.stdout


@pytest.mark.skipif(_NO_BORG, reason="borg is not installed")
def test_rollback_locally_brings_back_the_deleted_archive(local_repo: Path) -> None:
    base = local_repo.parent / "base"
    fresh = local_repo.parent / "fresh-base"
    original_log = (local_repo / "transactions").read_text()
    repo = rb.Repository.read(local_repo)
    assert [t.id for t in repo.transactions][-1] == repo.layout.current
    before_delete = repo.transactions[-2].id
    plan = rb.plan_rollback(repo.transactions, repo.layout, before_delete, repo.append_only_config)
    assert not plan.refusals and not plan.warnings and plan.move
    aside = rb.aside_folder(local_repo, before_delete)
    with rb.repository_lock(local_repo):
        moved = rb.execute(plan, repo, aside)
    assert moved == plan.move
    assert all((aside / p).is_file() for p in moved), "moved, not deleted"
    assert (aside / "transactions.before-rollback").read_text() == original_log
    assert "move every file below back" in (aside / "README.txt").read_text()
    assert [t.id for t in rb.parse_transactions((local_repo / "transactions").read_text())] \
        == [t.id for t in plan.kept]
    assert (local_repo / "nonce").exists()
    listing = _borg(fresh, "list", "--short", str(local_repo))
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split() == ["a1", "a2"]
    # The client that saw the deletion refuses, until its cache and security info go.
    stale = _borg(base, "list", "--short", str(local_repo))
    assert stale.returncode == 2
    assert "newer than repository" in stale.stderr
    ident = rb.Repository.read(local_repo).id
    assert ident
    shutil.rmtree(base / ".cache" / "borg" / ident)
    shutil.rmtree(base / ".config" / "borg" / "security" / ident)
    again = _borg(base, "list", "--short", str(local_repo))
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == ["a1", "a2"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another uid")
def test_repository_work_runs_as_its_owner_so_planted_symlinks_reach_nothing(
        sysroot: Path) -> None:
    """A repository's user controls what is inside it: a `lock.roster` symlink to a root
    file must not let the rollback (run by root) write or chown that file."""
    repo = sysroot / "repo"
    repo.mkdir()
    os.chown(repo, 20000, 20000)
    victim = sysroot / "victim"
    victim.write_text("root's secret\n")
    victim.chmod(0o600)
    (repo / "lock.roster").symlink_to(victim)
    os.lchown(repo / "lock.roster", 20000, 20000)
    assert rb.as_owner(repo, os.geteuid) == 20000
    # Written beside and renamed over: the symlink is replaced, its target never opened.
    rb.as_owner(repo, lambda: locks._write_roster(repo / "lock.roster", {"shared": []},
                                               os.stat(repo)))
    roster = repo / "lock.roster"
    assert not roster.is_symlink() and roster.stat().st_uid == 20000
    assert victim.stat().st_uid == 0 and victim.read_text() == "root's secret\n"
    aside = rb.make_aside_folder(repo, 9)
    assert aside.stat().st_uid == 20000 and aside.parent == repo.parent


@pytest.mark.skipif(_NO_BORG, reason="borg is not installed")
def test_a_full_access_commit_between_logged_transactions_needs_force(
        local_repo: Path) -> None:
    """borg logs only append-only commits: a full-access commit in between is found by the
    COMMIT entry ending its segment, and rolling back past it is a warning."""
    base = local_repo.parent / "base"
    data = local_repo.parent / "file.txt"
    for args in (("config", str(local_repo), "append_only", "0"),
                 ("create", f"{local_repo}::full", str(data)),
                 ("config", str(local_repo), "append_only", "1"),
                 ("create", f"{local_repo}::a3", str(data))):
        result = _borg(base, *args)
        assert result.returncode == 0, result.stderr
    repo = rb.Repository.read(local_repo)
    logged = [t.id for t in repo.transactions]
    target = logged[-2]  # the transaction before a3; the full-access commit lies between
    plan = rb.plan_rollback(repo.transactions, repo.layout, target, True)
    commits = rb.unlogged_commits(local_repo, repo.layout, repo.transactions, target)
    assert len(commits) == 1 and target < commits[0] < logged[-1], (commits, logged)
    rb.warn_unlogged(plan, commits)
    assert any("not in the transactions log (a full-access key wrote them)" in w
               for w in plan.warnings)
    # Rolling back only a3 (to the state after the full-access commit) is not flagged.
    later = rb.plan_rollback(repo.transactions, repo.layout, logged[-1], True)
    rb.warn_unlogged(later, rb.unlogged_commits(local_repo, repo.layout, repo.transactions,
                                                logged[-1]))
    assert later.warnings == []
