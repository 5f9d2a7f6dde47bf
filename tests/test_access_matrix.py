"""The access matrix of issue 4, each row with the real programs.

One `hive apply`, one real sshd per key source (tests/sshd_harness.py, reading the shipped
deploy/sshd/hive.conf or hive-keys-command.conf), one repository per row and borg client,
and the real clients:

* borg: Debian's 1.2 (/usr/bin/borg) and PyPI's 1.4 (a venv built once per session). The
  SERVER side, `borg serve` in the forced command, is always Debian's 1.2;
* rsync for the import and export modes (rrsync on the server);
* borgmatic from PyPI (same venv), configured from README's "Connecting clients" block.

Key sources: every row through AuthorizedKeysFile; the rows where the key source decides
who gets in and with what (1, 2, 7, 8, 9) also through the AuthorizedKeysCommand, run as
`nobody` from a venv of Debian's python3 (tests/hive_install.py), with Debian's borg. Rows
about sshd and the key lines (7, 8, 9) do not depend on the borg client and use Debian's;
rows 7 and 9 share one apply that revokes everything at once.
Needs root, sshd, borg, rsync, unshare; PyPI for the 1.4/borgmatic venv and the package
index for the keys-command install (each skipped with its reason when it cannot be built).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sshd_harness import (
    BASE_OPTIONS,
    REPO_ROOT,
    SHIPPED_COMMAND_SNIPPET,
    SHIPPED_SNIPPET,
    ClientKey,
    SshClient,
    SshdServer,
    describe,
    e2e_marks,
    free_port,
    generate_ed25519_key,
    missing_prerequisites,
    render_shipped,
    root_owned_test_root,
)

DEPLOY_SNIPPET, COMMAND_SNIPPET = SHIPPED_SNIPPET, SHIPPED_COMMAND_SNIPPET
SHIPPED_COMMAND = ("AuthorizedKeysCommand /opt/hive/bin/hive authorized-keys "
                   "--state-dir /var/lib/hive %u")
_MISSING = missing_prerequisites(("ssh", "ssh-keygen", "borg", "rsync", "rrsync"))

pytestmark = e2e_marks("access matrix", _MISSING)

Result = subprocess.CompletedProcess[str]
SHELL_PROBE = "echo HIVE_SHELL_$((6*7))"   # a shell would print 42; the text has no "42"
SHELL_PROOF = "HIVE_SHELL_42"
PYPI_CLIENTS = ("borgbackup==1.4.*", "borgmatic")


# --------------------------------------------------------------------------- borg clients


@dataclass(frozen=True)
class BorgClient:
    """One borg client program: its name in test ids, and the folder it is found in."""

    name: str
    bin_dir: Path | None   # None: the Debian package on PATH

    @property
    def suffix(self) -> str:
        return self.name.rsplit("-", 1)[1].replace(".", "")   # "12", "14"

    def env(self) -> dict[str, str]:
        if self.bin_dir is None:
            return {}
        return {"PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}


DEBIAN = BorgClient("debian-1.2", None)
VARIANT_NAMES = ("debian-1.2", "pypi-1.4")


@pytest.fixture(scope="session")
def pypi_clients() -> Iterator[Path | str]:
    """A venv with borg 1.4 and borgmatic from PyPI, built once per session under a temp
    dir and removed afterwards; a string (the reason) when it cannot be built. A borg 1.4
    given as HIVE_TEST_BORG14 (.ci/run builds one) is used when borgmatic is beside it."""
    given = Path(os.environ.get("HIVE_TEST_BORG14", "/nonexistent")).parent
    if (given / "borg").is_file() and (given / "borgmatic").is_file():
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="hive-pypi-clients-"))
    try:
        venv = folder / "venv"
        steps = [[sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                  *PYPI_CLIENTS]]
        for argv in steps:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=540)
            if result.returncode != 0:
                yield f"{' '.join(argv[:4])} failed: {result.stderr.strip()[-400:]}"
                return
        yield venv / "bin"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def borg_client(request: pytest.FixtureRequest) -> BorgClient:
    """The borg client of a test (parametrised in pytest_generate_tests)."""
    if request.param == DEBIAN.name:
        return DEBIAN
    found = request.getfixturevalue("pypi_clients")
    if isinstance(found, str):
        pytest.skip(f"borg 1.4 from PyPI not available: {found}")
    version = subprocess.run([str(found / "borg"), "--version"], capture_output=True,
                             text=True)
    assert version.stdout.startswith("borg 1.4"), version.stdout + version.stderr
    return BorgClient(request.param, found)


# --------------------------------------------------------------------------- the server


#: Repositories of hive.yaml; `{v}` is replaced by each borg client's suffix (12, 14).
PER_CLIENT = {
    "full{v}": {"keys": ["full"]},
    "other{v}": {"keys": ["other"]},
    "ao{v}": {"keys": ["full"], "append_only_keys": ["ao"]},
    # borg 1.2 serve refuses a --storage-quota below 10M (every login fails): 10M is the least.
    "quota{v}": {"keys": ["full"], "quota": "10M"},
    "imp{v}": {"mode": "import", "keys": ["full"]},
    "exp{v}": {"keys": ["full"]},           # borg first, then export
    "bm{v}": {"keys": ["full"]},            # borgmatic
}
SHARED = {
    "r8": {"keys": ["full"], "append_only_keys": ["ao"]},
    "r8in": {"mode": "import", "keys": ["full"]},
    "r8out": {"mode": "export", "keys": ["full"]},
    "disabled": {"keys": ["full"]},
    "removed": {"keys": ["full"]},
    "expiry": {"keys": ["expiring"]},
    "fromrepo": {"keys": ["fromkey"]},
    "r9": {"keys": ["leaving", "staying"]},
}
KEY_NAMES = ("full", "other", "ao", "expiring", "fromkey", "leaving", "staying")


@dataclass
class Matrix:
    """One deployment: hive.yaml (as a dict), its folders, keys and the running sshd."""

    root: Path
    keys: dict[str, ClientKey]
    config: dict[str, Any] = field(default_factory=dict)
    server: SshdServer | None = None
    source: str = "file"

    @property
    def config_path(self) -> Path:
        return self.root / "hive.yaml"

    @property
    def repos_root(self) -> Path:
        return self.root / "repos"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def repo_path(self, repo: str) -> Path:
        return self.repos_root / f"bh-{repo}" / repo

    def url(self, repo: str, path: Path | None = None) -> str:
        """The URL README's "Connecting clients" gives:
        ssh://bh-<repo>@<ssh_host>:<ssh_port>/<repos_root>/bh-<repo>/<repo>."""
        server = self.config["server"]
        return (f"ssh://bh-{repo}@{server['ssh_host']}:{server['ssh_port']}"
                f"{path or self.repo_path(repo)}")

    def client(self, key: str, borg: BorgClient = DEBIAN) -> Client:
        assert self.server is not None
        workdir = self.root / "clients" / f"{key}-{borg.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        return Client(SshClient(port=self.server.port, key=self.keys[key], workdir=workdir),
                      borg, self)

    def apply(self) -> Result:
        """Write hive.yaml and run `hive apply` on it, as an operator would."""
        self.config_path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        result = hive("apply", "-f", str(self.config_path))
        assert result.returncode == 0, "hive apply failed:\n" + describe(result)
        return result

    def expect_login_refused(self, repo: str, attempt: Callable[[], Result],
                             why: str | None = None) -> Result:
        """`attempt` fails, and sshd's log says why: by default that it refused the key
        for bh-<repo>; `why` names another line (e.g. a locked account)."""
        assert self.server is not None
        mark = self.server.log_mark()
        result = attempt()
        assert result.returncode != 0, describe(result, self.server)
        evidence = why or f"Failed publickey for bh-{repo} "
        assert self.server.wait_for_log(evidence, since=mark), describe(result, self.server)
        assert "Accepted publickey" not in self.server.log_since(mark), \
            describe(result, self.server)
        return result


