"""`hive stats`: the walk agrees with `du`, never follows a symlink out of a repository, and
each run appends one snapshot row per repository. Real borg repositories, real DuckDB."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
from conftest import nobody_hive_argv, requires_root
from test_watcher_support import (
    ROOT,
    Borg,
    backup_in_progress,
    hive_cli,
    make_config,
    optional_borgs,
    query,
    repo_path,
)

from watcher.stats import usage


def du_bytes(path: Path) -> int:
    out = subprocess.run(["du", "-s", "--block-size=1", str(path)], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def test_usage_matches_du_and_stays_inside(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    (tree / "data" / "0").mkdir(parents=True)
    (tree / "data" / "1").mkdir()
    for i in range(30):
        (tree / "data" / str(i % 2) / str(i)).write_bytes(os.urandom(1000 * (i + 1)))
    (tree / "index.5").write_bytes(b"x" * 5000)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"y" * 5_000_000)
    (tree / "link-to-dir").symlink_to(outside)           # must not be entered
    (tree / "link-to-file").symlink_to(outside / "big")  # counted as the link, not the file
    os.link(tree / "index.5", tree / "hardlink")          # counted once, as du does
    found = usage(tree)
    assert found.size_bytes == du_bytes(tree)
    assert found.size_bytes < 5_000_000
    assert found.files == 30 + 1 + 2  # segments, index, two symlinks (hard link once)
    assert found.dirs == 4            # repo, data, data/0, data/1
    assert found.unreadable == 0


def test_usage_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    found = usage(tmp_path / "nothing")
    assert (found.files, found.unreadable) == (0, 1)


@pytest.mark.parametrize("binary", optional_borgs())
def test_stats_of_real_repositories(tmp_path: Path, binary: str) -> None:
    config = make_config(tmp_path, {"used": "owner: alice, quota: 10M",
                                    "fresh": "owner: alice", "absent": "owner: bob"})
    borg = Borg(tmp_path / "borg-base", binary)
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(os.urandom(300_000))
    used, fresh = repo_path(tmp_path, "used"), repo_path(tmp_path, "fresh")
    borg("init", used)
    borg("create", used, "a1", str(src))
    borg("init", fresh)
    leftover = tmp_path / "repos" / "bh-oldrepo" / "oldrepo"  # on disk, not in the file
    leftover.mkdir(parents=True)
    result = hive_cli("stats", "-f", str(config), "-o", "json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["type"] == "version" and records[-1]["type"] == "summary"
    by_name = {r["repository"]: r for r in records if r["type"] == "repository"}
    assert set(by_name) == {"used", "fresh", "absent", "oldrepo"}
    u = by_name["used"]
    assert u["layout"] == ("borg2" if borg.two else "borg1")
    assert u["layout_version"] == (3 if borg.two else 1)
    assert u["size_bytes"] == du_bytes(used)
    assert u["files"] == sum(len(files) for _, _, files in os.walk(used))
    assert u["quota_bytes"] == 10_000_000
    assert u["quota_used"] == pytest.approx(u["size_bytes"] / 10_000_000)
    assert u["locked"] is False and u["host"] == "test1"
    if not borg.two:
        index = max(used.glob("index.*"), key=lambda p: int(p.name[6:]))
        assert datetime.fromisoformat(u["last_update"]).timestamp() == pytest.approx(
            index.stat().st_mtime, abs=1e-3)
    assert by_name["absent"]["present"] is False and by_name["absent"]["size_bytes"] is None
    assert by_name["oldrepo"]["in_config"] is False and by_name["oldrepo"]["layout"] is None
    again = hive_cli("stats", "-f", str(config))
    assert again.returncode == 0, again.stderr
    assert "4 snapshot rows appended" in again.stdout
    rows = query(tmp_path / "state", "SELECT repository, count(*), count(DISTINCT time) "
                                     "FROM snapshots GROUP BY ALL ORDER BY 1")
    assert rows == [(name, 2, 2) for name in ("absent", "fresh", "oldrepo", "used")]


def test_stats_sees_a_lock_and_can_be_limited(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"busy": "owner: alice", "idle": "owner: alice"})
    borg = Borg(tmp_path / "borg-base")
    busy = repo_path(tmp_path, "busy")
    borg("init", busy)
    with backup_in_progress(borg, busy, "a1", tmp_path / "fifo") as backup:
        result = hive_cli("stats", "busy", "-f", str(config), "-o", "json", "--no-record")
    assert backup.wait(timeout=60) == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    repos = [r for r in records if r["type"] == "repository"]
    assert [(r["repository"], r["locked"]) for r in repos] == [("busy", True)]
    assert repos[0]["lock_since"] is not None
    assert not (tmp_path / "state" / "events.duckdb").exists()  # --no-record
    unknown = hive_cli("stats", "nosuch", "-f", str(config))
    assert unknown.returncode == 1 and "no such repository: nosuch" in unknown.stderr


def test_stats_never_leaves_the_repository_through_a_symlink(tmp_path: Path) -> None:
    """A repository user could plant a symlink to / in their repository."""
    config = make_config(tmp_path, {"sneaky": "owner: alice"})
    repo = repo_path(tmp_path, "sneaky")
    repo.mkdir()
    (repo / "config").write_text("[repository]\nversion = 1\n")
    (repo / "root").symlink_to("/")
    (repo / "data").symlink_to("/usr")
    result = hive_cli("stats", "-f", str(config), "-o", "json", "--no-record")
    record = [json.loads(line) for line in result.stdout.splitlines()][1]
    assert result.returncode == 0, result.stderr
    assert record["files"] == 3 and record["dirs"] == 1
    assert record["size_bytes"] == du_bytes(repo)


@requires_root
def test_an_unreadable_repository_is_reported_not_fatal(sysroot: Path) -> None:
    """As `nobody`, a 0700 repository cannot be measured: say so and exit 1, measure the
    rest."""
    argv = nobody_hive_argv(sysroot)
    if argv is None:
        pytest.skip("cannot run this interpreter as nobody")
    config = make_config(sysroot, {"r1": "owner: alice", "open": "owner: alice"})
    repo = repo_path(sysroot, "r1")
    (repo / "data").mkdir(parents=True)
    (repo / "config").write_text("[repository]\nversion = 1\n")
    repo.chmod(0o700)
    config.chmod(0o644)
    result = subprocess.run([*argv, "stats", "-f", str(config), "--no-record", "-o", "json"],
                            capture_output=True, text=True, cwd=sysroot, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    records = {r.get("repository"): r for r in map(json.loads, result.stdout.splitlines())}
    assert records["r1"]["errors"] == [f"cannot read {repo}: Permission denied"]
    assert records["open"]["present"] is False and records["open"]["errors"] == []


def test_rollback_aside_folders_are_not_repositories(tmp_path: Path) -> None:
    """`hive rollback` moves files into `<repo>.rollback-<time>-to-<N>` beside the
    repository: that folder is not a repository to measure (nor is borg's `.cache`), by
    the same name rule the watcher uses; a repository removed from hive.yaml still is."""
    from reconciler.rollback import aside_folder

    config = make_config(tmp_path, {"r1": "owner: alice"})
    repo = repo_path(tmp_path, "r1")
    repo.mkdir()
    (repo / "config").write_text("[repository]\nversion = 1\n")
    aside = aside_folder(repo, 3)
    aside.mkdir()
    (aside / "index.5").write_bytes(b"x" * 100)
    (repo.parent / ".cache").mkdir()
    (tmp_path / "repos" / "bh-old" / "old").mkdir(parents=True)
    result = hive_cli("stats", "-f", str(config), "-o", "json", "--no-record")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["repository"] for r in records if r["type"] == "repository") == [
        "old", "r1"]


def test_the_readmes_query_merges_the_files_of_several_hosts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts, each with its own `hive stats` and DuckDB file: README's SQL block for
    several hosts, run as written on copies of both, gives each host's rows."""
    import duckdb

    for host, repository in (("east", "photos"), ("west", "mail")):
        (tmp_path / host).mkdir()
        config = make_config(tmp_path / host, {repository: "owner: alice"})
        config.write_text(config.read_text().replace("name: test1", f"name: {host}"))
        (repo_path(tmp_path / host, repository) / "data").mkdir(parents=True)
        (repo_path(tmp_path / host, repository) / "data" / "0").write_bytes(b"x" * 10_000)
        result = hive_cli("stats", "-f", str(config))
        assert result.returncode == 0, result.stderr
        shutil.copy(tmp_path / host / "state" / "events.duckdb", tmp_path / f"{host}.duckdb")
    readme = (ROOT / "README.md").read_text()
    block = next(b for b in readme.split("```sql\n")[1:] if b.startswith("-- several hosts"))
    sql = block.split("```")[0]
    monkeypatch.chdir(tmp_path)
    con = duckdb.connect()
    *setup, query_text = [s for s in sql.split(";") if s.strip()]
    for statement in setup:
        con.execute(statement)
    rows = con.execute(query_text).fetchall()
    assert [(host, repository) for host, repository, _ in rows] == [
        ("east", "photos"), ("west", "mail")]
    assert all(size >= 10_000 for *_, size in rows)
