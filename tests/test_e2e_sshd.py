"""End to end: what `hive apply` writes is what a real sshd + borg need.

A real sshd (tests/sshd_harness.py) reads the users and authorized_keys files that
`python -m hive apply` produced. This module checks the deployment itself: the harness
against hand-written files, StrictModes, ownership of what borg serve writes, the dead
client's lock, an idempotent second apply. What each key may and may not do (issue 4's
access matrix, rows 1-10, with borg 1.2 and 1.4 clients, rsync and borgmatic) is in
tests/test_access_matrix.py. Needs root, sshd, borg and unshare; the host's nsswitch.conf,
/var/lib/extrausers and ~/.config/borg are left untouched.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd_harness import (
    BASE_OPTIONS,
    REPO_ROOT,
    SHIPPED_SNIPPET,
    SSH_CLIENT_OPTIONS,
    AuthorizedKeysCommand,
    AuthorizedKeysFile,
    KeySource,
    SshdServer,
    describe,
    e2e_marks,
    generate_ed25519_key,
    missing_prerequisites,
    root_owned_test_root,
    strict_modes_problems,
)
from sshd_harness import (
    Deployment as BaseDeployment,
)

DEPLOY_SNIPPET = SHIPPED_SNIPPET
_MISSING = missing_prerequisites(("ssh", "ssh-keygen", "borg"))

pytestmark = e2e_marks("real-sshd e2e", _MISSING)


Result = subprocess.CompletedProcess[str]


# --------------------------------------------------------------------------- the deployment


@dataclass(kw_only=True)
class Deployment(BaseDeployment):
    """One test server with users in extrausers files."""

    files_dir: Path


def make_deployment(root: Path) -> Deployment:
    keys_dir = root / "client-keys"
    keys = {name: generate_ed25519_key(keys_dir, name, f"{name}@e2e")
            for name in ("alice-key", "bob-key", "carol-key")}
    return Deployment(root=root, repos_root=root / "repos", state_dir=root / "state",
                      files_dir=root / "extrausers", keys=keys)


def hive_yaml(d: Deployment) -> str:
    """The hive.yaml under test. JSON-style quoting keeps the public keys intact."""
    return f"""\
version: 1
server:
  name: test1
  ssh_host: 127.0.0.1
  ssh_port: 22
  repos_root: {d.repos_root}
  state_dir: {d.state_dir}
  users: {{prefix: "bh-", uid_range: [20000, 20999], shell: /bin/sh}}
  identity: {{backend: files, files_dir: {d.files_dir}}}
owners:
  alice: {{}}
  bob: {{}}
keys:
  alice-key: {{owner: alice, public_key: "{d.keys['alice-key'].public_key}"}}
  bob-key: {{owner: bob, public_key: "{d.keys['bob-key'].public_key}"}}
  carol-key: {{owner: bob, public_key: "{d.keys['carol-key'].public_key}"}}
repositories:
  repoa: {{owner: alice, keys: [alice-key]}}
  repob: {{owner: bob, keys: [bob-key], append_only_keys: [carol-key]}}
  inbox: {{owner: alice, mode: import, keys: [alice-key]}}
  outbox: {{owner: alice, mode: export, keys: [alice-key]}}
