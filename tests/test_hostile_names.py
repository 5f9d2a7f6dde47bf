"""What a repository's user writes into its folder, read back by root, must stay data.

The user (through `borg serve`, or `rrsync -wo` in mode import) chooses every file name,
symlink and byte in its repository folder. Hive reads them as root for `hive status`,
`hive stats`, `hive watch` and `hive rollback`: a symlink must not make root list or read
a folder the user cannot, a name must not reach the operator's terminal as control
sequences, a value from the user's `config` must not become part of a shell command Hive
tells the operator to run, and crafted segments must not make a reader's memory grow
without bound. Real folders, real `hive` processes, real `os.wait4` figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_hostile_repository import fake_borg1, two_repos
from test_watcher_support import ROOT, hive_cli, make_config, repo_path

from borgrepo import layout, locks, segments
from reconciler import treewalk

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def fake_borg2(path: Path) -> Path:
    """The top of a borg 2 repository as the watcher and status read it."""
    (path / "config").mkdir(parents=True)
    (path / "config" / "version").write_text("2\n")
    (path / "config" / "manifest").write_bytes(b"m")
    (path / "archives").mkdir()
    return path


# ------------------------------------------------------------- rollback's client hint

@pytest.mark.skipif(os.geteuid() != 0, reason="hive rollback needs root")
@pytest.mark.parametrize("planted", [".. ~", "x\n    rm -rf /srv", "\x1b]0;owned\x07x"])
def test_the_client_hint_never_carries_a_planted_repository_id(tmp_path: Path,
                                                               planted: str) -> None:
    """The hint after a rollback is a shell line the operator pastes on every client. Its
    id comes from the repository's `config`, which the user writes: `id = .. ~` made it
    `rm -rf ~/.cache/borg/.. ~ ...`, the client user's whole home."""
    config, _good, bad = two_repos(tmp_path)
    text = (bad / "config").read_text().replace("id = " + "ab" * 32, f"id = {planted}")
    (bad / "config").write_text(text)
    done = hive_cli("rollback", "bad", "--to", "3", "--force", "--confirm", "bad",
                    "-f", str(config), timeout=60)
    assert done.returncode == 0, done.stderr
    hint = [line for line in done.stdout.splitlines() if "rm -rf" in line]
    assert hint == ["    rm -rf ~/.cache/borg/<repository id> "
                    "~/.config/borg/security/<repository id>"], done.stdout
    assert not _CONTROL.search(done.stdout.replace("\n", ""))


# ------------------------------------------------------------- borg 2 `locks` symlink