@dataclass
class Client:
    """One key with one borg client program."""

    ssh: SshClient
    borg_client: BorgClient
    matrix: Matrix

    @property
    def workdir(self) -> Path:
        return self.ssh.workdir

    def borg(self, *args: str) -> Result:
        return self.ssh.borg(*args, env=self.borg_client.env())

    def ok(self, *args: str) -> Result:
        result = self.borg(*args)
        assert result.returncode == 0, describe(result, self.matrix.server)
        return result

    def archives(self, repo: str) -> list[str]:
        return self.ok("list", "--short", self.matrix.url(repo)).stdout.split()


def hive(*args: str) -> Result:
    return subprocess.run([sys.executable, "-m", "hive", *args], capture_output=True,
                          text=True, cwd=REPO_ROOT, timeout=120)


def hive_yaml(m: Matrix, port: int) -> dict[str, Any]:
    repositories: dict[str, Any] = {}
    for suffix in ("12", "14"):
        for name, settings in PER_CLIENT.items():
            repositories[name.format(v=suffix)] = {"owner": "alice", **settings}
    for name, settings in SHARED.items():
        repositories[name] = {"owner": "alice", **settings}
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    keys: dict[str, Any] = {name: {"owner": "alice", "public_key": m.keys[name].public_key}
                            for name in KEY_NAMES}
    keys["other"]["owner"] = "bob"
    repositories["other12"]["owner"] = repositories["other14"]["owner"] = "bob"
    keys["expiring"]["expires"] = tomorrow
    keys["fromkey"]["from"] = ["127.0.0.0/8"]
    return {
        "version": 1,
        "server": {
            "name": "matrix", "ssh_host": "127.0.0.1", "ssh_port": port,
            "repos_root": str(m.repos_root), "state_dir": str(m.state_dir),
            "users": {"prefix": "bh-", "uid_range": [21000, 21999], "shell": "/bin/sh"},
            "identity": {"backend": "files", "files_dir": str(m.root / "extrausers")},
        },
        "owners": {"alice": {}, "bob": {}},
        "keys": keys,
        "repositories": repositories,
    }