"""


def hive_apply(config: Path) -> Result:
    """`python -m hive apply -f FILE`, exactly as an operator would run it."""
    return subprocess.run(
        [sys.executable, "-m", "hive", "apply", "-f", str(config)],
        capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,  # -m finds ./hive
    )


def provision_by_hand(d: Deployment, repos: dict[str, tuple[int, list[str]]]) -> None:
    """Write what Hive should write, by hand: the harness's own reference, independent of
    Hive. `repos` maps repository name -> (uid, key names)."""
    d.files_dir.mkdir(mode=0o755)
    d.repos_root.mkdir(mode=0o755)
    keys_dir = d.state_dir / "authorized_keys"
    keys_dir.mkdir(mode=0o755, parents=True)
    d.state_dir.chmod(0o755)
    passwd, group, shadow = [], [], []
    for repo, (uid, key_names) in repos.items():
        user = d.user(repo)
        home = d.repos_root / user
        passwd.append(f"{user}:x:{uid}:{uid}:Hive repository {repo}:{home}:/bin/sh\n")
        group.append(f"{user}:x:{uid}:\n")
        shadow.append(f"{user}:*:19000:0:99999:7:::\n")
        home.mkdir(mode=0o750)
        os.chown(home, 0, uid)
        d.repo_path(repo).mkdir(mode=0o700)
        os.chown(d.repo_path(repo), uid, uid)
        lines = []
        for name in key_names:
            kind, blob = d.keys[name].public_key.split()[:2]
            command = f"borg serve --restrict-to-repository {d.repo_path(repo)}"
            lines.append(f'restrict,command="{command}" {kind} {blob} hive:{name}\n')
        (keys_dir / user).write_text("".join(lines))
        (keys_dir / user).chmod(0o644)
    for name, lines in (("passwd", passwd), ("group", group), ("shadow", shadow)):
        (d.files_dir / name).write_text("".join(lines))
    (d.files_dir / "shadow").chmod(0o640)


def _assert_ok(result: Result, d: Deployment) -> None:
    assert result.returncode == 0, describe(result, d.server)


def _assert_login_refused(d: Deployment, user: str, attempt: Callable[[], Result]) -> None:
    """`attempt` fails, and sshd's log says it refused the key for `user`."""
    assert d.server is not None
    mark = d.server.log_mark()
    result = attempt()
    assert result.returncode != 0, describe(result, d.server)
    assert d.server.wait_for_log(f"Failed publickey for {user} ", since=mark), \
        describe(result, d.server)
    assert "Accepted publickey" not in d.server.log_since(mark), describe(result, d.server)


def _server(d: Deployment, keys: KeySource | None = None) -> SshdServer:
    """A harness sshd with its own hardening and the given key source (hand-made files)."""
    return SshdServer(
        workdir=d.root / ("sshd-" + type(keys).__name__ if keys else "sshd"),
        files_dir=d.files_dir,
        keys=keys or AuthorizedKeysFile(d.state_dir / "authorized_keys"),
    )


def deploy_snippet(d: Deployment) -> Path:
    """deploy/sshd/hive.conf as shipped, with the test's state dir, and client-alive
    timings cut from minutes to seconds for the dead-client test."""
    text = DEPLOY_SNIPPET.read_text()
    for old, new in (("/var/lib/hive/authorized_keys/", f"{d.state_dir}/authorized_keys/"),
                     ("ClientAliveInterval 15", "ClientAliveInterval 1"),
                     ("ClientAliveCountMax 4", "ClientAliveCountMax 1")):
        assert old in text, f"{DEPLOY_SNIPPET} no longer says {old!r}: update this test"
        text = text.replace(old, new)
    path = d.root / "sshd_config.d-hive.conf"
    path.write_text(text)
    return path


def _hive_server(d: Deployment) -> SshdServer:
    """sshd as deployed: only the shipped snippet restricts and finds keys for bh-* users."""
    return SshdServer(workdir=d.root / "sshd", files_dir=d.files_dir, keys=None,
                      include=deploy_snippet(d), hardening=BASE_OPTIONS)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def hive_deployment() -> Iterator[Deployment]:
    """hive apply on a fresh root, then a real sshd reading what it wrote."""
    with root_owned_test_root() as root:
        d = make_deployment(root)
        config = root / "hive.yaml"
        config.write_text(hive_yaml(d))
        started = time.monotonic()
        result = hive_apply(config)
        assert result.returncode == 0, "hive apply failed:\n" + describe(result)
        print(f"hive apply took {time.monotonic() - started:.2f}s")
        with _hive_server(d) as server:
            d.server = server
            yield d


