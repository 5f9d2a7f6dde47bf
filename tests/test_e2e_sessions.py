"""End to end: revoking a key ends the ssh connections that logged in with it.

A real sshd with deploy/sshd/hive.conf as shipped (ExposeAuthInfo yes) and real clients:
`ssh ... borg serve` held open (what a stolen key kept connected looks like) and `borg
with-lock` (a backup holding the repository lock). `hive apply` of an edited hive.yaml
must end exactly the connections whose key line it removed or changed, and borg must
release its lock. reconciler/sessions.py says why; tests/test_sessions.py has the rules.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd_harness import (
    REPO_ROOT,
    describe,
    e2e_marks,
    missing_prerequisites,
    root_owned_test_root,
)
from test_e2e_sshd import Deployment, _hive_server, hive_apply, hive_yaml, make_deployment

from reconciler import sessions

pytestmark = e2e_marks("real-sshd e2e", missing_prerequisites(("ssh", "ssh-keygen", "borg")))


def config_text(d: Deployment) -> str:
    """test_e2e_sshd's hive.yaml with uids of its own: this module's applies end the
    sessions of their users' uids, and other modules' servers may run meanwhile."""
    text = hive_yaml(d)
    assert "uid_range: [20000, 20999]" in text
    return text.replace("uid_range: [20000, 20999]", "uid_range: [26000, 26999]")


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    with root_owned_test_root() as root:
        d = make_deployment(root)
        (root / "hive.yaml").write_text(config_text(d))
        result = hive_apply(root / "hive.yaml")
        assert result.returncode == 0, describe(result)
        with _hive_server(d) as server:
            d.server = server
            yield d


def uid(d: Deployment, repo: str) -> int:
    return (d.repos_root / d.user(repo) / repo).stat().st_uid


def edit(d: Deployment, old: str, new: str) -> Path:
    """The test's hive.yaml with `old` replaced by `new` (with "" for both, the plain
    one, so each test starts from the same server)."""
    config = d.root / "hive.yaml"
    text = config_text(d)
    assert old in text
    config.write_text(text.replace(old, new))
    return config


def apply_with(d: Deployment, old: str, new: str) -> subprocess.CompletedProcess[str]:
    return hive_apply(edit(d, old, new))


def plan_notes(config: Path) -> list[str]:
    """The notes of `hive plan -o json`."""
    result = subprocess.run([sys.executable, "-m", "hive", "plan", "-o", "json", "-f",
                             str(config)], capture_output=True, text=True, cwd=REPO_ROOT,
                            timeout=60)
    assert result.returncode == 0, describe(result)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return [r["message"] for r in records if r.get("type") == "note"]


@contextlib.contextmanager
def open_connection(d: Deployment, key: str, repo: str) -> Iterator[subprocess.Popen[str]]:
    """`ssh bh-REPO borg serve` with its input held open: borg serve waits for requests,
    the connection stays up. Yields once sshd runs the forced command for it."""
    client = d.client(key)
    assert d.server is not None
    before = {c.pid for c in sessions.connections(d.user(repo), {uid(d, repo)})}
    process = subprocess.Popen(
        [*client.ssh_argv(), "-p", str(d.server.port), f"{d.user(repo)}@127.0.0.1",
         "borg", "serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not [c for c in sessions.connections(d.user(repo), {uid(d, repo)})
                   if c.pid not in before and c.keys]:
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, "no session appeared for the connection"
            time.sleep(0.05)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=10)


def ends(process: subprocess.Popen[str], within: float = 10.0) -> bool:
    try:
        process.wait(timeout=within)
    except subprocess.TimeoutExpired:
        return False
    return True


def journal_sessions(d: Deployment) -> list[dict[str, object]]:
    records = [json.loads(line) for line in
               (d.state_dir / "journal.jsonl").read_text().splitlines()]
    return [r for r in records if r.get("kind") == "session"]


def test_revoking_a_key_ends_its_connection_and_no_other(deployment: Deployment) -> None:
    """carol-key leaves repob: carol's open connection ends; bob's to the same repository
    and alice's to another stay, as no line of theirs changed."""
    d = deployment
    assert apply_with(d, "", "").returncode == 0
    with open_connection(d, "carol-key", "repob") as carol, \
            open_connection(d, "bob-key", "repob") as bob, \
            open_connection(d, "alice-key", "repoa") as alice:
        config = edit(d, "append_only_keys: [carol-key]", "append_only_keys: []")
        notes = [n for n in plan_notes(config) if "open ssh connection" in n]
        assert len(notes) == 1 and "apply ends 1 open ssh connection " in notes[0], notes
        listed = re.search(r": bh-repob pid (\d+), key carol-key$", notes[0])
        assert listed, notes
        assert carol.poll() is None, "the plan ended a connection"
        result = hive_apply(config)
        assert result.returncode == 0, describe(result, d.server)
        assert ends(carol), "carol's connection outlived the revocation of her key"
        assert bob.poll() is None and alice.poll() is None, "a connection with an " \
            "unchanged key was ended"
        assert "Open session of bh-repob ended" in result.stdout, result.stdout
        assert "key carol-key" in result.stdout, result.stdout
        recorded = journal_sessions(d)[-1]
        assert recorded["name"] == f"bh-repob pid {listed[1]}"  # the one the plan named
        assert recorded["before"]["pids"][0] == int(listed[1])  # type: ignore[index]
        assert recorded["before"]["keys"] == ["carol-key"]  # type: ignore[index]
        assert recorded["repository"] == "repob"
        assert recorded["error"] is None and recorded["ended"]
        history = subprocess.run([sys.executable, "-m", "hive", "history", "-v", "-f",
                                  str(d.root / "hive.yaml")], capture_output=True, text=True,
                                 cwd=REPO_ROOT, timeout=60)
        assert f"    - session {recorded['name']}\n" in history.stdout, history.stdout


