"""End to end: sshd gets keys from `hive authorized-keys`, run as `nobody`, from a Hive
installed where `nobody` can reach it; deploy/sshd/hive-keys-command.conf is loaded as
shipped.

Why: the AuthorizedKeysCommand variant can fail in ways a file cannot: sshd refuses a
command whose path is not root-owned all the way up, the command user must be able to
start the interpreter and read the cache (a Python under /root is unreachable for
`nobody`), and sshd runs the command with an empty environment, twice per login. Only a
real install, a real sshd and a real borg client show that all of it holds. The test also
prints the login latency of both variants (AuthorizedKeysFile and the command).

The install (tests/hive_install.py) is built once per session under a root-owned folder in
/run and removed afterwards; without python3-venv or a package index the module skips.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hive_install import HiveInstall
from sshd_harness import (
    BASE_OPTIONS,
    SHIPPED_COMMAND_SNIPPET,
    SHIPPED_SNIPPET,
    AuthorizedKeysCommand,
    AuthorizedKeysFile,
    KeySource,
    SshClient,
    SshdServer,
    describe,
    e2e_marks,
    generate_ed25519_key,
    host_state,
    missing_prerequisites,
    namespace_pids,
    render_shipped,
    root_owned_test_root,
    strict_modes_problems,
)
from sshd_harness import (
    Deployment as BaseDeployment,
)

SHIPPED_FILE_SNIPPET = SHIPPED_SNIPPET
SHIPPED_COMMAND = ("AuthorizedKeysCommand /opt/hive/bin/hive authorized-keys "
                   "--state-dir /var/lib/hive %u")
NOBODY = 65534
#: How many logins per variant the latency measurement takes the median of.
LOGINS = 15

_MISSING = missing_prerequisites(("ssh", "ssh-keygen", "borg"))
pytestmark = e2e_marks("real-sshd e2e", _MISSING)

Result = subprocess.CompletedProcess[str]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def installed(hive_install: HiveInstall | str) -> HiveInstall:
    """The session's reachable install (conftest.py), or a skip saying why there is none."""
    if _MISSING:
        pytest.skip("real-sshd e2e: " + "; ".join(_MISSING))
    if isinstance(hive_install, str):
        pytest.skip(f"cannot install Hive where nobody can reach it: {hive_install}")
    return hive_install


@dataclass(kw_only=True)
class Deployment(BaseDeployment):
    """The test server, with Hive from the reachable install."""

    install: HiveInstall
    config: Path
    files_dir: Path


def hive_yaml(d: Deployment) -> str:
    return f"""\
version: 1
server:
  name: keys-command-e2e
  ssh_host: 127.0.0.1
  repos_root: {d.repos_root}
  state_dir: {d.state_dir}
  users: {{prefix: "bh-", uid_range: [24000, 24999], shell: /bin/sh}}
  identity: {{backend: files, files_dir: {d.files_dir}}}
owners:
  alice: {{}}
  bob: {{}}
keys:
  alice-key: {{owner: alice, public_key: "{d.keys['alice-key'].public_key}"}}
  bob-key: {{owner: bob, public_key: "{d.keys['bob-key'].public_key}"}}
repositories:
  repoa: {{owner: alice, keys: [alice-key]}}
  repob: {{owner: bob, keys: [bob-key]}}
  nokeys: {{owner: bob}}
"""


def command_snippet(d: Deployment, name: str = "hive-keys-command.conf") -> Path:
    """deploy/sshd/hive-keys-command.conf as shipped, with the test's install and state."""
    return render_shipped(SHIPPED_COMMAND_SNIPPET, [(
        SHIPPED_COMMAND,
        f"AuthorizedKeysCommand {d.install.hive} authorized-keys --state-dir {d.state_dir} %u",
    )], d.root / name)


def file_snippet(d: Deployment) -> Path:
    """deploy/sshd/hive.conf as shipped, with the test's state dir."""
    return render_shipped(SHIPPED_FILE_SNIPPET, [
        ("/var/lib/hive/authorized_keys/", f"{d.state_dir}/authorized_keys/"),
    ], d.root / "hive.conf")


