"""End to end: how far a key of hive.yaml reaches, tried the way an attacker would.

One `hive apply`, the real sshd reading the shipped deploy/sshd/hive.conf, Debian's borg
1.2 as `borg serve`, rsync/rrsync. Each test takes a client that holds one key and tries
to go past what hive.yaml gives it: another repository through its own forced command (a
sibling path, `..`, a symlink planted inside its repository, a longer name with the same
start), a folder outside its repository through rrsync, and sshd's own files. Where a key
does reach further than hive.yaml says, the test shows it and README states the limit.
Needs root, sshd, borg, rsync, rrsync and unshare.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from sshd_harness import (
    BASE_OPTIONS,
    REPO_ROOT,
    SHIPPED_SNIPPET,
    ClientKey,
    SshClient,
    SshdServer,
    describe,
    e2e_marks,
    generate_ed25519_key,
    missing_prerequisites,
    render_shipped,
    root_owned_test_root,
)

_MISSING = missing_prerequisites(("ssh", "ssh-keygen", "borg", "rsync", "rrsync"))
pytestmark = e2e_marks("key reach", _MISSING)

Result = subprocess.CompletedProcess[str]
#: Debian's python3, which has Debian's borg package (the client API this test drives).
SYSTEM_PYTHON = "/usr/bin/python3"
KEY_NAMES = ("full", "ao", "other")
REPOSITORIES: dict[str, dict[str, Any]] = {
    "a": {"owner": "alice", "keys": ["full"], "append_only_keys": ["ao"]},
    # Its user bh-ab and folder start with those of "a": a prefix check would let "a" in.
    "ab": {"owner": "bob", "keys": ["other"]},
    "imp": {"owner": "alice", "mode": "import", "keys": ["full"]},
    "imp2": {"owner": "alice", "mode": "import", "keys": ["full"]},
}

#: A client that talks borg's RPC itself, as a compromised machine can: it opens the
#: repository through BORG_RSH (the append-only key's forced command) and calls save_key,
#: which `borg key change-passphrase` and `borg key import` also call.
SAVE_KEY = """
import argparse, sys
from borg.logger import setup_logging
setup_logging()
from borg.helpers import Location
from borg.remote import RemoteRepository
args = argparse.Namespace(remote_path=None, umask=0o077, rsh=None, debug_topics=[],
                          lock_wait=5, log_level="warning", upload_ratelimit=0,
                          upload_buffer=0)
with RemoteRepository(Location(sys.argv[1]), args=args) as repository:
    repository.save_key(b"gone")
