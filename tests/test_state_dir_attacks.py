"""`hive apply` (root) and a state_dir another user may change: that user must not make
root write, truncate or append to a file of its choosing through the lock or the journal."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import hive, requires_root, write_config

pytestmark = requires_root

NOBODY = 65534
BODY = "owners: {alice: {}}\nrepositories:\n  r1: {owner: alice}\n"
PRECIOUS = "root:x:0:0:root:/root:/bin/bash\n"


@pytest.fixture
def place() -> Iterator[Path]:
    """A root-owned 0755 folder in /tmp (nobody can reach it), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="hive-state-attack-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("planted", ["apply.lock", "journal.jsonl"])
def test_a_link_planted_in_a_state_dir_others_may_write_is_not_followed(
        place: Path, planted: str) -> None:
    """state_dir belongs to nobody (a service account, a misplaced folder). nobody links
    apply.lock (or the journal) to a file of root's (a stand-in for /etc/passwd): apply
    must refuse the state_dir before it opens anything in it, and the file must stay
    as it was -- not truncated by the lock, nor appended to by the journal."""
    victim = place / "passwd"
    victim.write_text(PRECIOUS)
    state = place / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    pid = os.fork()
    if pid == 0:   # the attacker, as nobody
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.symlink(victim, state / planted)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert (state / planted).is_symlink()
    path = write_config(place, BODY)
    ran = hive("apply", "-f", str(path))
    assert victim.read_text() == PRECIOUS, (
        f"root's apply wrote through nobody's {planted} link: {victim.read_text()!r}")
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "state" in ran.stderr and "other" in ran.stderr, ran.stderr


def test_another_user_cannot_hold_the_apply_lock(place: Path) -> None:
    """flock needs no write permission: with apply.lock readable by all, any local user
    could open it and hold the lock for ever, and every apply (a key's revocation among
    them) would fail with "another hive apply is running"."""
    path = write_config(place, BODY)
    assert hive("apply", "-f", str(path)).returncode == 0
    lock = place / "state" / "apply.lock"
    attacker = subprocess.Popen(
        ["/usr/bin/python3", "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            try:
                fd = os.open({str(lock)!r}, os.O_RDONLY)
                fcntl.flock(fd, fcntl.LOCK_EX)
                print("holding", flush=True)
            except OSError as exc:
                print("refused", exc.strerror, flush=True)
                sys.exit(0)
            time.sleep(120)
            """)],
        user=NOBODY, group=NOBODY, extra_groups=[], text=True, stdout=subprocess.PIPE)
    try:
        assert attacker.stdout is not None
        said = attacker.stdout.readline()
        ran = hive("apply", "-f", str(path), "--lock-timeout", "1")
        assert said.startswith("refused"), f"nobody {said.strip()} the lock: {ran.stderr}"
        assert ran.returncode == 0, ran.stderr
    finally:
        attacker.kill()
        attacker.communicate()


def test_root_does_not_pick_up_a_hive_yaml_others_could_have_left(place: Path) -> None:
    """Without -f, hive reads ./hive.yaml. As root in /tmp (or any folder others may
    write), that would apply whatever another user left there: refused, naming -f; the
    same file given with -f, or in a folder of root's, is used."""
    shared = place / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    write_config(shared, BODY)
    refused = hive("validate", cwd=shared, env={"HIVE_CONFIG": ""})
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "Give it with -f" in refused.stderr and "valid" not in refused.stdout
    assert hive("validate", "-f", "hive.yaml", cwd=shared).returncode == 0
    own = place / "own"
    own.mkdir(mode=0o755)
    mine = write_config(own, BODY)
    assert hive("validate", cwd=own, env={"HIVE_CONFIG": ""}).returncode == 0
    os.chown(mine, NOBODY, NOBODY)   # root's folder, but nobody's file
    assert hive("validate", cwd=own, env={"HIVE_CONFIG": ""}).returncode == 1


def test_stats_does_not_create_a_file_through_a_link_in_a_state_dir_others_may_write(
        place: Path) -> None:
    """`hive stats` (root, an hourly timer) opens events.lock with O_CREAT: through a
    dangling link nobody planted there it made any file root may make, such as
    /etc/nologin, which locks every borg client out. Refused like apply refuses it."""
    state = place / "state"
    state.mkdir()
    os.chown(state, NOBODY, NOBODY)
    made = place / "nologin"        # a stand-in for /etc/nologin
    pid = os.fork()
    if pid == 0:   # the attacker, as nobody
        try:
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.symlink(made, state / "events.lock")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    path = write_config(place, BODY)
    (place / "repos" / "bh-r1" / "r1").mkdir(parents=True)
    subprocess.run(["borg", "init", "-e", "repokey", str(place / "repos" / "bh-r1" / "r1")],
                   env={**os.environ, "BORG_PASSPHRASE": "p", "BORG_BASE_DIR": str(place)},
                   check=True, capture_output=True)
    ran = hive("stats", "-f", str(path))
    assert not made.exists(), "root's stats created a file through nobody's link"
    assert not (state / "repokeys").exists()   # nor a folder of key copies in it
    assert ran.returncode == 1, ran.stdout + ran.stderr
    assert "other" in ran.stderr, ran.stderr
