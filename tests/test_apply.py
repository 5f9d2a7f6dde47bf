"""`hive apply` on a real (temporary) root: files, owners, modes, idempotency, prune,
purge, lock, journal, crash recovery, and refusal as a non-root user."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import alice_config, hive, nobody_hive_argv, requires_root, write_config

pytestmark = requires_root


def body(pubkeys: dict[str, str], extra: str = "") -> str:
    return f"""\
        owners: {{alice: {{}}, bob: {{}}}}
        keys:
          ka: {{owner: alice, public_key: {pubkeys['a']}}}
          kb: {{owner: bob, public_key: {pubkeys['b']}, from: [127.0.0.1]}}
        repositories:
          laptop: {{owner: alice, keys: [ka], quota: 10G}}
          phone: {{owner: bob, append_only_keys: [kb]}}
        {extra}"""


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def mode(path: Path) -> tuple[int, int, str]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid, f"{stat.S_IMODE(st.st_mode):04o}"


def test_apply_creates_everything_and_second_apply_changes_nothing(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    (tmp_path / "extrausers").mkdir()
    (tmp_path / "extrausers" / "passwd").write_text("snapuser:x:30000:30000::/home/s:/bin/sh\n"
                                                    "# a comment another tool wrote\n")
    first = hive("apply", "-f", str(cfg), "--detailed-exitcode")
    assert first.returncode == 2, first.stdout + first.stderr
    assert "Apply complete: 9 added, 0 changed, 0 removed." in first.stdout

    passwd = lines(tmp_path / "extrausers" / "passwd")
    assert passwd[:2] == ["snapuser:x:30000:30000::/home/s:/bin/sh",  # foreign lines kept
                          "# a comment another tool wrote"]
    assert passwd[2:] == [
        f"bh-laptop:x:20000:20000:Hive repository laptop (alice):{tmp_path}/repos/bh-laptop:"
        "/bin/sh",
        f"bh-phone:x:20001:20001:Hive repository phone (bob):{tmp_path}/repos/bh-phone:/bin/sh"]
    assert lines(tmp_path / "extrausers" / "group") == ["bh-laptop:x:20000:", "bh-phone:x:20001:"]
    shadow = tmp_path / "extrausers" / "shadow"
    assert [line.split(":")[:2] for line in lines(shadow)] == [["bh-laptop", "*"],
                                                                ["bh-phone", "*"]]
    assert mode(shadow)[2] == "0640"
    assert mode(tmp_path / "repos") == (0, 0, "0755")
    assert mode(tmp_path / "repos" / "bh-laptop") == (0, 20000, "0750")
    assert mode(tmp_path / "repos" / "bh-laptop" / "laptop") == (20000, 20000, "0700")
    keys = tmp_path / "state" / "authorized_keys"
    assert mode(keys / "bh-laptop") == (0, 0, "0644")
    ka = pubkeys["a"].rsplit(" ", 1)[0]
    assert lines(keys / "bh-laptop") == [
        f'restrict,command="borg serve --restrict-to-repository {tmp_path}/repos/bh-laptop/'
        f'laptop --storage-quota 10G" {ka} hive:ka']
    assert lines(keys / "bh-phone")[0].startswith(
        f'restrict,from="127.0.0.1",command="borg serve --restrict-to-repository '
        f'{tmp_path}/repos/bh-phone/phone --append-only" ssh-ed25519 ')

    second = hive("apply", "-f", str(cfg), "--detailed-exitcode")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "No changes." in second.stdout
    plan = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert plan.returncode == 0 and "No changes." in plan.stdout


def test_plan_json_is_a_stream_with_version_first_and_summary_last(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    result = hive("plan", "-f", str(cfg), "-o", "json", "--detailed-exitcode")
    assert result.returncode == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[0]["type"] == "version" and records[0]["format"] == 1
    checksum = records[-1].pop("checksum")   # tests/test_plan_checksum.py checks its value
    assert len(checksum) == 64
    assert records[-1] == {"type": "summary", "add": 9, "change": 0, "remove": 0, "errors": 0}
    changes = [r for r in records if r["type"] == "change"]
    assert changes[0] == {"type": "change", "action": "create", "kind": "account",
                          "name": "bh-laptop", "before": None, "repository": "laptop",
                          "after": {"uid": 20000, "gid": 20000, "group": 20000,
                                    "gecos": "Hive repository laptop (alice)",
                                    "home": f"{tmp_path}/repos/bh-laptop",
                                    "shell": "/bin/sh", "locked": False}}


def test_foreign_extrausers_lines_are_kept_byte_for_byte(tmp_path: Path,
                                                        pubkeys: dict[str, str]) -> None:
    """glibc reads these files in lines ending at "\n" only; a line another tool wrote
    with a "\r\n" ending or a U+0085 in its gecos is one line, and stays that one line
    when Hive rewrites the file around it (str.splitlines split it in two)."""
    cfg = write_config(tmp_path, body(pubkeys))
    (tmp_path / "extrausers").mkdir()
    foreign = ("snapuser:x:30000:30000:Snap\u0085User:/home/s:/bin/sh\n"
               "other:x:30001:30001::/home/o:/bin/sh\r\n")
    (tmp_path / "extrausers" / "passwd").write_bytes(foreign.encode())
    assert hive("apply", "-f", str(cfg)).returncode == 0
    written = (tmp_path / "extrausers" / "passwd").read_bytes().decode()
    assert written.startswith(foreign), written[:200]
    assert written.count("\n") == 4  # the two foreign lines, then laptop's and phone's


def test_drift_is_repaired(tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    repo = tmp_path / "repos" / "bh-laptop" / "laptop"
    os.chmod(repo, 0o777)
    (tmp_path / "state" / "authorized_keys" / "bh-laptop").write_text("ssh-ed25519 AAAA evil\n")
    plan = hive("plan", "-f", str(cfg))
    assert f'~ directory {repo}' in plan.stdout and 'mode: "0777" -> "0700"' in plan.stdout
    assert "~ authorized_keys bh-laptop" in plan.stdout
    assert "Plan: 0 to add, 2 to change, 0 to remove." in plan.stdout
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert mode(repo)[2] == "0700"
    assert "evil" not in (tmp_path / "state" / "authorized_keys" / "bh-laptop").read_text()


def test_remove_lock_prune_purge_lifecycle(tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    data = tmp_path / "repos" / "bh-phone" / "phone"
    (data / "config").write_text("[repository]\n")
    os.chown(data / "config", 20001, 20001)

    # Removing the repository from the file revokes access and locks; the data stays.
    write_config(tmp_path, body(pubkeys).replace(
        "  phone: {owner: bob, append_only_keys: [kb]}\n", ""))
    result = hive("apply", "-f", str(cfg))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "state" / "authorized_keys" / "bh-phone").exists()
    shadow = {line.split(":")[0]: line for line in lines(tmp_path / "extrausers" / "shadow")}
    assert shadow["bh-phone"].startswith("bh-phone:!*:")
    assert (data / "config").exists()

    # --prune will not remove a user whose repository still holds data.
    pruned = hive("apply", "-f", str(cfg), "--prune")
    assert pruned.returncode == 0 and "hive purge phone" in pruned.stdout
    assert (data / "config").exists()

    # purge asks for the exact name, then deletes the data; prune then removes the rest.
    wrong = hive("purge", "phone", "-f", str(cfg), "--confirm", "laptop")
    assert wrong.returncode == 1 and (data / "config").exists()
    active = hive("purge", "laptop", "-f", str(cfg), "--confirm", "laptop")
    assert active.returncode == 1 and "still active" in active.stderr
    purged = hive("purge", "phone", "-f", str(cfg), "--confirm", "phone")
    assert purged.returncode == 0, purged.stderr
    assert not data.exists()
    pruned = hive("apply", "-f", str(cfg), "--prune", "--detailed-exitcode")
    assert pruned.returncode == 2, pruned.stdout + pruned.stderr
    assert not (tmp_path / "repos" / "bh-phone").exists()
    assert "bh-phone" not in (tmp_path / "extrausers" / "passwd").read_text()
    inventory = json.loads((tmp_path / "state" / "inventory.json").read_text())
    assert list(inventory["accounts"]) == ["bh-laptop"]
    assert hive("apply", "-f", str(cfg), "--prune", "--detailed-exitcode").returncode == 0


@pytest.mark.parametrize("loosen", ["folder writable", "file of another user"])
def test_an_inventory_others_may_change_is_refused(tmp_path: Path, pubkeys: dict[str, str],
                                                   loosen: str) -> None:
    """The inventory says what is Hive's, and purge deletes the folder it names: one that
    another user may edit would let them point root's purge at /etc."""
    cfg = alice_config(tmp_path, pubkeys["a"], ["r1"])
    assert hive("apply", "-f", str(cfg)).returncode == 0
    state = tmp_path / "state"
    before = (state / "inventory.json").read_text()
    if loosen == "folder writable":
        state.chmod(0o777)
        culprit = state
    else:
        os.chown(state / "inventory.json", 1000, 1000)
        culprit = state / "inventory.json"
    for args in (("apply",), ("plan",), ("purge", "r1", "--confirm", "r1"),
                 ("rollback", "r1", "--list")):
        result = hive(*args, "-f", str(cfg))
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert f"{culprit} may be changed by users other than root" in result.stderr, args
        assert "unexpected error" not in result.stderr, args
    assert (state / "inventory.json").read_text() == before
    assert (tmp_path / "repos" / "bh-r1" / "r1").is_dir()