def test_making_a_key_append_only_ends_its_full_access_connection(
        deployment: Deployment) -> None:
    """bob-key becomes append-only: the connection it opened with full access ends."""
    d = deployment
    assert apply_with(d, "", "").returncode == 0
    with open_connection(d, "bob-key", "repob") as bob:
        result = apply_with(d, "keys: [bob-key], append_only_keys: [carol-key]",
                            "append_only_keys: [carol-key, bob-key]")
        assert result.returncode == 0, describe(result, d.server)
        assert ends(bob), "a connection kept full access after its key became append-only"
    with open_connection(d, "bob-key", "repob") as again:  # the key itself still works
        assert again.poll() is None


def test_disabling_a_repository_ends_a_running_backup_and_frees_its_lock(
        deployment: Deployment) -> None:
    """A backup holding the lock when its repository is disabled: its connection is
    ended, and borg serve removes lock.exclusive itself."""
    d = deployment
    assert apply_with(d, "", "").returncode == 0
    alice = d.client("alice-key")
    url = d.url(alice, "repoa")
    if not (d.repo_path("repoa") / "config").exists():
        init = alice.borg("init", "-e", "none", url)
        assert init.returncode == 0, describe(init, d.server)
    lock = d.repo_path("repoa") / "lock.exclusive"
    holder = subprocess.Popen(
        ["borg", "with-lock", url, "sleep", "60"], env=alice._env(), cwd=alice.workdir,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        while not lock.exists():
            assert holder.poll() is None, holder.communicate()[1]
            assert time.monotonic() < deadline, "borg with-lock never took the lock"
            time.sleep(0.05)
        result = apply_with(d, "repoa: {owner: alice, keys: [alice-key]}",
                            "repoa: {owner: alice, mode: disabled}")
        assert result.returncode == 0, describe(result, d.server)
        # (the client, `borg with-lock`, runs its local sleep on: the server side counts)
        assert not sessions.connections(d.user("repoa"), {uid(d, "repoa")}), \
            "the backup's connection outlived its repository's keys"
        assert not lock.exists(), "borg serve left its lock behind"
        recorded = journal_sessions(d)[-1]
        assert recorded["before"]["keys"] == ["alice-key"]  # type: ignore[index]
        # only sshd's process was signalled: borg serve saw its input end and closed the
        # repository as after any session (one hit by SIGTERM leaves its lock behind)
        assert recorded["ended"] == recorded["before"]["pids"][:1], recorded  # type: ignore[index]
        assert recorded["killed"] == []
        assert recorded["repository"] == "repoa"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.communicate(timeout=10)
    assert apply_with(d, "", "").returncode == 0
