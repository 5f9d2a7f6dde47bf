"""`hive status`: a table of states for people, a JSON list for machines, exit codes for
monitoring. First the rules as a pure table, then the command on real repositories."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import nobody_hive_argv, requires_root
from test_watcher_support import (
    Borg,
    hive_cli,
    make_config,
    repo_path,
    watching,
)

import schemas
from watcher.events import BORG1, RepoState
from watcher.status import Disk, Recorded, evaluate

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
HOUR = 3600.0

CONFIG = schemas.load_text(textwrap.dedent("""\
    version: 1
    server: {name: t, ssh_host: h, repos_root: /srv/repos, state_dir: /var/lib/hive}
    owners: {alice: {}}
    repositories:
      r: {owner: alice, quota: 1G}
      weekly: {owner: alice, stale_after: 8d}
      paused: {owner: alice, mode: disabled}
    """), "hive.yaml", Path("/"))


def backed_up(hours_ago: float, **kw: object) -> RepoState:
    return RepoState(layout=BORG1, transaction=9,
                     commit_time=NOW.timestamp() - hours_ago * HOUR, **kw)  # type: ignore[arg-type]


LOCK = {"locks": frozenset({"lock.exclusive"})}


@pytest.mark.parametrize(("repo", "disk", "recorded", "state"), [
    ("r", Disk(backed_up(1)), Recorded(), "ok"),
    ("r", Disk(backed_up(27)), Recorded(), "stale"),                 # default 26h
    ("weekly", Disk(backed_up(27)), Recorded(), "ok"),               # its own 8d
    ("weekly", Disk(backed_up(24 * 9)), Recorded(), "stale"),
    ("r", Disk(RepoState()), Recorded(), "never backed up"),         # an empty folder
    ("r", Disk(replace(backed_up(1), transaction=1)), Recorded(), "never backed up"),  # init
    ("r", Disk(None), Recorded(last_backup=NOW), "missing on disk"),
    ("paused", Disk(None, readable=False), Recorded(), "disabled"),
    ("r", Disk(backed_up(1, **LOCK, lock_since=NOW.timestamp() - 60), holders_alive=False),
     Recorded(), "locked"),                                          # holder gone
    ("r", Disk(backed_up(1, **LOCK, lock_since=NOW.timestamp() - 60), holders_alive=True),
     Recorded(), "ok"),                                              # a backup running
    ("r", Disk(backed_up(30, **LOCK, lock_since=NOW.timestamp() - 25 * HOUR)), Recorded(),
     "locked"),                                                      # older than 24h
    # unreadable folder (status as a non-root user): what the watcher recorded counts
    ("r", Disk(None, readable=False), Recorded(last_backup=NOW - timedelta(hours=2)), "ok"),
    ("r", Disk(None, readable=False), Recorded(), "never backed up"),
    ("r", Disk(None, readable=False),
     Recorded(last_backup=NOW, state=backed_up(0, **LOCK, lock_since=NOW.timestamp() - 90000)),
     "locked"),
])
def test_states(repo: str, disk: Disk, recorded: Recorded, state: str) -> None:
    assert evaluate(CONFIG, repo, disk, recorded, NOW, 24 * HOUR).state == state


def test_last_backup_is_the_newer_of_disk_and_database() -> None:
    disk = Disk(backed_up(5))
    newer = evaluate(CONFIG, "r", disk, Recorded(last_backup=NOW - timedelta(hours=1)), NOW,
                     HOUR)
    assert newer.age_seconds == HOUR
    older = evaluate(CONFIG, "r", disk, Recorded(last_backup=NOW - timedelta(hours=9)), NOW,
                     HOUR)
    assert older.age_seconds == 5 * HOUR


def test_quota_use_comes_from_the_last_snapshot() -> None:
    found = evaluate(CONFIG, "r", Disk(backed_up(1)), Recorded(size_bytes=250_000_000), NOW,
                     HOUR)
    assert (found.size_bytes, found.quota_bytes, found.quota_used) == (250_000_000,
                                                                       10**9, 0.25)
    data = found.as_json()
    assert data["last_backup"] == "2026-11-26T11:00:00+00:00"
    assert {"repository", "owner", "mode", "state", "last_backup", "size_bytes",
            "quota_bytes"} <= set(data)


# ----------------------------------------------------------------------------- the command


@pytest.fixture
def server(tmp_path: Path) -> Path:
    """Five repositories, one per state, made with the real borg; no watcher has run."""
    config = make_config(tmp_path, {
        "good": "owner: alice, quota: 1G",
        "old": "owner: bob, groups: [team]",
        "fresh": "owner: bob",
        "paused": "owner: alice, mode: disabled",
        "gone": "owner: alice",
    })
    borg = Borg(tmp_path / "borg-base")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    for name in ("good", "old"):
        borg("init", repo_path(tmp_path, name))
        borg("create", repo_path(tmp_path, name), "a1", str(src))
    borg("init", repo_path(tmp_path, "fresh"))
    two_days_ago = time.time() - 2 * 86400
    old = repo_path(tmp_path, "old")
    for index in [*old.glob("index.*"), *old.glob("data/*/*")]:
        os.utime(index, (two_days_ago, two_days_ago))  # its last backup was two days ago
    return config


def status(config: Path, *args: str) -> tuple[int, list[dict[str, object]]]:
    result = hive_cli("status", "-f", str(config), "-o", "json", *args)
    assert result.returncode in (0, 2), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_status_json_without_a_watcher(server: Path) -> None:
    code, found = status(server)
    assert code == 2
    assert {s["repository"]: s["state"] for s in found} == {
        "fresh": "never backed up", "gone": "missing on disk", "good": "ok",
        "paused": "disabled", "old": "stale"}
    good = next(s for s in found if s["repository"] == "good")
    assert good["owner"] == "alice" and good["mode"] == "borg"
    assert good["quota_bytes"] == 10**9 and good["size_bytes"] is None  # no stats run yet
    assert datetime.fromisoformat(good["last_backup"]) > datetime.now(UTC) - timedelta(hours=1)
    old = next(s for s in found if s["repository"] == "old")
    assert 47 * 3600 < old["age_seconds"] < 49 * 3600
    assert next(s for s in found if s["repository"] == "fresh")["last_backup"] is None


def test_filters_and_exit_codes(server: Path) -> None:
    code, found = status(server, "--state", "ok")
    assert (code, [s["repository"] for s in found]) == (0, ["good"])
    assert status(server, "--owner", "alice", "--state", "ok", "--state", "disabled")[0] == 0
    code, found = status(server, "--owner", "bob")
    assert (code, [s["repository"] for s in found]) == (2, ["fresh", "old"])
    code, found = status(server, "--group", "team")  # shared with it, or owned by bob
    assert [s["repository"] for s in found] == ["fresh", "old"]
    assert status(server, "--state", "stale")[1][0]["repository"] == "old"
    unknown = hive_cli("status", "-f", str(server), "--owner", "nobody")
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    server.write_text(server.read_text() + "  broken: {owner: carol}\n")
    invalid = hive_cli("status", "-f", str(server), "-o", "json")
    assert invalid.returncode == 1 and invalid.stdout == ""


def test_status_of_named_repositories_gives_their_client_url(server: Path) -> None:
    """`hive status REPO`: the URL a client gives borg (HiveConfig.client_url, with the
    server's ssh_host and ssh_port) and a BORG_REPO line that a shell takes as it is."""
    server.write_text(server.read_text().replace("  state_dir: ./state\n",
                                                 "  state_dir: ./state\n  ssh_port: 2222\n"))
    url = f"ssh://bh-good@127.0.0.1:2222{server.parent}/repos/bh-good/good"
    assert schemas.load(server).client_url("good") == url
    result = hive_cli("status", "-f", str(server), "good", "paused")
    assert result.returncode == 0, result.stderr       # ok and disabled
    lines = result.stdout.splitlines()
    assert [x.split()[0] for x in lines[1:3]] == ["good", "paused"]
    assert f"  URL: {url}" in lines
    (line,) = [x.strip() for x in lines if "BORG_REPO" in x]  # not for the disabled one
    shell = subprocess.run(["sh", "-c", f'{line}; printf %s "$BORG_REPO"'],
                           capture_output=True, text=True, check=True)
    assert shell.stdout == url
    code, found = status(server, "good", "paused")
    assert code == 0
    assert [(s["repository"], s["url"], s["borg_repo"]) for s in found] == [
        ("good", url, line), ("paused", url.replace("good", "paused"), None)]
    assert "URL:" not in hive_cli("status", "-f", str(server)).stdout  # the table only
    unknown = hive_cli("status", "-f", str(server), "nope")
    assert unknown.returncode == 1 and "nope" in unknown.stderr


def test_status_table_and_sizes_after_stats(server: Path) -> None:
    assert hive_cli("stats", "-f", str(server)).returncode == 0
    result = hive_cli("status", "-f", str(server))
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "OWNER", "MODE", "STATE", "LAST", "BACKUP",
                                "AGE", "SIZE", "QUOTA", "USE"]
    good = next(line for line in lines if line.startswith("good "))
    assert " ok " in good and " kB " in good and "% of 1.0 GB" in good
    assert "never backed up" in next(line for line in lines if line.startswith("fresh "))
    assert lines[-1] == ("5 repositories on test1: 1 ok, 1 stale, 1 never backed up, 1 disabled, "
                         "1 missing on disk.")