#: Rows where the key source decides something (who logs in, with which restrictions) run
#: with both; the others depend only on the key lines, the same bytes from either source.
BOTH_KEY_SOURCES = ("test_row1_", "test_row2_", "test_row7_", "test_row8_", "test_row9_")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise `matrix` by key source and `borg_client` by client: every row with both
    borg clients through AuthorizedKeysFile; the BOTH_KEY_SOURCES rows also through the
    AuthorizedKeysCommand (with Debian's borg: the client does not meet the key source)."""
    if "matrix" not in metafunc.fixturenames:
        return
    both = metafunc.function.__name__.startswith(BOTH_KEY_SOURCES)
    if "borg_client" in metafunc.fixturenames:
        combos = [("file", name) for name in VARIANT_NAMES]
        if both:
            combos.append(("command", DEBIAN.name))
        metafunc.parametrize(("matrix", "borg_client"), combos, indirect=True, scope="module",
                             ids=[f"{source}-{name}" for source, name in combos])
    else:
        metafunc.parametrize("matrix", ["file", "command"] if both else ["file"],
                             indirect=True, scope="module")


def _server(m: Matrix, request: pytest.FixtureRequest) -> SshdServer:
    """sshd with the shipped snippet for the key source, only paths swapped for the test's."""
    common = {"workdir": m.root / "sshd", "files_dir": m.root / "extrausers", "keys": None,
              "hardening": BASE_OPTIONS}
    if m.source == "file":
        snippet = render_shipped(
            DEPLOY_SNIPPET, [("/var/lib/hive/authorized_keys/", f"{m.state_dir}/authorized_keys/")],
            m.root / "sshd_config.d-hive.conf")
        return SshdServer(include=snippet, **common)
    install = request.getfixturevalue("hive_install")
    if isinstance(install, str):
        pytest.skip(f"cannot install Hive where nobody can reach it: {install}")
    snippet = render_shipped(
        COMMAND_SNIPPET, [(SHIPPED_COMMAND, f"AuthorizedKeysCommand {install.hive} "
                                            f"authorized-keys --state-dir {m.state_dir} %u")],
        m.root / "sshd_config.d-hive-keys-command.conf")
    return SshdServer(include=snippet, **common)


@pytest.fixture(scope="module")
def matrix(request: pytest.FixtureRequest) -> Iterator[Matrix]:
    """hive apply on a fresh root, then one sshd for every row (per key source)."""
    with root_owned_test_root(prefix="hive-matrix-") as root:
        keys = {name: generate_ed25519_key(root / "client-keys", name, f"{name}@matrix")
                for name in KEY_NAMES}
        m = Matrix(root=root, keys=keys, source=request.param)
        (root / "extrausers").mkdir(mode=0o755)
        with _server(m, request) as server:
            m.server = server
            m.config = hive_yaml(m, server.port)
            m.apply()
            yield m


# --------------------------------------------------------------------------- helpers


def _write_random(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def _segments(repo: Path) -> set[Path]:
    return {p for p in (repo / "data").rglob("*") if p.is_file()}


def _size(repo: Path) -> int:
    return sum(p.stat().st_size for p in _segments(repo))


# --------------------------------------------------------------------------- row 1


def test_row1_full_access_key_does_everything(matrix: Matrix, borg_client: BorgClient) -> None:
    """init, create, list, extract, prune and compact all work, and compact frees space."""
    repo = f"full{borg_client.suffix}"
    c = matrix.client("full", borg_client)
    url = matrix.url(repo)
    src = c.workdir / "src"
    _write_random(src / "only-in-a1.bin", 1_000_000)
    (src / "notes.txt").write_text("first\n")
    c.ok("init", "-e", "repokey", url)
    c.ok("create", f"{url}::a1", "src")
    (src / "only-in-a1.bin").unlink()
    (src / "notes.txt").write_text("second\n")
    c.ok("create", f"{url}::a2", "src")
    assert c.archives(repo) == ["a1", "a2"]
    out = c.workdir / "restore"
    out.mkdir()
    extracted = subprocess.run(  # extract writes to the current directory
        ["borg", "extract", f"{url}::a1"], cwd=out, capture_output=True, text=True,
        env=c.ssh._env(borg_client.env()), timeout=60)
    assert extracted.returncode == 0, describe(extracted, matrix.server)
    assert (out / "src" / "notes.txt").read_text() == "first\n"
    assert (out / "src" / "only-in-a1.bin").stat().st_size == 1_000_000
    before = _size(matrix.repo_path(repo))
    c.ok("prune", "--keep-last", "1", url)
    assert c.archives(repo) == ["a2"]
    c.ok("compact", url)
    after = _size(matrix.repo_path(repo))
    assert before - after > 900_000, f"compact freed only {before - after} bytes"


# --------------------------------------------------------------------------- row 2


def test_row2_key_is_refused_elsewhere(matrix: Matrix, borg_client: BorgClient) -> None:
    """The full key on another repository's user: refused by sshd. A path outside its own
    repository through its own user: refused by `borg serve --restrict-to-repository`."""
    v = borg_client.suffix
    c = matrix.client("full", borg_client)
    matrix.expect_login_refused(f"other{v}", lambda: c.borg("init", "-e", "repokey",
                                                             matrix.url(f"other{v}")))
    own = f"full{v}"
    for path in (matrix.repo_path(f"other{v}"), matrix.repos_root / f"bh-{own}" / "sibling",
                 matrix.repo_path(own) / "nested"):
        result = c.borg("init", "-e", "repokey", matrix.url(own, path))
        assert result.returncode != 0, describe(result, matrix.server)
        assert "Repository path not allowed" in result.stderr, describe(result, matrix.server)
        assert not (path / "config").exists()


# --------------------------------------------------------------------------- row 3


def _transactions(m: Matrix, repo: str) -> list[dict[str, Any]]:
    listed = hive("rollback", repo, "-f", str(m.config_path), "--list", "-o", "json")
    assert listed.returncode == 0, describe(listed)
    return [r for r in map(json.loads, listed.stdout.splitlines()) if r["type"] == "transaction"]


def test_row3_append_only_and_rollback(matrix: Matrix, borg_client: BorgClient) -> None:
    """The append-only key adds archives; its delete, prune and compact leave every segment;
    `hive rollback` brings the "deleted" archives back for the full-access key; the
    append-only client must drop its cache and security info (as README says) to go on."""
    repo = f"ao{borg_client.suffix}"
    path = matrix.repo_path(repo)
    url = matrix.url(repo)
    owner, ao = matrix.client("full", borg_client), matrix.client("ao", borg_client)
    owner.ok("init", "-e", "repokey", url)
    (ao.workdir / "src").mkdir(exist_ok=True)
    for name in ("a1", "a2", "a3"):
        _write_random(ao.workdir / "src" / f"{name}.bin", 200_000)
        ao.ok("create", f"{url}::{name}", "src")
    good = _transactions(matrix, repo)[-1]
    assert good["current"], good
    segments = _segments(path)
    ao.ok("delete", f"{url}::a1")
    ao.ok("prune", "--keep-last", "1", url)
    ao.ok("compact", url)
    assert ao.archives(repo) == ["a3"]
    assert segments <= _segments(path), "an append-only key removed segment files"

    # The plan first: nothing moves on a dry run.
    cfg = str(matrix.config_path)
    dry = hive("rollback", repo, "-f", cfg, "--to", str(good["id"]), "--dry-run")
    assert dry.returncode == 0, describe(dry)
    assert "Dry run: nothing was moved." in dry.stdout
    assert f"undo transaction {_transactions(matrix, repo)[-1]['id']}" in dry.stdout
    assert not list(path.parent.glob(f"{repo}.rollback-*"))
    done = hive("rollback", repo, "-f", cfg, "--to", str(good["id"]), "--confirm", repo)
    assert done.returncode == 0, describe(done)
    aside = list(path.parent.glob(f"{repo}.rollback-*-to-{good['id']}"))
    assert len(aside) == 1, done.stdout
    assert (aside[0] / "README.txt").exists()
    assert segments <= _segments(path) | {path / p.relative_to(aside[0])
                                          for p in _segments(aside[0])}, "nothing is lost"
    # The full-access key (its client never saw the deletions) lists them again.
    assert owner.archives(repo) == ["a1", "a2", "a3"]
    # The append-only key's client saw the newer state: borg refuses, as README says...
    stale = ao.borg("list", "--short", url)
    assert stale.returncode != 0, describe(stale, matrix.server)
    assert "newer than repository" in stale.stderr, describe(stale, matrix.server)
    # ...until it drops its cache and security info for this repository id (README).
    ident = next(line.split("=", 1)[1].strip() for line in
                 (path / "config").read_text().splitlines() if line.startswith("id ="))
    assert ident in done.stdout, "hive rollback names the repository id for the clients"
    base = ao.workdir / "borg-base"
    shutil.rmtree(base / ".cache" / "borg" / ident)
    shutil.rmtree(base / ".config" / "borg" / "security" / ident)
    assert ao.archives(repo) == ["a1", "a2", "a3"]
    ao.ok("create", f"{url}::a4", "src")
    assert owner.archives(repo) == ["a1", "a2", "a3", "a4"]
    history = hive("history", "-f", cfg, "-v")
    assert "repository rollback" in history.stdout, describe(history)


def test_row3_rollback_and_borg_keep_each_other_out(matrix: Matrix) -> None:
    """While Hive holds the repository's lock, a client is refused; while a client holds
    it, `hive rollback` refuses. The lock is borg's own, shared with `borg serve`."""
    from reconciler import rollback as rb

    repo, path = "r8", matrix.repo_path("r8")
    owner = matrix.client("full")
    url = matrix.url(repo)
    if not (path / "config").exists():
        owner.ok("init", "-e", "repokey", url)
    ao = matrix.client("ao")
    (ao.workdir / "src").mkdir(exist_ok=True)
    (ao.workdir / "src" / "f").write_text("x\n")
    ao.ok("create", f"{url}::one", "src")
    ao.ok("create", f"{url}::two", "src")
    first = _transactions(matrix, repo)[0]["id"]
    with rb.repository_lock(path):
        kept_out = owner.borg("list", "--lock-wait", "1", url)
        assert kept_out.returncode != 0, describe(kept_out, matrix.server)
        assert "Failed to create/acquire the lock" in kept_out.stderr, describe(kept_out)
    assert owner.archives(repo) == ["one", "two"]

    holder = subprocess.Popen(
        ["borg", "with-lock", url, "sleep", "60"], env=owner.ssh._env(), cwd=owner.workdir,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (path / "lock.exclusive").exists():
            assert holder.poll() is None, holder.stderr.read() if holder.stderr else ""
            assert time.monotonic() < deadline, "borg with-lock never took the lock"
            time.sleep(0.05)
        before = sorted(p.name for p in path.iterdir())
        refused = hive("rollback", repo, "-f", str(matrix.config_path), "--to", str(first),
                       "--confirm", repo, "--lock-wait", "0.5")
        assert refused.returncode == 1, describe(refused)
        assert "is locked by a borg client" in refused.stderr, describe(refused)
        assert sorted(p.name for p in path.iterdir()) == before
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)


# --------------------------------------------------------------------------- row 4


def test_row4_quota_stops_a_create_and_the_repository_stays_usable(
        matrix: Matrix, borg_client: BorgClient) -> None:
    repo = f"quota{borg_client.suffix}"
    c = matrix.client("full", borg_client)
    url = matrix.url(repo)
    c.ok("init", "-e", "repokey", url)
    _write_random(c.workdir / "big" / "random.bin", 12_000_000)
    over = c.borg("create", f"{url}::too-big", "big")
    assert over.returncode == 2, describe(over, matrix.server)
    assert "storage quota" in over.stderr.lower(), describe(over, matrix.server)
    assert "has been exceeded" in over.stderr, describe(over, matrix.server)
    assert c.archives(repo) == []
    c.ok("check", url)
    (c.workdir / "small").mkdir(exist_ok=True)
    (c.workdir / "small" / "note.txt").write_text("fits\n")
    c.ok("create", f"{url}::small", "small")
    assert c.archives(repo) == ["small"]
    assert _size(matrix.repo_path(repo)) < 10_000_000


# --------------------------------------------------------------------------- rows 5 and 6


def test_row5_import_by_rsync_then_borg(matrix: Matrix, borg_client: BorgClient) -> None:
    """An existing repository is pushed in with rsync (rrsync -wo), reading back is refused;
    after `mode: borg` and an apply, borg opens the imported repository."""
    repo = f"imp{borg_client.suffix}"
    c = matrix.client("full", borg_client)
    local = c.workdir / "local-repo"
    (c.workdir / "src").mkdir(exist_ok=True)
    (c.workdir / "src" / "f.txt").write_text("moved in\n")
    env = {**c.ssh._env(borg_client.env()), "BORG_RSH": ""}
    for args in (["init", "-e", "repokey", str(local)], ["create", f"{local}::before-move",
                                                         "src"]):
        made = subprocess.run(["borg", *args], cwd=c.workdir, env=env, capture_output=True,
                              text=True, timeout=60)
        assert made.returncode == 0, describe(made)
    user = f"bh-{repo}@127.0.0.1"
    pushed = c.ssh.rsync("-a", f"{local}/", f"{user}:")
    assert pushed.returncode == 0, describe(pushed, matrix.server)
    pulled = c.ssh.rsync("-a", f"{user}:", str(c.workdir / "pulled"))
    assert pulled.returncode != 0, describe(pulled, matrix.server)
    assert "reading from write-only server is not allowed" in pulled.stderr, describe(pulled)
    refused = c.borg("list", matrix.url(repo))
    assert refused.returncode != 0, "borg must not run while the mode is import"
    matrix.config["repositories"][repo]["mode"] = "borg"
    matrix.apply()
    assert c.archives(repo) == ["before-move"]
    owner = matrix.repo_path(repo).stat().st_uid
    assert {p.stat().st_uid for p in matrix.repo_path(repo).rglob("*")} == {owner}


def test_row6_export_by_rsync(matrix: Matrix, borg_client: BorgClient) -> None:
    """A borg repository switched to `mode: export`: rsync copies it out (rrsync -ro) and
    the copy opens locally; writing is refused."""
    repo = f"exp{borg_client.suffix}"
    c = matrix.client("full", borg_client)
    url = matrix.url(repo)
    (c.workdir / "src").mkdir(exist_ok=True)
    (c.workdir / "src" / "f.txt").write_text("moving out\n")
    c.ok("init", "-e", "repokey", url)
    c.ok("create", f"{url}::leaving", "src")
    matrix.config["repositories"][repo]["mode"] = "export"
    matrix.apply()
    user = f"bh-{repo}@127.0.0.1"
    copy = c.workdir / "exported"
    pulled = c.ssh.rsync("-a", f"{user}:", f"{copy}/")
    assert pulled.returncode == 0, describe(pulled, matrix.server)
    env = {**c.ssh._env(borg_client.env()), "BORG_RSH": ""}
    listed = subprocess.run(["borg", "list", "--short", str(copy)], cwd=c.workdir, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, describe(listed)
    assert listed.stdout.split() == ["leaving"]
    (c.workdir / "intruder").mkdir(exist_ok=True)
    (c.workdir / "intruder" / "data").write_text("x\n")
    pushed = c.ssh.rsync("-a", f"{c.workdir / 'intruder'}/", f"{user}:")
    assert pushed.returncode != 0, describe(pushed, matrix.server)
    assert "sending to read-only server is not allowed" in pushed.stderr, describe(pushed)
    assert not (matrix.repo_path(repo) / "data" / "data").exists()
    refused = c.borg("list", url)
    assert refused.returncode != 0, "borg must not run while the mode is export"


# --------------------------------------------------------------------------- row 8


ROW8_KEYS = [("r8", "full"), ("r8", "ao"), ("r8in", "full"), ("r8out", "full")]


@pytest.mark.parametrize(("repo", "key"), ROW8_KEYS, ids=[f"{r}-{k}" for r, k in ROW8_KEYS])
def test_row8_no_shell_pty_or_forwarding(matrix: Matrix, repo: str, key: str) -> None:
    """For every kind of key line (borg, borg --append-only, rrsync -wo, rrsync -ro)."""
    assert matrix.server is not None
    c = matrix.client(key).ssh
    user = f"bh-{repo}"
    shell = c.ssh(user, SHELL_PROBE)
    assert SHELL_PROOF not in shell.stdout + shell.stderr, describe(shell, matrix.server)
    assert shell.returncode != 0, describe(shell, matrix.server)
    pty = c.ssh(user, options=["-tt"], input=f"{SHELL_PROBE}\nexit\n")
    assert SHELL_PROOF not in pty.stdout + pty.stderr, describe(pty, matrix.server)
    assert "PTY allocation request failed" in pty.stderr, describe(pty, matrix.server)
    # Local forwarding: -W opens a direct-tcpip channel at once (to this very sshd).
    mark = matrix.server.log_mark()
    local = c.ssh(user, options=["-W", f"127.0.0.1:{matrix.server.port}"])
    assert local.returncode == 255, describe(local, matrix.server)
    assert "stdio forwarding failed" in local.stderr, describe(local, matrix.server)
    assert matrix.server.wait_for_log("refused local port forward", since=mark), \
        describe(local, matrix.server)
    remote = c.ssh(user, options=["-N", "-o", "ExitOnForwardFailure=yes",
                                  "-R", f"127.0.0.1:{free_port()}:127.0.0.1:9"])
    assert remote.returncode == 255, describe(remote, matrix.server)
    assert "remote port forwarding failed" in remote.stderr, describe(remote, matrix.server)
    with _agent(c.workdir) as sock:
        mark = matrix.server.log_mark()
        argv = [*c.ssh_argv(), "-p", str(matrix.server.port), "-A", f"{user}@127.0.0.1"]
        env = {**c._env(), "SSH_AUTH_SOCK": sock}
        subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=60)
        assert matrix.server.wait_for_log("agent forwarding disabled", since=mark), \
            matrix.server.log_since(mark)


@contextlib.contextmanager
def _agent(folder: Path) -> Iterator[str]:
    """A real ssh-agent in the foreground on a private socket; ended by its pid."""
    sock = folder / "agent.sock"
    with contextlib.suppress(FileNotFoundError):
        sock.unlink()
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert agent.poll() is None and time.monotonic() < deadline, "no ssh-agent"
            time.sleep(0.02)
        yield str(sock)
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        with contextlib.suppress(FileNotFoundError):
            sock.unlink()


# --------------------------------------------------------------------------- rows 7 and 9


@pytest.fixture(scope="module")
def revoked(matrix: Matrix) -> Matrix:
    """Every access rows 7 and 9 take away works first; then ONE apply takes it away:
    a repository disabled, one removed, a key expired, a key's from= moved to 10.0.0.0/8,
    a key removed from the file."""
    full, staying = matrix.client("full"), matrix.client("staying")
    for repo, client in (("disabled", full), ("removed", full),
                         ("expiry", matrix.client("expiring")),
                         ("fromrepo", matrix.client("fromkey")), ("r9", staying)):
        client.ok("init", "-e", "repokey", matrix.url(repo))
    assert matrix.client("leaving").archives("r9") == []
    repos, keys = matrix.config["repositories"], matrix.config["keys"]
    repos["disabled"]["mode"] = "disabled"
    del repos["removed"]
    keys["expiring"]["expires"] = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    keys["fromkey"]["from"] = ["10.0.0.0/8"]
    repos["r9"]["keys"] = ["staying"]
    del keys["leaving"]
    result = matrix.apply()
    assert "expired" in result.stdout + result.stderr, result.stdout
    return matrix


ROW7 = [("disabled", "full", None),
        # Hive locks a removed repository's account: sshd refuses before looking at keys.
        ("removed", "full", "User bh-removed not allowed because account is locked"),
        ("expiry", "expiring", None),
        ("fromrepo", "fromkey", "with correct key but not from a permitted host")]


@pytest.mark.parametrize(("repo", "key", "why"), ROW7, ids=[r[0] for r in ROW7])
def test_row7_refused_after_the_next_apply(revoked: Matrix, repo: str, key: str,
                                           why: str | None) -> None:
    c = revoked.client(key)
    revoked.expect_login_refused(repo, lambda: c.borg("list", revoked.url(repo)), why)
    assert (revoked.repo_path(repo) / "config").exists(), "access went, the data stays"


def test_row9_removed_key_refused_others_keep_working(revoked: Matrix) -> None:
    leaving, staying = revoked.client("leaving"), revoked.client("staying")
    revoked.expect_login_refused("r9", lambda: leaving.borg("list", revoked.url("r9")))
    assert staying.archives("r9") == []


# --------------------------------------------------------------------------- row 10


README = REPO_ROOT / "README.md"
BORGMATIC_MARKER = "# /etc/borgmatic/config.yaml"


def readme_borgmatic_config() -> dict[str, Any]:
    """The borgmatic configuration README's "Connecting clients" tells a client to use."""
    text = README.read_text()
    start = text.index("```yaml\n" + BORGMATIC_MARKER)
    block = text[start:].split("\n", 1)[1].split("```", 1)[0]
    loaded = yaml.safe_load(block)
    assert isinstance(loaded, dict)
    return loaded


def test_row10_borgmatic_through_hive(matrix: Matrix, borg_client: BorgClient,
                                      pypi_clients: Path | str) -> None:
    """borgmatic (PyPI) with README's configuration, only the values of this test server put
    in: repository creation, create, then a plain `borgmatic` (create, prune, compact,
    check) and list, all through Hive's forced `borg serve`."""
    if isinstance(pypi_clients, str):
        pytest.skip(f"borgmatic from PyPI not available: {pypi_clients}")
    repo = f"bm{borg_client.suffix}"
    c = matrix.client("full", borg_client)
    source = c.workdir / "documents"
    source.mkdir(exist_ok=True)
    (source / "letter.txt").write_text("dear Hive\n")
    settings = readme_borgmatic_config()
    example_url = settings["repositories"][0]["path"]
    assert example_url.startswith("ssh://bh-alice-laptop@backup.example.org:22/srv/hive/repos/")
    settings["repositories"][0]["path"] = matrix.url(repo)
    settings["source_directories"] = [str(source)]
    settings["ssh_command"] = " ".join(c.ssh.ssh_argv())  # the README's `ssh -i KEY`, + test
    passphrase = c.workdir / "hive-passphrase"               # options (no known_hosts)
    passphrase.write_text(c.ssh.passphrase + "\n")
    settings["encryption_passcommand"] = f"cat {passphrase}"
    # Test-only: the borg under test, a private base dir, and a retention that has
    # something to prune within seconds (README's keeps one archive per day).
    settings["local_path"] = str(borg_client.bin_dir / "borg") if borg_client.bin_dir \
        else "/usr/bin/borg"
    settings["borg_base_directory"] = str(c.workdir / "bm-base")
    for key in [k for k in settings if k.startswith("keep_")]:
        del settings[key]
    settings["keep_secondly"] = 1
    config = c.workdir / "borgmatic.yaml"
    config.write_text(yaml.safe_dump(settings, sort_keys=False))
    home = c.workdir / "home"
    (home / "run").mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BORG_", "SSH_AUTH"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(home / "run"),
               XDG_STATE_HOME=str(home / "state"), XDG_CACHE_HOME=str(home / "cache"))
    program = str(pypi_clients / "borgmatic")

    def borgmatic(*args: str) -> Result:
        result = subprocess.run([program, *args, "-c", str(config)], env=env, cwd=c.workdir,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, describe(result, matrix.server)
        return result

    borgmatic("config", "validate")
    creation = "repo-create" if subprocess.run(
        [program, "repo-create", "--help"], capture_output=True, env=env).returncode == 0 \
        else "init"
    borgmatic(creation, "--encryption", "repokey-blake2")
    assert (matrix.repo_path(repo) / "config").exists()
    borgmatic("create")
    assert len(c.archives(repo)) == 1
    (source / "letter.txt").write_text("dear Hive, again\n")
    # No action named: what a timer runs, create, prune, compact and check in one go.
    ran = borgmatic("--verbosity", "1")
    for step in ("Creating archive", "Pruning archives", "Compacting segments",
                 "Running consistency checks", "Finished full repository check"):
        assert step in ran.stdout + ran.stderr, ran.stdout + ran.stderr
    assert len(c.archives(repo)) == 1   # the first archive was pruned (keep_secondly: 1)
    listed = borgmatic("list")
    assert f"{os.uname().nodename}-" in listed.stdout + listed.stderr, listed.stdout


def test_host_is_untouched() -> None:
    """Runs last: no bind mount leaked into the host's namespace."""
    mounts = Path("/proc/self/mountinfo").read_text()
    assert "/etc/nsswitch.conf" not in mounts
    assert "/var/lib/extrausers" not in mounts