print("saved")
"""


@dataclass
class Reach:
    root: Path
    keys: dict[str, ClientKey]
    server: SshdServer | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def repos_root(self) -> Path:
        return self.root / "repos"

    def repo_path(self, repo: str) -> Path:
        return self.repos_root / f"bh-{repo}" / repo

    def url(self, repo: str, path: Path | str | None = None) -> str:
        assert self.server is not None
        return f"ssh://bh-{repo}@127.0.0.1:{self.server.port}{path or self.repo_path(repo)}"

    def client(self, key: str) -> SshClient:
        assert self.server is not None
        workdir = self.root / "clients" / key
        workdir.mkdir(parents=True, exist_ok=True)
        return SshClient(port=self.server.port, key=self.keys[key], workdir=workdir)

    def apply(self) -> None:
        path = self.root / "hive.yaml"
        path.write_text(yaml.safe_dump(self.config, sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "hive", "apply", "-f", str(path)],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
        assert done.returncode == 0, describe(done)


@pytest.fixture(scope="module")
def reach() -> Iterator[Reach]:
    with root_owned_test_root(prefix="hive-reach-") as root:
        keys = {name: generate_ed25519_key(root / "client-keys", name) for name in KEY_NAMES}
        r = Reach(root=root, keys=keys)
        (root / "extrausers").mkdir(mode=0o755)
        state = root / "state"
        snippet = render_shipped(
            SHIPPED_SNIPPET, [("/var/lib/hive/authorized_keys/", f"{state}/authorized_keys/")],
            root / "sshd_config.d-hive.conf")
        with SshdServer(include=snippet, workdir=root / "sshd", files_dir=root / "extrausers",
                        keys=None, hardening=BASE_OPTIONS) as server:
            r.server = server
            key_owner = {"full": "alice", "ao": "alice", "other": "bob"}
            r.config = {
                "version": 1,
                "server": {
                    "name": "reach", "ssh_host": "127.0.0.1", "ssh_port": server.port,
                    "repos_root": str(r.repos_root), "state_dir": str(state),
                    "users": {"prefix": "bh-", "uid_range": [22000, 22999], "shell": "/bin/sh"},
                    "identity": {"backend": "files", "files_dir": str(root / "extrausers")},
                },
                "owners": {"alice": {}, "bob": {}},
                "keys": {n: {"owner": key_owner[n], "public_key": keys[n].public_key}
                         for n in KEY_NAMES},
                "repositories": REPOSITORIES,
            }
            r.apply()
            yield r


def _ok(result: Result, server: SshdServer | None) -> Result:
    assert result.returncode == 0, describe(result, server)
    return result


@pytest.fixture(scope="module")
def initialised(reach: Reach) -> Reach:
    """Repositories a and ab made by their full keys, one archive each."""
    for repo, key in (("a", "full"), ("ab", "other")):
        c = reach.client(key)
        (c.workdir / "src").mkdir(exist_ok=True)
        (c.workdir / "src" / "f.txt").write_text(f"{repo}\n")
        _ok(c.borg("init", "-e", "repokey", reach.url(repo)), reach.server)
        _ok(c.borg("create", f"{reach.url(repo)}::first", "src"), reach.server)
    return reach


def test_borg_key_opens_no_other_folder(initialised: Reach) -> None:
    """`--restrict-to-repository` compares real paths in full: a sibling with the same
    start, `..`, `/./`, a trailing slash of another folder and a symlink planted in the
    repository (as an import could leave one) are all refused before any file is read."""
    r = initialised
    a, ab = r.repo_path("a"), r.repo_path("ab")
    planted = a / "elsewhere"
    os.symlink(ab, planted)             # as rsync -wo can leave it (mode import before)
    try:
        c = r.client("full")
        for path in (f"{a}b", f"{a}/../../bh-ab/ab", f"{a}/../a2", f"{a}/./..",
                     f"{r.repos_root}/bh-a", f"{ab}/", str(planted), "/~bh-ab/ab"):
            listed = c.borg("list", r.url("a", path))
            assert listed.returncode != 0, describe(listed, r.server)
            assert "Repository path not allowed" in listed.stderr, describe(listed, r.server)
        # Its own repository through a trailing slash or `/./` is the same real path: fine.
        for path in (f"{a}/", f"{a}/./"):
            assert "first" in _ok(c.borg("list", r.url("a", path)), r.server).stdout
    finally:
        planted.unlink()


def test_append_only_key_can_replace_the_repokey_and_hive_keeps_it(
        initialised: Reach) -> None:
    """A limit of borg 1.2 (README, "What the server enforces"): `borg serve --append-only`
    still serves save_key, so an append-only key overwrites the repokey in the
    repository's config (borg even erases config.old), and without it no archive can be
    read. `hive stats` keeps every key it has seen out of the clients' reach: it reports
    the change, and the owner's full key puts the kept one back with `borg key import`."""
    r = initialised
    config = r.root / "hive.yaml"

    def stats() -> Result:
        return _ok(subprocess.run([sys.executable, "-m", "hive", "stats", "a", "-f",
                                   str(config)], capture_output=True, text=True,
                                  cwd=REPO_ROOT, timeout=120), r.server)

    assert "changed" not in stats().stderr
    ao = r.client("ao")
    script = ao.workdir / "save_key.py"
    script.write_text(SAVE_KEY)
    before = (r.repo_path("a") / "config").read_text()
    attack = ao._run([SYSTEM_PYTHON, str(script), r.url("a")])
    assert attack.returncode == 0 and "saved" in attack.stdout, describe(attack, r.server)
    after = (r.repo_path("a") / "config").read_text()
    assert "key = gone" in after and after != before
    assert not (r.repo_path("a") / "config.old").exists()
    full = r.client("full")
    assert full.borg("list", r.url("a")).returncode != 0
    assert "the key in the config of repository a changed" in stats().stderr
    kept_copies = sorted((r.root / "state" / "repokeys" / "a").glob("*.key"))
    assert len(kept_copies) == 2   # the owner's key, and what the client wrote
    [kept] = [p for p in kept_copies if not p.read_text().endswith("\ngone\n")]
    copy = full.workdir / "kept.key"   # what the sysadmin hands the owner
    copy.write_text(kept.read_text())
    _ok(full.borg("key", "import", r.url("a"), str(copy)), r.server)
    assert "first" in _ok(full.borg("list", r.url("a")), r.server).stdout


