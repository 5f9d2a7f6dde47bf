"""The parse cache against another local user: root's `hive` must never use a parse that
user wrote, nor change files it did not write, whatever the path to its cache folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, requires_root, write_config

import schemas
from schemas import parsecache, yamlsource

NOBODY = 65534
BODY = "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A root-owned 0755 folder in /tmp with `home`, a folder `nobody` owns: where root's
    cache lands when its XDG_CACHE_HOME (or HIVE_CACHE_DIR) is below a folder another
    user can change, such as a CI workspace or a home reached through `sudo -E`."""
    folder = Path(tempfile.mkdtemp(prefix="hive-cache-attack-"))
    folder.chmod(0o755)
    home = folder / "home"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_nobody(script: str) -> subprocess.Popen[str]:
    """`script` run by /usr/bin/python3 as nobody (the attacker), started."""
    return subprocess.Popen(["/usr/bin/python3", "-c", textwrap.dedent(script)],
                            user=NOBODY, group=NOBODY, extra_groups=[], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def validate_as_root(path: Path, cache_home: Path) -> subprocess.CompletedProcess[str]:
    """`hive validate` as root with XDG_CACHE_HOME=`cache_home` (no HIVE_CACHE_DIR)."""
    env = {k: v for k, v in os.environ.items() if k != "HIVE_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(cache_home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "hive", "validate", "-f", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)


@requires_root
def test_root_does_not_delete_files_of_a_folder_a_link_leads_its_cache_to(
        shared: Path) -> None:
    """nobody makes root's cache folder a link to a root-owned folder of other files (a
    stand-in for /usr/bin): writing an entry must not remove any of them."""
    victim = shared / "victim"
    victim.mkdir()
    for i in range(parsecache.KEEP + 5):
        made = victim / f"tool{i:03d}"
        made.write_text("#!/bin/sh\n")
        os.utime(made, (1_000_000 + i, 1_000_000 + i))
    home = shared / "home"
    done = as_nobody(f"""
        import os
        os.makedirs({str(home / "hive")!r})
        os.symlink({str(victim)!r}, {str(home / "hive" / "yaml")!r})
        """).communicate(timeout=30)
    assert (home / "hive" / "yaml").is_symlink(), done
    path = write_config(shared, BODY)
    ran = validate_as_root(path, home)
    assert ran.returncode == 0, ran.stderr
    names = sorted(p.name for p in victim.iterdir() if p.name.startswith("tool"))
    assert len(names) == parsecache.KEEP + 5, f"root removed {parsecache.KEEP + 5 - len(names)}"
    assert not [p for p in victim.iterdir() if not p.name.startswith("tool")], \
        "root wrote its cache into a folder a link of nobody's led it to"


def test_trimming_removes_only_cache_entries(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """HIVE_CACHE_DIR naming a folder that holds other files (a typo, a shared folder):
    the cache keeps KEEP entries by removing its own oldest ones, never another file."""
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    for i in range(parsecache.KEEP + 5):
        made = folder / f"notes{i:03d}.txt"
        made.write_text("mine\n")
        os.utime(made, (1_000_000 + i, 1_000_000 + i))
    monkeypatch.setenv("HIVE_CACHE_DIR", str(folder))
    path = write_config(tmp_path, BODY)
    schemas.load(path)
    kept = [p for p in folder.iterdir() if p.name.startswith("notes")]
    assert len(kept) == parsecache.KEEP + 5


@requires_root
def test_root_never_reads_a_parse_another_user_wrote(shared: Path) -> None:
    """nobody owns a folder on the way to root's cache: it cannot plant an entry there,
    but it can swap the cache folder between root's own and its own while root looks.
    (Before the fix, 3 of 30 runs here said 2 repositories.)
    root must check the folder it reads from, not a path that may lead elsewhere a
    moment later: else a planted parse adds a repository the file does not have."""
    home = shared / "home"
    path = write_config(shared, BODY)
    text = path.read_text()
    ours = home / "root-hive" / "yaml"   # root's own folder, as root's first run made it
    ours.mkdir(parents=True, mode=0o700)
    # anyone can compute the entry's name (the file is committed, the code public)
    data = yamlsource.parse(text).data
    data["repositories"]["evil"] = {"owner": "alice"}
    planted = {"data": data, "dates": []}
    name = parsecache._key(text)
    attacker = as_nobody(f"""
        import json, os
        home = {str(home)!r}
        os.makedirs(home + "/hive/evil", mode=0o755)
        with open(home + "/hive/evil/{name}", "w") as out:
            out.write(json.dumps({planted!r}))
        real, evil, link = home + "/root-hive/yaml", home + "/hive/evil", home + "/hive/yaml"
        os.symlink(real, link)
        print("ready", flush=True)
        n = 0
        while True:
            n += 1
            os.symlink(evil if n % 2 else real, link + ".new")
            os.replace(link + ".new", link)
        """)
    try:
        assert attacker.stdout is not None and attacker.stdout.readline() == "ready\n", \
            attacker.stderr.read() if attacker.stderr else ""
        seen = []
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(seen) < 30:
            ran = validate_as_root(path, home)
            seen.append(ran.stdout.strip())
        poisoned = [s for s in seen if "valid (2 repositories" in s]
        assert not poisoned, (f"{len(poisoned)} of {len(seen)} runs of root's validate "
                              "used nobody's planted parse: " + poisoned[0])
    finally:
        attacker.kill()
        attacker.communicate()