def test_a_fifo_in_a_repository_never_blocks_status_or_stats(tmp_path: Path) -> None:
    """A repository user can put a FIFO where borg keeps a small file (borg 1's `config`,
    borg 2's `config/version` and `locks/*`): reading it must not hang the scan."""
    config = make_config(tmp_path, {"one": "owner: alice", "two": "owner: alice"})
    one, two = repo_path(tmp_path, "one"), repo_path(tmp_path, "two")
    one.mkdir()
    os.mkfifo(one / "config")
    (two / "config").mkdir(parents=True)
    (two / "locks").mkdir()
    os.mkfifo(two / "config" / "version")
    os.mkfifo(two / "locks" / "holder")
    for args in (("status", "-o", "json"), ("stats", "--no-record", "-o", "json")):
        try:  # the assertion is that it finished, not how fast
            result = hive_cli(*args, "-f", str(config), timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"hive {args[0]} hung on a FIFO in a repository")
        assert result.returncode in (0, 2), result.stderr
        assert "Traceback" not in result.stderr


@requires_root
def test_status_as_a_user_who_cannot_read_the_repositories(sysroot: Path) -> None:
    """The repositories are 0700; `nobody` sees what the watcher and stats recorded."""
    argv = nobody_hive_argv(sysroot)
    if argv is None:
        pytest.skip("cannot run this interpreter as nobody")
    config = make_config(sysroot, {"r1": "owner: alice"})
    config.chmod(0o644)
    borg = Borg(sysroot / "borg-base")
    borg("init", repo_path(sysroot, "r1"))
    borg("create", repo_path(sysroot, "r1"), "a1", str(Path(__file__)))
    repo_path(sysroot, "r1").chmod(0o700)
    with watching(config) as watcher:
        assert watcher.stop() == 0
    assert hive_cli("stats", "-f", str(config)).returncode == 0
    result = subprocess.run([*argv, "status", "-f", str(config), "-o", "json"],
                            capture_output=True, text=True, cwd=sysroot, timeout=60)
    assert result.returncode == 0, result.stderr
    [found] = json.loads(result.stdout)
    assert found["state"] == "ok" and found["last_backup"] is not None
    assert found["size_bytes"] > 0
    for name in ("events.duckdb", "events.lock"):  # a deployment with UMask=0027
        (sysroot / "state" / name).chmod(0o640)
    denied = subprocess.run([*argv, "status", "-f", str(config)], capture_output=True,
                            text=True, cwd=sysroot, timeout=60)
    assert denied.returncode == 1 and denied.stdout == ""
    assert "cannot read" in denied.stderr and "Permission denied" in denied.stderr
    assert "Traceback" not in denied.stderr
