"""`hive stats` keeps a copy of every repository key it sees, out of the clients' reach.

An append-only key can still replace the key in a borg 1.x repository's config (the
end-to-end attack is in test_e2e_key_reach.py). Here: the copy is exactly what `borg key
export` writes, a changed key is reported once and both are kept, a kept copy brings the
repository back with `borg key import`, and a hostile config or a planted folder gives no
copy and no hang. Real borg 1.x repositories, real DuckDB.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_watcher_support import (
    Borg,
    WatchProcess,
    barrier,
    hive_cli,
    make_config,
    query,
    repo_path,
    wait_for,
    watching,
)

from borgrepo.config import parse_key, read_key
from watcher import repokeys

KEYFILE_CONFIG = """[repository]
version = 1
segments_per_dir = 1000
id = {id}
key =
"""


def _borg(borg: Borg, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([borg.binary, *argv], env={**borg.env(), **env},
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done


def _kept(state: Path, repository: str) -> list[Path]:
    return sorted((state / "repokeys" / repository).glob("*.key"))


def test_stats_keeps_each_key_reports_a_change_and_the_copy_restores_it(
        tmp_path: Path) -> None:
    config = make_config(tmp_path, {"kept": "owner: alice", "plain": "owner: alice"})
    state = tmp_path / "state"
    borg = Borg(tmp_path / "borg-base")
    repo = repo_path(tmp_path, "kept")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data\n")
    borg("init", repo)
    borg("create", repo, "first", str(src))
    _borg(borg, "init", "-e", "none", str(repo_path(tmp_path, "plain")))

    first = hive_cli("stats", "-f", str(config), "-o", "json")
    assert first.returncode == 0, first.stderr
    records = {r.get("repository"): r for r in map(json.loads, first.stdout.splitlines())}
    [copy] = _kept(state, "kept")
    assert records["kept"]["repokey_copy"] == str(copy)
    assert records["kept"]["repokey_changed"] is False
    assert records["plain"]["repokey"] is None and _kept(state, "plain") == []  # no key
    exported = tmp_path / "exported"
    _borg(borg, "key", "export", str(repo), str(exported))
    assert copy.read_text() == exported.read_text()   # what `borg key export` writes
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "repokeys").stat().st_mode) == 0o700

    # The key in config changes (here its owner's passphrase; an append-only client
    # writing any key looks the same): reported once, and both keys are kept.
    _borg(borg, "key", "change-passphrase", str(repo), BORG_NEW_PASSPHRASE="other")
    second = hive_cli("stats", "-f", str(config))
    assert second.returncode == 0, second.stderr
    assert "the key in the config of repository kept changed" in second.stderr
    assert str(state / "repokeys" / "kept") in second.stderr
    assert len(_kept(state, "kept")) == 2 and copy.read_text() == exported.read_text()
    assert query(state, "SELECT repository, host, kind, source FROM events") == [
        ("kept", "test1", "repokey_changed", "stats")]
    shown = {r["repository"]: r for r in json.loads(
        hive_cli("status", "-f", str(config), "-o", "json").stdout)}
    assert shown["kept"]["repokey_changed"] is not None   # notify alerts on it for 7 days
    assert shown["plain"]["repokey_changed"] is None
    third = hive_cli("stats", "-f", str(config))
    assert third.returncode == 0 and "changed" not in third.stderr, third.stderr

    # The kept copy of the first key makes the first passphrase open it again.
    _borg(borg, "key", "import", str(repo), str(copy))
    listed = borg("list", repo)
    assert "first" in listed.stdout


@contextlib.contextmanager
def _watched_after_init(tmp_path: Path
                        ) -> Iterator[tuple[WatchProcess, Borg, Path, Path, Path]]:
    """Repository w under `hive watch`, just made by `borg init`, and the copy of its key
    the watcher kept then: (watcher, borg, state_dir, repository, copy)."""
    config = make_config(tmp_path, {"w": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "w")
    borg = Borg(tmp_path / "borg-base")
    with watching(config) as watcher:
        borg("init", repo)
        [copy] = wait_for(lambda: _kept(state, "w"), what="the key kept after init")
        yield watcher, borg, state, repo, copy


def test_the_watcher_keeps_a_key_as_soon_as_borg_writes_it(tmp_path: Path) -> None:
    """`hive watch` sees `config` written (init, a key change) and keeps the key then, not
    an hour later at the next `hive stats`: a key replaced right after init is not the
    only one there is."""
    with _watched_after_init(tmp_path) as (watcher, borg, state, repo, copy):
        exported = tmp_path / "exported"
        _borg(borg, "key", "export", str(repo), str(exported))
        assert copy.read_text() == exported.read_text()
        _borg(borg, "key", "change-passphrase", str(repo), BORG_NEW_PASSPHRASE="other")
        wait_for(lambda: len(_kept(state, "w")) == 2, what="the new key kept")
        barrier(tmp_path, state)
        assert watcher.stop() == 0
    assert query(state, "SELECT kind, source FROM events WHERE repository = 'w' AND kind "
                        "= 'repokey_changed'") == [("repokey_changed", "inotify")]


def test_no_record_keeps_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path, {"r": "owner: alice"})
    Borg(tmp_path / "borg-base")("init", repo_path(tmp_path, "r"))
    result = hive_cli("stats", "-f", str(config), "--no-record")
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "state" / "repokeys").exists()


def test_a_planted_keys_folder_is_refused_not_written_through(tmp_path: Path) -> None:
    """The copies go only into a folder of root's with mode 0700: not through a symlink,
    not into a folder others may enter."""
    config = make_config(tmp_path, {"r": "owner: alice"})
    Borg(tmp_path / "borg-base")("init", repo_path(tmp_path, "r"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state" / "repokeys").symlink_to(elsewhere)
    result = hive_cli("stats", "-f", str(config))
    assert result.returncode == 1
    assert "cannot keep a copy of the key" in result.stderr and "not a folder" in result.stderr
    assert list(elsewhere.iterdir()) == []
    (tmp_path / "state" / "repokeys").unlink()
    (tmp_path / "state" / "repokeys").mkdir(mode=0o755)
    os.chmod(tmp_path / "state" / "repokeys", 0o755)
    result = hive_cli("stats", "-f", str(config))
    assert result.returncode == 1 and "mode 0700" in result.stderr, result.stderr
    assert list((tmp_path / "state" / "repokeys").iterdir()) == []


def test_a_hostile_config_gives_no_copy_and_no_hang(tmp_path: Path) -> None:
    """config is the repository user's file: a FIFO, a symlink to another repository's
    config or a huge file is not read as a key."""
    borg = Borg(tmp_path / "borg-base")
    real = tmp_path / "real"
    borg("init", real)
    assert read_key(str(real)) is not None
    for name, plant in (("fifo", lambda p: os.mkfifo(p)),
                        ("link", lambda p: p.symlink_to(real / "config")),
                        ("huge", lambda p: p.write_text((real / "config").read_text()
                                                        + "#" * 70_000))):
        folder = tmp_path / name
        folder.mkdir()
        plant(folder / "config")
        assert read_key(str(folder)) is None, name


REPO_ID = "ab" * 32


@pytest.mark.parametrize(("text", "wanted"), [
    (f"[repository]\nid = {REPO_ID}\nkey = QUJD\n\tREVG\n", ("QUJD\nREVG",)),
    (KEYFILE_CONFIG.format(id=REPO_ID), None),                      # keyfile mode: no key
    (f"[repository]\nid = {REPO_ID}\n", None),
    (f"[repository]\nid = {REPO_ID[:-1]}\nkey = QUJD\n", None),     # not a repository id
    (f"[repository]\nid = {REPO_ID}\nkey = QUJD\nkey = REVG\n", None),  # said twice
    (f"[repository]\nid = {REPO_ID}\nkey = QU JD\n", None),         # not base64
    (f"[repository]\nid = {REPO_ID}\nkey = %(x)s\n", None),
    ("not a config at all", None),
])
def test_parse_key(text: str, wanted: tuple[str] | None) -> None:
    key = parse_key(text)
    if wanted is None:
        assert key is None
    else:
        assert key is not None and (key.repo_id, key.blob) == (REPO_ID, wanted[0])
        assert key.exported() == f"BORG_KEY {REPO_ID}\n{wanted[0]}\n"


def test_keep_writes_each_key_once(tmp_path: Path) -> None:
    one = parse_key(f"[repository]\nid = {REPO_ID}\nkey = QUJD\n")
    two = parse_key(f"[repository]\nid = {REPO_ID}\nkey = REVG\n")
    assert one is not None and two is not None
    first = repokeys.keep(tmp_path, "r", one)
    assert first.new and not first.changed
    again = repokeys.keep(tmp_path, "r", one)
    assert (again.copy, again.new, again.changed) == (first.copy, False, False)
    other = repokeys.keep(tmp_path, "r", two)
    assert other.changed and other.earlier == (first.copy,)
    back = repokeys.keep(tmp_path, "r", one)   # put back: nothing new to report
    assert not back.new and not back.changed


@pytest.mark.parametrize("blob", ["not*a*key\n", "", "QUJD" * 17_000 + "\n"],
                         ids=["not-base64", "empty", "larger-than-read"])
def test_a_key_replaced_by_one_hive_cannot_read_is_reported(tmp_path: Path,
                                                             blob: str) -> None:
    """`borg key import` (which an append-only key may run) stores whatever follows the
    file's first line as the key: text that is no base64, nothing at all, or more than
    Hive reads. Every archive is then as unreadable as after any other replacement, so it
    is reported like one (it went unreported: only keys Hive could parse counted), for
    as long as it lasts; the kept key still brings the repository back."""
    config = make_config(tmp_path, {"r": "owner: alice"})
    state, repo = tmp_path / "state", repo_path(tmp_path, "r")
    borg = Borg(tmp_path / "borg-base")
    borg("init", repo)
    assert hive_cli("stats", "-f", str(config)).returncode == 0
    [copy] = _kept(state, "r")
    repo_id = copy.read_text().split()[1]
    junk = tmp_path / "junk"
    junk.write_text(f"BORG_KEY {repo_id}\n{blob}")
    _borg(borg, "key", "import", str(repo), str(junk))

    for _ in range(2):   # while it lasts, not once
        after = hive_cli("stats", "-f", str(config))
        assert after.returncode == 0, after.stderr
        assert "the key in the config of repository r changed" in after.stderr
    assert query(state, "SELECT kind, source FROM events") == [
        ("repokey_changed", "stats")] * 2
    assert _kept(state, "r") == [copy]
    _borg(borg, "key", "import", str(repo), str(copy))
    assert hive_cli("stats", "-f", str(config)).stderr == ""


def test_a_client_replacing_the_key_again_and_again_cannot_fill_roots_disk(
        tmp_path: Path) -> None:
    """Each new key is a new copy in root's state_dir, outside any quota, and a client
    can replace the key in a loop (up to 60 KB each): the copies of one repository stop
    at MAX_KEPT with an error saying why; the first keys stay, a kept one is still seen."""
    keys = [parse_key(f"[repository]\nid = {REPO_ID}\nkey = {i:08d}QUJD\n")
            for i in range(repokeys.MAX_KEPT + 1)]
    assert all(keys)
    for key in keys[:-1]:
        assert key is not None and repokeys.keep(tmp_path, "r", key).new
    last = keys[-1]
    assert last is not None
    with pytest.raises(repokeys.KeeperError, match="keeps replacing its key"):
        repokeys.keep(tmp_path, "r", last)
    assert len(_kept(tmp_path, "r")) == repokeys.MAX_KEPT
    first = keys[0]
    assert first is not None and not repokeys.keep(tmp_path, "r", first).new


def test_the_watcher_reports_a_key_it_cannot_read_once_an_hour(tmp_path: Path) -> None:
    """Under `hive watch` a key replaced by text Hive cannot read is an event too, but a
    client writing such text in a loop makes one event an hour, not one a write."""
    with _watched_after_init(tmp_path) as (watcher, borg, state, repo, copy):
        repo_id = copy.read_text().split()[1]
        for n in range(3):
            junk = tmp_path / f"junk{n}"
            junk.write_text(f"BORG_KEY {repo_id}\nnot*a*key*{n}\n")
            _borg(borg, "key", "import", str(repo), str(junk))
        barrier(tmp_path, state)
        assert watcher.stop() == 0
    assert query(state, "SELECT kind, source FROM events WHERE kind = 'repokey_changed'"
                 ) == [("repokey_changed", "inotify")]
    assert _kept(state, "w") == [copy]


def test_a_config_with_cr_line_ends_gives_the_key_borg_reads(tmp_path: Path) -> None:
    """borg opens `config` with Python's universal newlines, so "\\r" alone ends a line
    for it (as it does in a file an rsync import carried from elsewhere); Hive must keep
    the key borg then uses, not read the file as one line and keep nothing."""
    borg = Borg(tmp_path / "borg-base")
    repo = tmp_path / "r"
    borg("init", repo)
    wanted = read_key(repo)
    assert wanted is not None
    config = repo / "config"
    config.write_bytes(config.read_bytes().replace(b"\n", b"\r"))
    exported = _borg(borg, "key", "export", str(repo), str(tmp_path / "borg.key"))
    assert exported.returncode == 0  # borg reads it
    assert (tmp_path / "borg.key").read_text() == wanted.exported()
    assert read_key(repo) == wanted
