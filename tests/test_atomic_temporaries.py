"""An apply killed while writing a file leaves atomic_write's temporary beside it; the next
apply removes it, and nothing else: only Hive's own `.<file>.XXXXXXXX.tmp` names, only in
the folders it writes, only regular files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from conftest import alice_config, hive, requires_root

from reconciler.fsutil import atomic_write, remove_stale_temporaries


def leftover(directory: Path, target: str) -> Path:
    """A temporary exactly as an atomic_write of `target` killed before its rename leaves."""
    fd, name = tempfile.mkstemp(prefix=f".{target}.", suffix=".tmp", dir=directory)
    os.write(fd, b"half a file")
    os.close(fd)
    return Path(name)


def test_only_the_named_targets_temporaries_are_removed(tmp_path: Path) -> None:
    ours = leftover(tmp_path, "inventory.json")
    other_target = leftover(tmp_path, "passwd")
    foreign = [tmp_path / ".inventory.json.tmp", tmp_path / ".inventory.json.ABCDEFGH.tmp",
               tmp_path / ".inventory.json.abcdefgh.tmp.bak", tmp_path / "inventory.json.tmp"]
    for path in foreign:
        path.write_text("someone else's")
    outside = tmp_path / "outside"
    outside.write_text("keep")
    link = tmp_path / ".inventory.json.abcdefgh.tmp"
    link.symlink_to(outside)
    (tmp_path / ".inventory.json.folder00.tmp").mkdir()

    remove_stale_temporaries(tmp_path, ["inventory.json"])

    assert not ours.exists()
    assert other_target.exists() and all(p.exists() for p in foreign)
    assert link.is_symlink() and outside.read_text() == "keep"
    assert (tmp_path / ".inventory.json.folder00.tmp").is_dir()
    remove_stale_temporaries(tmp_path)  # no names: a folder that is wholly Hive's
    assert not other_target.exists() and all(p.exists() for p in foreign)


def test_atomic_write_names_its_temporaries_as_the_cleaner_expects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real atomic_write, watched at its rename: the name it really used is cleaned."""
    seen: list[str] = []
    real = os.replace

    def watching(src: str, dst: str) -> None:
        seen.append(os.path.basename(src))
        real(src, dst)

    monkeypatch.setattr(os, "replace", watching)
    atomic_write(tmp_path / "inventory.json", "{}\n")
    monkeypatch.undo()
    assert len(seen) == 1
    (tmp_path / seen[0]).write_text("as if the rename never happened")
    remove_stale_temporaries(tmp_path, ["inventory.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inventory.json"]


@requires_root
def test_apply_removes_temporaries_an_interrupted_apply_left(tmp_path: Path,
                                                             pubkeys: dict[str, str]) -> None:
    cfg = alice_config(tmp_path, pubkeys["a"], ["r1"])
    state, users = tmp_path / "state", tmp_path / "extrausers"
    state.mkdir()
    users.mkdir()
    stale = [leftover(state, "inventory.json"), leftover(users, "passwd"),
             leftover(users, "shadow"), leftover(users, "group")]
    kept = [leftover(state, "journal.jsonl"), leftover(users, "subuid"),
            state / ".inventory.json.tmp"]
    kept[-1].write_text("not a name atomic_write makes")

    result = hive("apply", "-f", str(cfg))

    assert result.returncode == 0, result.stdout + result.stderr
    assert [p.name for p in stale if p.exists()] == []
    assert [p.name for p in kept if not p.exists()] == []
    assert (state / "inventory.json").exists()
