"""The parse cache (schemas/parsecache.py): same result, same positions, never stale."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, write_config

import schemas
from schemas import parsecache

ED = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE025IREm0GtFJnL9BQ7kKfZEAot1lwEefHs0y9rRXaF a"
BODY = f"""\
owners: {{alice: {{}}}}
keys:
  k1: {{owner: alice, public_key: {ED}, expires: 2031-02-03}}
repositories:
  r1: {{owner: alice, keys: [k1], quota: 10G}}
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("HIVE_CACHE_DIR", str(folder))
    return folder


def entries(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def problems(path: Path) -> list[str]:
    try:
        schemas.load(path)
    except schemas.ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_a_cached_parse_gives_the_same_state(tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path, BODY)
    first = schemas.load(path)
    assert len(entries(cache)) == 1
    assert parsecache.get(path.read_text()) is not parsecache.MISS
    second = schemas.load(path)
    assert second == first
    assert second.keys["k1"].expires == first.keys["k1"].expires
    assert type(parsecache.get(path.read_text())["keys"]["k1"]["expires"]) is dt.date


def test_problems_keep_their_positions_when_the_parse_is_cached(
        tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path, BODY.replace("owner: alice, keys", "owner: bob, keys"))
    uncached = problems(path)
    assert uncached == [
        f"{path}:13:15: repositories.r1.owner: unknown owner 'bob'; add it under 'owners:'",
        f"{path}:13:27: repositories.r1.keys[0]: key 'k1' belongs to 'alice', who is neither "
        "the owner ('bob') nor in one of this repository's groups"]
    assert len(entries(cache)) == 1   # the YAML was fine: its parse is kept
    assert problems(path) == uncached


def test_an_edited_file_is_parsed_again(tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path, BODY)
    assert problems(path) == []
    write_config(tmp_path, BODY.replace("quota: 10G", "quota: 10 apples"))
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:13:41: repositories.r1.quota"), \
        found
    assert len(entries(cache)) == 2


def test_a_broken_entry_is_a_miss_not_an_error(tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path, BODY)
    schemas.load(path)
    (entry,) = entries(cache)
    entry.write_text('{"data": {"version": 1')
    assert parsecache.get(path.read_text()) is parsecache.MISS
    assert schemas.load(path).repositories["r1"].quota == "10G"


def test_a_folder_others_may_write_is_not_used(tmp_path: Path, cache: Path) -> None:
    cache.mkdir(mode=0o700)
    cache.chmod(0o777)
    path = write_config(tmp_path, BODY)
    schemas.load(path)
    assert entries(cache) == []
    assert parsecache.get(path.read_text()) is parsecache.MISS


def test_duplicates_and_non_text_keys_are_never_cached(tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path, BODY + "  r1: {owner: alice}\n")
    assert "duplicate key 'r1'" in problems(path)[0]
    path = write_config(tmp_path, BODY + "x-anchors: {1: one}\n")
    assert problems(path) == []
    assert entries(cache) == []


def test_a_large_entry_is_written_by_a_child_while_loading_goes_on(
        tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path, BODY)
    # A process of its own: a fork is refused while other threads run (a test before this
    # one may have left DuckDB's).
    script = textwrap.dedent(f"""\
        import schemas
        from schemas import parsecache
        parsecache.BACKGROUND_BYTES = 0   # every file is "large"
        first = schemas.load({str(path)!r})
        assert parsecache._writers, "no child was forked to write the entry"
        parsecache.settle()
        assert not parsecache._writers
        assert parsecache.get(open({str(path)!r}).read()) is not parsecache.MISS
        assert schemas.load({str(path)!r}) == first
        parsecache.settle()
        print("ok")
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.stdout == "ok\n", done.stderr
    assert len(entries(cache)) == 1


def test_the_command_waits_for_its_cache_writer(tmp_path: Path, cache: Path) -> None:
    """No process outlives the command: when `hive` returns, its cache entry is whole
    (a slow writer stands in for a 23 MB entry on a busy disk)."""
    path = write_config(tmp_path, BODY)
    script = textwrap.dedent(f"""\
        import time
        import schemas
        from schemas import parsecache
        parsecache.BACKGROUND_BYTES = 0
        slow = parsecache._write
        parsecache._write = lambda *a: (time.sleep(1.5), slow(*a))
        schemas.load({str(path)!r})
        assert parsecache._writers
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(entries(cache)) == 1
    assert parsecache.get(path.read_text()) is not parsecache.MISS


@pytest.mark.parametrize("command", ["validate", "plan"])
def test_the_cli_waits_for_its_cache_writer_too(tmp_path: Path, cache: Path,
                                                command: str) -> None:
    """validate, plan and apply end with os._exit (hive/cli.py _exit, which skips freeing
    their state): the writer is still waited for."""
    path = write_config(tmp_path, BODY)
    script = textwrap.dedent(f"""\
        import sys, time
        from schemas import parsecache
        parsecache.BACKGROUND_BYTES = 0
        slow = parsecache._write
        parsecache._write = lambda *a: (time.sleep(1.5), slow(*a))
        sys.argv = ["hive", {command!r}, "-f", {str(path)!r}]
        from hive.cli import run
        run()
        """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(entries(cache)) == 1
    assert parsecache.get(path.read_text()) is not parsecache.MISS


def test_a_cached_file_needs_no_parser(tmp_path: Path, cache: Path) -> None:
    """The fast parser compiles its patterns when imported (about 50 ms of every command):
    a file found in the cache must load without it."""
    path = write_config(tmp_path, BODY)
    script = textwrap.dedent(f"""\
        import sys
        import schemas
        schemas.load({str(path)!r})
        print("schemas.fastyaml" in sys.modules)
        """)
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
            for _ in range(2)]
    assert [run.stdout for run in runs] == ["True\n", "False\n"], runs[1].stderr