def test_protected_repository_refuses_removal_and_purge(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    protected = body(pubkeys).replace("quota: 10G}", "quota: 10G, protected: true}")
    cfg = write_config(tmp_path, protected)
    assert hive("apply", "-f", str(cfg)).returncode == 0
    write_config(tmp_path, protected.replace(
        "  laptop: {owner: alice, keys: [ka], quota: 10G, protected: true}\n", ""))
    result = hive("apply", "-f", str(cfg))
    assert result.returncode == 1
    assert "repository laptop is protected" in result.stderr
    assert (tmp_path / "state" / "authorized_keys" / "bh-laptop").exists()  # nothing applied
    purge = hive("purge", "laptop", "-f", str(cfg), "--confirm", "laptop")
    assert purge.returncode == 1 and "protected" in purge.stderr


def test_removing_every_repository_is_refused_without_force(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    write_config(tmp_path, "owners: {alice: {}}\n")
    refused = hive("apply", "-f", str(cfg))
    assert refused.returncode == 1 and "--force" in refused.stderr
    assert (tmp_path / "state" / "authorized_keys" / "bh-laptop").exists()
    forced = hive("apply", "-f", str(cfg), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (tmp_path / "state" / "authorized_keys" / "bh-laptop").exists()


def test_second_apply_waits_for_the_lock_then_fails_naming_the_holder(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    state = tmp_path / "state"
    state.mkdir()
    fd = os.open(state / "apply.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"pid 4242, ops@elsewhere, since 2026-11-26T10:00:00+00:00\n")
        started = time.monotonic()
        result = hive("apply", "-f", str(cfg), "--lock-timeout", "1")
        waited = time.monotonic() - started
    finally:
        os.close(fd)
    assert result.returncode == 1
    assert "another hive apply is running (pid 4242, ops@elsewhere" in result.stderr
    assert waited >= 1
    assert not (tmp_path / "repos").exists()


def test_journal_and_history_name_host_user_and_git_commit(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@example.org", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "hive.yaml"], check=True)
    subprocess.run([*git, "commit", "-qm", "first"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert hive("apply", "-f", str(cfg), env={"SUDO_USER": "carol"}).returncode == 0
    records = [json.loads(line) for line in lines(tmp_path / "state" / "journal.jsonl")]
    assert records[0]["type"] == "start" and records[0]["commit"] == head
    assert records[0]["user"] == "carol" and records[0]["host"] == "test1"
    assert [r["type"] for r in records[1:]] == ["change"] * 9 + ["finish"]
    assert all(r["host"] == "test1" and r["error"] is None for r in records[1:-1])
    history = hive("history", "-f", str(cfg), "-v")
    assert history.returncode == 0
    assert f"test1  carol  {head[:12]}  +9 ~0 -0  ok" in history.stdout
    assert "+ account bh-laptop" in history.stdout


def test_a_group_left_without_its_user_by_a_killed_apply_is_completed(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """group is written before passwd: an apply killed between the two leaves Hive's
    group without its user. The next plan creates the user; it does not refuse the name
    as someone else's."""
    cfg = alice_config(tmp_path, pubkeys["a"], ["r1", "r2"])
    assert hive("apply", "-f", str(cfg)).returncode == 0
    users = tmp_path / "extrausers"
    for name in ("passwd", "shadow"):  # as if killed before these were written
        kept = [line for line in lines(users / name) if not line.startswith("bh-r2:")]
        (users / name).write_text("".join(f"{line}\n" for line in kept))
    assert any(line.startswith("bh-r2:") for line in lines(users / "group"))

    plan = hive("plan", "-f", str(cfg))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "+ account bh-r2" in plan.stdout and "Error" not in plan.stdout + plan.stderr
    assert hive("apply", "-f", str(cfg)).returncode == 0
    assert hive("plan", "-f", str(cfg), "--detailed-exitcode").returncode == 0
    assert sum(line.startswith("bh-r2:") for line in lines(users / "group")) == 1


def test_apply_killed_at_any_point_converges(tmp_path: Path, pubkeys: dict[str, str]) -> None:
    """kill -9 an apply of 300 repositories at many moments; after each, every cache file
    sshd could read is whole, and the next apply converges to a plan with no changes.
    Some moments are fixed (while loading and planning), the others counted from the
    journal's start record, so they fall while changes are made however fast that is."""
    cfg = alice_config(tmp_path, pubkeys["a"], [f"r{i}" for i in range(300)],
                       uid_range="[20000, 29999]")
    cache = tmp_path / "state" / "authorized_keys"
    journal = tmp_path / "state" / "journal.jsonl"
    for after_start, delay in ((True, 0.0), (True, 0.02), (True, 0.05), (True, 0.1),
                               (True, 0.2), (False, 0.3), (False, 0.6)):
        starts = journal.read_text().count('"type": "start"') if journal.exists() else 0
        proc = subprocess.Popen([sys.executable, "-m", "hive", "apply", "-f", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while after_start and proc.poll() is None and time.monotonic() < deadline and (
                not journal.exists()
                or journal.read_text().count('"type": "start"') == starts):
            time.sleep(0.002)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        for path in cache.glob("[!.]*") if cache.exists() else []:
            content = path.read_text()
            assert content.endswith(" hive:ka\n") and content.count("\n") == 1, path
        for name in ("passwd", "group", "shadow"):
            f = tmp_path / "extrausers" / name
            if f.exists():
                assert all(line.count(":") >= 3 for line in lines(f)), f
    final = hive("apply", "-f", str(cfg))
    assert final.returncode == 0, final.stdout[-2000:] + final.stderr
    again = hive("plan", "-f", str(cfg), "--detailed-exitcode")
    assert again.returncode == 0, again.stdout[-2000:]
    assert len(list(cache.iterdir())) == 300  # no temporaries left beside the real files
    uids = [line.split(":")[2] for line in lines(tmp_path / "extrausers" / "passwd")]
    assert len(uids) == 300 and len(set(uids)) == 300
    history = hive("history", "-f", str(cfg), "-n", "100")
    assert "interrupted" in history.stdout


@pytest.fixture
def nobody_python(sysroot: Path) -> list[str]:
    argv = nobody_hive_argv(sysroot)
    if argv is None:
        pytest.skip("this interpreter's layout cannot be lent to nobody")
    return argv


def test_non_root_plan_works_and_apply_refuses_up_front(
        sysroot: Path, pubkeys: dict[str, str], nobody_python: list[str]) -> None:
    cfg = write_config(sysroot, body(pubkeys))
    cfg.chmod(0o644)
    assert hive("apply", "-f", str(cfg)).returncode == 0  # as root, a real server state
    write_config(sysroot, body(pubkeys).replace("quota: 10G", "quota: 20G"))
    run = lambda *a: subprocess.run([*nobody_python, *a], capture_output=True,  # noqa: E731
                                    text=True, cwd=sysroot)
    plan = run("plan", "-f", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert "~ authorized_keys bh-laptop" in plan.stdout
    assert "cannot read" in plan.stdout  # says what it could not compare
    before = {p: p.stat().st_mtime_ns for p in sysroot.rglob("*") if p.is_file()}
    apply = run("apply", "-f", str(cfg))
    assert apply.returncode == 1
    assert "hive apply needs root" in apply.stderr and "Nothing was changed" in apply.stderr
    after = {p: p.stat().st_mtime_ns for p in sysroot.rglob("*") if p.is_file()}
    assert before == after


def test_uid_change_moves_ownership_of_the_data_and_finishes_after_a_crash(
        tmp_path: Path, pubkeys: dict[str, str]) -> None:
    cfg = write_config(tmp_path, body(pubkeys))
    assert hive("apply", "-f", str(cfg)).returncode == 0
    repo = tmp_path / "repos" / "bh-laptop" / "laptop"
    (repo / "data" / "0").mkdir(parents=True)
    files = [repo / "config", repo / "data" / "0" / "1", repo / "data" / "0" / "2"]
    for f in files:
        f.write_text("x")
    (repo / "foreign").write_text("not the repository user's")
    for path in [repo / "data", repo / "data" / "0", *files]:
        os.lchown(path, 20000, 20000)
    os.lchown(repo / "foreign", 4242, 4242)
    (repo / "link").symlink_to("/etc/passwd")
    os.lchown(repo / "link", 20000, 20000)
    pinned = body(pubkeys).replace("quota: 10G}", "quota: 10G, uid: 21000}")
    write_config(tmp_path, pinned)
    # The state an apply killed half-way leaves: some contents moved, the folder not yet.
    os.lchown(files[0], 21000, 21000)
    result = hive("apply", "-f", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
    for path in [repo, repo / "data", repo / "data" / "0", *files, repo / "link"]:
        assert os.lstat(path).st_uid == 21000, path
    assert os.lstat(repo / "foreign").st_uid == 4242  # only the old owner's files move
    assert os.stat("/etc/passwd").st_uid == 0  # the symlink was not followed
    assert hive("plan", "-f", str(cfg), "--detailed-exitcode").returncode == 0