def test_a_borg2_locks_symlink_is_not_followed(tmp_path: Path) -> None:
    """`locks` replaced by a symlink to a folder only root can read: root must neither list
    it (its names become the watcher's `opened` event and `hive status`'s lock) nor read
    its files (a JSON file's `hostid` becomes a `lock_stale` event's holders)."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "payroll-2026.json").write_text(json.dumps({"hostid": "SECRET-CONTENT",
                                                           "processid": 1}))
    repo = fake_borg2(tmp_path / "repo")
    (repo / "locks").symlink_to(private)
    state = layout.scan_repository(repo)
    assert state is not None and state.layout == layout.BORG2
    holders = [str(h) for h in locks.lock_holders(repo, state)]
    assert not state.locks and not holders, (state.locks, holders)


# ------------------------------------------------------------- names on the terminal

def test_planted_lock_names_reach_the_terminal_without_control_characters(
        tmp_path: Path) -> None:
    """A borg 2 lock file dated in the future is a problem whose text names the file: an
    escape sequence or a newline in that name went raw to the operator's terminal, from
    `hive status` and `hive stats` (OSC sequences survive click's stripping of colours)."""
    config = make_config(tmp_path, {"good": "owner: alice", "bad": "owner: bob"})
    fake_borg1(repo_path(tmp_path, "good"))
    bad = fake_borg2(repo_path(tmp_path, "bad"))
    (bad / "locks").mkdir()
    name = "\x1b]0;owned\x07\nWarning: all fine"
    (bad / "locks" / name).write_text("{}")
    os.utime(bad / "locks" / name, (2**33, 2**33))  # year 2242
    for command in ("status", "stats"):
        shown = hive_cli(command, "-f", str(config))
        assert "dated" in shown.stderr, shown.stderr  # the problem is shown ...
        lines = (shown.stdout + shown.stderr).splitlines()
        assert not any(_CONTROL.search(line) for line in lines), lines  # ... inert
        assert not any(line.startswith("Warning: all fine") for line in lines)


# ------------------------------------------------------------- segments full of COMMITs

_MEASURE = """\
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
_pid, status, usage = os.wait4(child.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, usage.ru_maxrss)
"""


def _run_measured(argv: list[str]) -> tuple[int, float, float]:
    """(exit status, CPU seconds, peak RSS in MB) of a command, from os.wait4 in a small
    parent of its own (a child forked from pytest would count pytest's pages as its own)."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *argv], cwd=ROOT, text=True,
                          capture_output=True, check=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    code, cpu, rss = done.stdout.split()
    return int(code), float(cpu), int(rss) / 1024


def test_segments_full_of_commit_entries_do_not_grow_a_reader_without_bound(
        tmp_path: Path) -> None:
    """Each segment may hold MAX_ENTRIES entries, and every COMMIT entry became one Commit
    object: 2 million per 18 MB segment, kept for the whole span. Three hard links of one
    such file (no more disk than one) made `hive status` of that repository take over a
    gigabyte and half a minute of CPU; the watcher reads the same spans."""
    config = make_config(tmp_path, {"bad": "owner: bob"})
    bad = fake_borg1(repo_path(tmp_path, "bad"))  # commits end in segments 1 and 5
    commit = segments._HEADER.pack(0, segments.HEADER_SIZE, segments.COMMIT)
    delete = segments._HEADER.pack(0, segments.ID_HEADER_SIZE, segments.DELETE) + bytes(
        [1]) * 32
    flood = bad / "data" / "0" / "6"
    flood.write_bytes(segments.MAGIC + commit * (segments.MAX_ENTRIES - 1) + delete)
    for n in (7, 8):  # ends with a DELETE: the span from 6 runs on to segment 9
        os.link(flood, bad / "data" / "0" / str(n))
    put = segments._HEADER.pack(0, segments.ID_HEADER_SIZE + 10, segments.PUT) \
        + segments.MANIFEST_ID + bytes(10)
    (bad / "data" / "0" / "9").write_bytes(segments.MAGIC + put + commit)
    (bad / "index.9").write_bytes(b"x" * 100)
    started = time.monotonic()
    code, cpu, rss = _run_measured([sys.executable, "-m", "hive", "status", "-f",
                                    str(config), "-o", "json"])
    assert code in (0, 2), code
    assert rss < 300, f"hive status peaked at {rss:.0f} MB, {cpu:.1f} s CPU " \
                      f"({time.monotonic() - started:.1f} s)"


def test_walk_problems_name_a_planted_folder_without_control_characters(
        sysroot: Path) -> None:
    """What `hive stats` and `hive purge` print when the walk could not read a folder names
    it: a name with an escape sequence and a newline must come out escaped. The walk runs
    with the effective uid of nobody, which may not read that folder."""
    repo = sysroot / "repo"
    name = "\x1b]0;owned\x07\nWarning: all fine"
    (repo / name).mkdir(parents=True)
    repo.chmod(0o755)
    (repo / name).chmod(0)
    euid = os.geteuid()
    try:
        if euid == 0:
            os.seteuid(65534)
        found = treewalk.usage(repo)
    finally:
        if euid == 0:
            os.seteuid(0)
    assert found.unreadable == 1, found.problems
    assert not _CONTROL.search(found.problems[0]) and "\\x1b]0;owned\\x07" in found.problems[0]


def test_hard_links_of_one_segment_are_read_once(tmp_path: Path) -> None:
    """rsync -H in mode import can link one segment file under many numbers at no cost in
    disk. Each link ending with a COMMIT, `hive status` read every one of them looking for
    the last backup: 3.6 s of CPU per link of an 82 MB file, 20 hours for 20,000 links.
    Here 40 links of a 20 MB file: about 36 s of CPU before, one file's read now."""
    config = make_config(tmp_path, {"bad": "owner: bob"})
    bad = fake_borg1(repo_path(tmp_path, "bad"))  # commits end in segments 1 and 5
    put = segments._HEADER.pack(0, segments.ID_HEADER_SIZE, segments.PUT) + bytes([1]) * 32
    commit = segments._HEADER.pack(0, segments.HEADER_SIZE, segments.COMMIT)
    linked = bad / "data" / "0" / "6"
    linked.write_bytes(segments.MAGIC + put * 500_000 + commit)
    for n in range(7, 46):
        os.link(linked, bad / "data" / "0" / str(n))
    (bad / "index.45").write_bytes(b"x" * 100)
    code, cpu, rss = _run_measured([sys.executable, "-m", "hive", "status", "-f",
                                    str(config), "-o", "json"])
    assert code in (0, 2), code
    assert cpu < 10, f"hive status took {cpu:.1f} s of CPU ({rss:.0f} MB)"
    assert segments.segment_files(str(bad), 0, 45) == [
        (n, str(bad / "data" / "0" / str(n))) for n in range(7)]