@pytest.fixture(scope="module")
def hand_deployment() -> Iterator[Deployment]:
    """The same layout written by hand: proves the harness itself, independent of Hive."""
    with root_owned_test_root() as root:
        d = make_deployment(root)
        provision_by_hand(d, {"repoa": (20000, ["alice-key"]), "repob": (20001, ["bob-key"])})
        yield d


# --------------------------------------------------------------------------- harness self-tests


@pytest.mark.parametrize("source", ["file", "command"])
def test_harness_with_hand_written_files(hand_deployment: Deployment, source: str) -> None:
    """The harness alone: both key sources admit alice to her repository, and only there."""
    d = hand_deployment
    keys: KeySource = AuthorizedKeysFile(d.state_dir / "authorized_keys")
    if source == "command":
        # sshd expands %u; /bin/cat is root-owned under root-owned dirs, as sshd requires.
        keys = AuthorizedKeysCommand(f"/bin/cat {d.state_dir}/authorized_keys/%u")
    with _server(d, keys) as server:
        d.server = server
        alice = d.client("alice-key")
        if not (d.repo_path("repoa") / "config").exists():
            _assert_ok(alice.borg("init", "-e", "repokey", d.url(alice, "repoa")), d)
        _assert_ok(alice.borg("list", d.url(alice, "repoa")), d)
        _assert_login_refused(d, "bh-repob", lambda: alice.borg("list", d.url(alice, "repob")))
    assert server.process is None
    assert "/etc/nsswitch.conf" not in Path("/proc/self/mountinfo").read_text()


# --------------------------------------------------------------------------- what hive wrote


def test_authorized_keys_files_pass_strict_modes(hive_deployment: Deployment) -> None:
    d = hive_deployment
    for repo in ("repoa", "repob"):
        path = d.state_dir / "authorized_keys" / d.user(repo)
        assert path.is_file(), f"hive apply wrote no {path}"
        assert strict_modes_problems(path) == []
        text = path.read_text()
        assert text.startswith("restrict,"), text
        assert f"--restrict-to-repository {d.repo_path(repo)}" in text, text


# --------------------------------------------------------------------------- borg over sshd


def test_owner_key_can_init_create_and_list(hive_deployment: Deployment) -> None:
    d = hive_deployment
    alice = d.client("alice-key")
    url = d.url(alice, "repoa")
    _assert_ok(alice.borg("init", "-e", "repokey", url), d)
    data = alice.workdir / "data.txt"
    data.write_text("hello from alice\n")
    _assert_ok(alice.borg("create", f"{url}::first", str(data)), d)
    listing = alice.borg("list", "--short", url)
    _assert_ok(listing, d)
    assert listing.stdout.split() == ["first"], describe(listing, d.server)
    # The repository's files belong to its user, as borg serve ran as that user.
    owner = d.repo_path("repoa").stat().st_uid
    assert {p.stat().st_uid for p in d.repo_path("repoa").rglob("*")} == {owner}
    # borg serve needs no writable home: the root-owned home gained no .config/.cache.
    home = d.repos_root / d.user("repoa")
    assert [p.name for p in home.iterdir()] == ["repoa"]
    assert (home.stat().st_uid, home.stat().st_mode & 0o7777) == (0, 0o750)