@pytest.fixture(scope="module")
def deployment(installed: HiveInstall) -> Iterator[Deployment]:
    """`hive apply` by the installed Hive, then sshd with the shipped command snippet."""
    before = host_state()
    namespace = None
    with root_owned_test_root(prefix="hive-e2e-cmd-") as root:
        keys_dir = root / "client-keys"
        d = Deployment(root=root, install=installed, config=root / "hive.yaml",
                       repos_root=root / "repos", state_dir=root / "state",
                       files_dir=root / "extrausers",
                       keys={name: generate_ed25519_key(keys_dir, name, f"{name}@e2e")
                             for name in ("alice-key", "bob-key")})
        d.config.write_text(hive_yaml(d))
        # The installed Hive, not the test's: the install is complete enough to apply.
        result = subprocess.run([str(installed.hive), "apply", "-f", str(d.config)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, "hive apply failed:\n" + describe(result)
        # DEBUG3: the only level at which sshd names the user it runs the command as.
        with SshdServer(workdir=root / "sshd", files_dir=d.files_dir, keys=None,
                        include=command_snippet(d), hardening=BASE_OPTIONS,
                        log_level="DEBUG3") as server:
            d.server = server
            namespace = server.namespace
            yield d
    assert namespace is not None and namespace_pids(namespace) == []
    assert host_state() == before


def _assert_ok(result: Result, server: SshdServer | None) -> None:
    assert result.returncode == 0, describe(result, server)


# --------------------------------------------------------------------------- the install


def test_install_is_usable_by_nobody(deployment: Deployment) -> None:
    """What sshd demands of the command path, and what nobody needs to run it."""
    d = deployment
    assert strict_modes_problems(d.install.hive) == []
    assert not str(d.install.hive.resolve()).startswith("/root/")
    interpreter = Path(os.path.realpath(d.install.python))
    assert interpreter == Path("/usr/bin/python3").resolve(), interpreter
    cache = d.state_dir / "authorized_keys" / d.user("repoa")
    as_nobody = subprocess.run(
        [str(d.install.hive), "authorized-keys", "--state-dir", str(d.state_dir),
         d.user("repoa")], capture_output=True, text=True, user=NOBODY, group=NOBODY,
        extra_groups=[], env={}, stdin=subprocess.DEVNULL, timeout=30)
    assert as_nobody.returncode == 0, describe(as_nobody)
    assert as_nobody.stdout == cache.read_text(), describe(as_nobody)
    assert as_nobody.stdout.startswith("restrict,"), as_nobody.stdout
    # The control: the test's own interpreter (a pyenv under /root, 0700) is what
    # AuthorizedKeysCommandUser nobody could not start; the venv above it can.
    if Path(sys.executable).resolve().is_relative_to("/root"):
        with pytest.raises(PermissionError):
            subprocess.run([sys.executable, "-c", "pass"], user=NOBODY, group=NOBODY,
                           extra_groups=[], env={}, capture_output=True, timeout=30)
    for unknown in ("bh-nosuch", d.user("nokeys"), "../../etc/passwd", "root"):
        result = subprocess.run(
            [str(d.install.hive), "authorized-keys", "--state-dir", str(d.state_dir), unknown],
            capture_output=True, text=True, user=NOBODY, group=NOBODY, extra_groups=[],
            env={}, stdin=subprocess.DEVNULL, timeout=30)
        assert (result.returncode, result.stdout) == (0, ""), describe(result)


def test_snippet_keeps_the_hardening_of_hive_conf(deployment: Deployment) -> None:
    """For a bh-* user, sshd's effective settings under the two shipped snippets differ
    only in where keys come from; for other users neither snippet changes anything."""
    d = deployment
    assert d.server is not None
    base_config = d.server.config_path.read_text()

    def effective(snippet: Path, user: str) -> dict[str, str]:
        """`sshd -T` for `user` with the server's own config including `snippet`."""
        config = d.root / f"sshd_config-{snippet.name}"
        text = base_config
        config.write_text(re.sub(r"(?m)^Include .*$", f"Include {snippet}", text))
        result = subprocess.run(
            ["/usr/sbin/sshd", "-T", "-f", str(config), "-C",
             f"user={user},host=client,addr=192.0.2.1"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return dict(line.split(" ", 1) for line in result.stdout.splitlines() if " " in line)

    command, files = command_snippet(d, "check-command.conf"), file_snippet(d)
    with_command = effective(command, "bh-repoa")
    with_files = effective(files, "bh-repoa")
    keys = {"authorizedkeyscommand", "authorizedkeyscommanduser", "authorizedkeysfile"}
    assert with_command["authorizedkeyscommand"] == (
        f"{d.install.hive} authorized-keys --state-dir {d.state_dir} %u")
    assert with_command["authorizedkeyscommanduser"] == "nobody"
    assert with_command["authorizedkeysfile"] == "none"
    assert with_files["authorizedkeysfile"] == f"{d.state_dir}/authorized_keys/%u"
    assert {k: v for k, v in with_command.items() if k not in keys} == \
        {k: v for k, v in with_files.items() if k not in keys}
    assert with_command["disableforwarding"] == "yes" and with_command["permittty"] == "no"
    # An administrator is not matched: defaults, no command.
    admin = effective(command, "admin")
    assert admin["authorizedkeyscommand"] == "none"
    assert admin["authorizedkeysfile"] == ".ssh/authorized_keys .ssh/authorized_keys2"


# --------------------------------------------------------------------------- logins


def test_borg_works_through_the_keys_command_run_as_nobody(deployment: Deployment) -> None:
    d = deployment
    assert d.server is not None
    alice = d.client("alice-key")
    url = d.url(alice, "repoa")
    mark = d.server.log_mark()
    _assert_ok(alice.borg("init", "-e", "repokey", url), d.server)
    data = alice.workdir / "data.txt"
    data.write_text("through AuthorizedKeysCommand\n")
    _assert_ok(alice.borg("create", f"{url}::first", str(data)), d.server)
    listing = alice.borg("list", "--short", url)
    _assert_ok(listing, d.server)
    assert listing.stdout.split() == ["first"], describe(listing, d.server)
    log = d.server.log_since(mark)
    runs = re.findall(r'AuthorizedKeysCommand command "([^"]*)" running as (\S+) ', log)
    assert runs, "sshd logged no AuthorizedKeysCommand run:\n" + d.server.log_tail()
    assert {user for _, user in runs} == {"nobody"}, runs
    assert {cmd for cmd, _ in runs} == {
        f"{d.install.hive} authorized-keys --state-dir {d.state_dir} bh-repoa"}, runs
    accepted = log.count("Accepted publickey for bh-repoa ")
    assert accepted == 3, log
    line = next(ln for ln in log.splitlines() if "running as nobody" in ln)
    print(f"\nAuthorizedKeysCommand ran {len(runs)} times for {accepted} borg logins;"
          f" sshd: {line.strip()}")


def test_other_and_unknown_users_get_no_keys(deployment: Deployment) -> None:
    d = deployment
    assert d.server is not None
    alice = d.client("alice-key")
    # Another repository's user: the command runs (as nobody) and prints only bob's key.
    for user in (d.user("repob"), d.user("nokeys")):
        mark = d.server.log_mark()
        result = alice.ssh(user, "true")
        assert result.returncode == 255, describe(result, d.server)
        assert "Permission denied (publickey)" in result.stderr, describe(result, d.server)
        log = d.server.log_since(mark)
        assert f'authorized-keys --state-dir {d.state_dir} {user}" running as nobody' in log
        assert "Accepted publickey" not in log
    # A user that does not exist: sshd refuses before any command runs.
    mark = d.server.log_mark()
    result = alice.ssh("bh-nosuch", "true")
    assert result.returncode == 255, describe(result, d.server)
    assert d.server.wait_for_log("Invalid user bh-nosuch", since=mark)
    assert "AuthorizedKeysCommand command" not in d.server.log_since(mark)


def test_a_cache_strict_modes_would_refuse_gives_no_keys(deployment: Deployment) -> None:
    """Issue 13: the command ran as nobody and printed keys from a cache folder anyone
    could write, or a file a repository user owned. Now sshd gets nothing and logs the
    command's failure; the same login works again once the cache is root's alone."""
    d = deployment
    assert d.server is not None
    alice, user = d.client("alice-key"), d.user("repoa")
    folder = d.state_dir / "authorized_keys"
    cache = folder / user
    uid = d.repo_path("repoa").stat().st_uid
    spoiled = [("folder mode 0777", lambda: folder.chmod(0o777), lambda: folder.chmod(0o755)),
               ("file owned by the repository user", lambda: os.chown(cache, uid, 0),
                lambda: os.chown(cache, 0, 0))]
    for what, spoil, restore in spoiled:
        spoil()
        try:
            mark = d.server.log_mark()
            result = alice.ssh(user, "true")
            assert result.returncode == 255, what + "\n" + describe(result, d.server)
            assert d.server.wait_for_log(f"--state-dir {d.state_dir} {user} failed, status 1",
                                         since=mark), what + "\n" + d.server.log_tail()
            assert "Accepted publickey" not in d.server.log_since(mark), what
        finally:
            restore()
    # Root's again, with a folder on the way that nobody may search but not list (0711):
    # the walk needs no read permission (O_PATH), so the same login works.
    d.state_dir.chmod(0o711)
    try:
        mark = d.server.log_mark()
        alice.ssh(user, "true")
        assert d.server.wait_for_log(f"Accepted publickey for {user} ", since=mark), \
            d.server.log_tail()
    finally:
        d.state_dir.chmod(0o755)


# --------------------------------------------------------------------------- latency


def _login_times(client: SshClient, user: str, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        result = client.ssh(user, "true")
        times.append(time.perf_counter() - started)
        assert result.returncode == 0, describe(result)
    return times


def test_login_latency_of_both_variants(deployment: Deployment) -> None:
    """Median of LOGINS logins each; printed, not asserted (machines differ).

    Both servers see the same users and hardening and read the same hand-made cache whose
    key forces `true`, so the difference is the key lookup alone: sshd reading a file vs
    starting the installed `hive authorized-keys` (as nobody, twice per login).
    """
    d = deployment
    bench_state = d.root / "bench-state"
    (bench_state / "authorized_keys").mkdir(parents=True, mode=0o755)
    bench_state.chmod(0o755)
    kind, blob = d.keys["alice-key"].public_key.split()[:2]
    cache = bench_state / "authorized_keys" / d.user("repoa")
    cache.write_text(f'restrict,command="true" {kind} {blob} hive:bench\n')
    cache.chmod(0o644)
    sources: dict[str, KeySource] = {
        "AuthorizedKeysFile": AuthorizedKeysFile(bench_state / "authorized_keys"),
        "AuthorizedKeysCommand": AuthorizedKeysCommand(
            f"{d.install.hive} authorized-keys --state-dir {bench_state} %u"),
    }
    servers = {name: SshdServer(workdir=d.root / f"sshd-bench-{name}", files_dir=d.files_dir,
                                keys=keys, log_level="INFO")
               for name, keys in sources.items()}
    times: dict[str, list[float]] = {name: [] for name in servers}
    try:
        for server in servers.values():
            server.start()
        clients = {name: d.client("alice-key", server) for name, server in servers.items()}
        for client in clients.values():
            _login_times(client, d.user("repoa"), 1)  # warm caches, untimed
        for _ in range(LOGINS):  # interleaved, so drift hits both alike
            for name, client in clients.items():
                times[name] += _login_times(client, d.user("repoa"), 1)
    finally:
        for server in servers.values():
            server.stop()
    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    print(f"\nlogin latency, median of {LOGINS} (ssh ... true, forced command `true`):")
    for name, value in medians.items():
        spread = f"{min(times[name]) * 1000:.0f}-{max(times[name]) * 1000:.0f}"
        print(f"  {name:<22} {value:6.0f} ms   (range {spread} ms)")
    extra = medians["AuthorizedKeysCommand"] - medians["AuthorizedKeysFile"]
    print(f"  difference             {extra:6.0f} ms")
    assert all(len(values) == LOGINS for values in times.values())