def test_import_key_stays_in_its_folder(reach: Reach) -> None:
    """rrsync -wo -munge: a symlink the client uploads is stored munged, and the next
    upload through its name replaces it instead of writing where it points; a remote
    --files-from and -K (keep-dirlinks) are refused; a `.ssh/authorized_keys` uploaded
    into the repository is not read by sshd (the user's home is the root-owned parent,
    and hive.conf names the only key file)."""
    c = reach.client("full")
    outside = reach.root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "victim").write_text("keep\n")
    os.chmod(outside, 0o777)            # even a folder the repository user may write
    src = c.workdir / "plant"
    (src / ".ssh").mkdir(parents=True, exist_ok=True)
    (src / "link").unlink(missing_ok=True)
    os.symlink(outside, src / "link")
    # An unrestricted line for a key hive.yaml does not give bh-imp: a shell, if sshd read it.
    (src / ".ssh" / "authorized_keys").write_text(reach.keys["other"].public_key + "\n")
    dest = "bh-imp@127.0.0.1:"
    _ok(c.rsync("-a", f"{src}/", dest), reach.server)
    repo = reach.repo_path("imp")
    assert os.readlink(repo / "link") == f"/rsyncd-munged/{outside}"   # rrsync -munge
    through = c.workdir / "through"
    (through / "link").mkdir(parents=True, exist_ok=True)
    (through / "link" / "victim").write_text("overwritten\n")
    (through / "link" / "new").write_text("new\n")
    for args in (["-a", f"{through}/", dest], ["-a", f"{through}/link/", f"{dest}link/"],
                 ["-a", "--delete", f"{through}/link/", f"{dest}link"]):
        c.rsync(*args)                  # fails or lands inside the repository; never outside
        assert sorted(p.name for p in outside.iterdir()) == ["victim"]
        assert (outside / "victim").read_text() == "keep\n"
    for args, why in ((["-aK", f"{through}/", dest], "option -K has been disabled"),
                      (["-a", "--files-from=:/etc/passwd", ".", dest],
                       "cannot read a remote --files-from")):
        refused = c.rsync(*args)
        assert refused.returncode != 0 and why in refused.stderr, describe(refused, reach.server)
    home = repo.parent
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (0, 0o750)
    assert not (home / ".ssh").exists()
    assert (repo / ".ssh" / "authorized_keys").exists()
    assert reach.server is not None
    mark = reach.server.log_mark()
    shell = reach.client("other").ssh("bh-imp", "echo", "HIVE_SHELL_$((6*7))")
    assert shell.returncode != 0 and "HIVE_SHELL_42" not in shell.stdout, describe(shell)
    assert reach.server.wait_for_log("Failed publickey for bh-imp ", since=mark), \
        describe(shell, reach.server)


def test_export_after_import_does_not_follow_planted_links(reach: Reach) -> None:
    """The folder moved in holds a symlink to /etc; after `mode: export` rrsync -ro sends
    the link as a link, and a path, list or trailing slash through it is refused."""
    repo = reach.repo_path("imp")
    (repo / "etc").unlink(missing_ok=True)
    c = reach.client("full")
    src = c.workdir / "etclink"
    src.mkdir(exist_ok=True)
    (src / "etc").unlink(missing_ok=True)
    os.symlink("/etc", src / "etc")
    _ok(c.rsync("-a", f"{src}/", "bh-imp@127.0.0.1:"), reach.server)
    reach.config["repositories"]["imp"]["mode"] = "export"
    reach.apply()
    try:
        user = "bh-imp@127.0.0.1:"
        copy = c.workdir / "copy"
        _ok(c.rsync("-a", user, f"{copy}/"), reach.server)
        assert (copy / "etc").is_symlink() and not (copy / "hostname").exists()
        listing = c.workdir / "list"
        listing.write_text("etc/hostname\n")
        for args in (["-a", f"{user}etc/", f"{c.workdir / 'e1'}/"],
                     ["-a", f"{user}etc/hostname", f"{c.workdir / 'e2'}"],
                     ["-a", f"--files-from={listing}", user, f"{c.workdir / 'e3'}/"],
                     ["-aL", user, f"{c.workdir / 'e4'}/"],
                     ["-a", "--copy-unsafe-links", user, f"{c.workdir / 'e5'}/"]):
            got = c.rsync(*args)
            leaked = [p for p in c.workdir.glob("e*/**/*") if p.name == "hostname"
                      and p.is_file() and not p.is_symlink()]
            assert not leaked, describe(got, reach.server)
            assert got.returncode != 0, describe(got, reach.server)
    finally:
        reach.config["repositories"]["imp"]["mode"] = "import"
        reach.apply()


def test_import_cannot_point_the_repository_outside(reach: Reach) -> None:
    """A repository moved in whose `data` is a symlink to a folder its user may write
    (here a 0777 one, as /tmp or /dev/shm are): once `mode: borg`, borg serve would write
    the segments there, outside repos_root, where quota alerts, `hive stats` (which never
    follows a `data` symlink) and `hive purge` do not look. rrsync -munge stores uploaded
    links munged, so the link leads nowhere and borg fails instead."""
    c = reach.client("full")
    outside = reach.root / "shm"
    local = c.workdir / "moving"
    env = {**c._env(), "BORG_RSH": ""}
    made = subprocess.run(["borg", "init", "-e", "repokey", str(local)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, describe(made)
    outside.mkdir(mode=0o777)
    os.chmod(outside, 0o777)
    (local / "data").rename(outside / "data")
    for folder in (outside / "data", *(outside / "data").rglob("*")):
        os.chmod(folder, 0o777 if folder.is_dir() else 0o666)
    os.symlink(outside / "data", local / "data")
    _ok(c.rsync("-a", f"{local}/", "bh-imp2@127.0.0.1:"), reach.server)
    reach.config["repositories"]["imp2"]["mode"] = "borg"
    reach.apply()
    before = sorted(p.name for p in (outside / "data").rglob("*"))
    (c.workdir / "src").mkdir(exist_ok=True)
    (c.workdir / "src" / "f.txt").write_text("where does it go?\n")
    created = c.borg("create", f"{reach.url('imp2')}::outside", "src")
    assert sorted(p.name for p in (outside / "data").rglob("*")) == before, \
        "borg serve wrote segments outside the repository: " + describe(created)
    assert created.returncode != 0, describe(created, reach.server)