def test_a_certificate_of_a_trusted_user_ca_does_not_log_in(
        hive_deployment: Deployment) -> None:
    """A host may trust a user CA for its admins (TrustedUserCAKeys). A certificate that
    names a repository user carries no line from Hive, so no `restrict` and no forced
    command: the shipped snippet must refuse it, while the user's Hive key still works."""
    d = hive_deployment
    ca = generate_ed25519_key(d.root / "user-ca", "ca")
    dave = generate_ed25519_key(d.root / "user-ca", "dave")
    subprocess.run(["ssh-keygen", "-q", "-s", str(ca.private_key), "-I", "dave", "-n",
                    d.user("repoa"), f"{dave.private_key}.pub"], check=True,
                   capture_output=True)
    server = SshdServer(workdir=d.root / "sshd-user-ca", files_dir=d.files_dir, keys=None,
                        include=deploy_snippet(d),
                        hardening=(*BASE_OPTIONS, ("TrustedUserCAKeys", f"{ca.private_key}.pub")))
    with server:
        shell = subprocess.run(
            ["ssh", *SSH_CLIENT_OPTIONS, "-i", str(dave.private_key), "-o",
             f"CertificateFile={dave.private_key}-cert.pub", "-p", str(server.port),
             f"{d.user('repoa')}@127.0.0.1", "echo SHELL_$((6*7))"],
            capture_output=True, text=True, timeout=60)
        assert "SHELL_42" not in shell.stdout, describe(shell, server)
        assert shell.returncode == 255 and "Permission denied" in shell.stderr, \
            describe(shell, server)
        # the user's Hive key logs in and gets its forced command (borg serve, which ends
        # at the end of its input), not the command asked for
        plain = d.client("alice-key", server).ssh(d.user("repoa"), "echo SHELL_$((6*7))",
                                                   input="")
        assert plain.returncode != 255 and "SHELL_42" not in plain.stdout, \
            describe(plain, server)


# --------------------------------------------------------------------------- beyond plain borg


def test_dead_client_frees_the_repository_lock(hive_deployment: Deployment) -> None:
    """ClientAlive*: sshd drops a client that stopped answering, borg serve sees EOF and
    removes its lock, so the next backup is not blocked by a stale lock."""
    d = hive_deployment
    alice = d.client("alice-key")
    url = d.url(alice, "repoa")
    if not (d.repo_path("repoa") / "config").exists():
        _assert_ok(alice.borg("init", "-e", "repokey", url), d)
    lock = d.repo_path("repoa") / "lock.exclusive"
    holder = subprocess.Popen(
        ["borg", "with-lock", url, "sleep", "60"], env=alice._env(), cwd=alice.workdir,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)  # its own process group: borg, its ssh and the sleep
    frozen: list[int] = []
    try:
        deadline = time.monotonic() + 15
        while not lock.exists():
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() < deadline, "borg with-lock never took the lock"
            time.sleep(0.05)
        # Freeze the client's ssh (borg's child): TCP stays up, but nothing answers.
        frozen = [pid for pid in _children(holder.pid) if _comm(pid) == "ssh"]
        assert frozen, "borg started no ssh"
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        started = time.monotonic()
        while lock.exists():
            assert time.monotonic() - started < 15, "stale lock survived a dead client"
            time.sleep(0.1)
        print(f"lock freed {time.monotonic() - started:.1f}s after the client froze")
    finally:
        # SIGKILL ends stopped processes too; the group id is the holder's pid.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    _assert_ok(alice.borg("list", url), d)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_second_apply_leaves_working_repositories_alone(hive_deployment: Deployment) -> None:
    """Re-applying the same hive.yaml over repositories with borg data changes nothing."""
    d = hive_deployment
    files = sorted(p for p in d.root.rglob("*")
                   if p.is_file() and (d.state_dir / "authorized_keys" in p.parents
                                       or d.files_dir in p.parents or d.repos_root in p.parents))
    before = {p: (p.stat().st_mtime_ns, p.stat().st_uid, p.stat().st_mode) for p in files}
    result = hive_apply(d.root / "hive.yaml")
    assert result.returncode == 0, describe(result)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_uid, p.stat().st_mode) for p in files}
    assert after == before
    alice = d.client("alice-key")
    _assert_ok(alice.borg("list", d.url(alice, "repoa")), d)


def test_host_is_untouched() -> None:
    """Runs last in this module: no bind mount leaked into the host's namespace."""
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "/etc/nsswitch.conf" not in mounts
    assert "/var/lib/extrausers" not in mounts
